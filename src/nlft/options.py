"""Command-line flags from options dataclasses: every option of a command is written once, as a dataclass field
whose metadata holds its help, choices and argparse type; the CLI generates the flags from the fields and reads
the parsed values back into the dataclass. (``nlft train`` does the same through trl's parser.)

    @dataclass
    class DemoOptions:
        epochs: int = opt(3, help="epochs of each method", type=POSITIVE)

    add_options(parser, DemoOptions)          # --epochs EPOCHS (default 3)
    options = from_args(DemoOptions, args)    # DemoOptions(epochs=...)

A field's metadata may say: ``help``; ``type`` (an argparse type: the checks below name the valid range);
``choices``; ``nargs``; ``metavar``; ``flag`` (the flag's name when it is not the field's); ``positional``;
``negate`` (a bool that defaults to True: the flag that turns it off, e.g. ``no_progress``); ``group`` (the
help section); ``cli=False`` (not a flag). List and tuple fields take several values.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any


def opt(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING, **meta):
    """A dataclass field that is also a command-line option (see the module docstring for ``meta``)."""
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={"help": help, **meta}
    )


# ---- argparse types whose errors say what is allowed ------------------------------------------------------------


def number(kind, low=None, high=None, *, low_open: bool = False, what: str = "") -> Callable[[str], Any]:
    """An argparse type: a ``kind`` (int or float) within [low, high] (``low_open``: above low), finite."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a {'whole ' if kind is int else ''}number: {text!r}"
            ) from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
        return value

    convert.__name__ = "whole number" if kind is int else "number"
    return convert


POSITIVE = number(int, 1, what="at least 1")
NON_NEGATIVE = number(int, 0, what="0 or more")
SECONDS = number(float, 0.0, low_open=True, what="more than 0 seconds")
TEMPERATURE = number(float, 0.0, what="0 or more")
TOP_P = number(float, 0.0, 1.0, low_open=True, what="in (0, 1]")
RATE = number(float, 0.0, low_open=True, what="more than 0")
PORT = number(int, 0, 65535, what="a port number from 0 to 65535")


def json_object(text: str) -> dict:
    """An argparse type: a JSON object."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"do_sample\": true}'")
    return value


# ---- dataclass -> flags -> dataclass ----------------------------------------------------------------------------


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _kind(annotation: Any) -> tuple[type, bool]:
    """(element type, several values?) of a field from its annotation (a string under postponed evaluation)."""
    text = str(annotation).replace(" ", "")
    several = text.startswith(("list[", "tuple[")) or "|list[" in text or "|tuple[" in text
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text in (name, f"{name}|None") or (several and f"[{name}" in text):
            return kind, several
    return str, several


def _fields(cls, skip: Iterable[str]) -> list[dataclasses.Field]:
    return [
        f
        for f in dataclasses.fields(cls)
        if f.metadata.get("cli", "help" in f.metadata) and f.name not in skip
    ]


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def add_options(
    parser: argparse.ArgumentParser,
    cls,
    *,
    scope: str = "",
    prefix: str = "",
    skip: Iterable[str] = (),
    flags: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
    unset: bool = False,
    group: str | None = None,
) -> None:
    """Add a flag for every option field of ``cls``. ``scope`` keeps two copies of one dataclass apart in the
    parsed namespace; ``prefix`` goes before their flag names (``judge_`` -> ``--judge-model``); ``flags`` renames
    fields' flags for this command; ``defaults`` replaces field defaults for it. ``unset``: every flag defaults to
    None (not given), so that values from elsewhere (a config file) apply first; the help shows the field's
    default. ``group`` is the help section of fields that name none."""
    sections: dict[str, Any] = parser.__dict__.setdefault("_nlft_sections", {})
    for f in _fields(cls, skip):
        md = f.metadata
        dest = scope + f.name
        default = (defaults or {}).get(f.name, _default(f))
        title = md.get("group", group)
        target = parser
        if title:
            if title not in sections:
                sections[title] = parser.add_argument_group(title)
            target = sections[title]
        help_text = md["help"]
        if unset and default not in (None, False, dataclasses.MISSING, [], ()):
            help_text += f" (default: {_shown(default)})"
        kind, several = _kind(f.type)
        if md.get("positional"):
            extra: dict[str, Any] = {"nargs": md.get("nargs")}
            if md.get("choices") is not None:
                extra["choices"] = list(md["choices"])
            else:
                extra["metavar"] = md.get("metavar", f.name.upper())
            if md.get("nargs") == "?":
                extra["default"] = default
            target.add_argument(dest, help=help_text, **extra)
            continue
        name = (flags or {}).get(f.name) or md.get("flag") or f.name
        if kind is bool and md.get("negate"):
            flag = "--" + (prefix + md["negate"]).replace("_", "-")
            target.add_argument(flag, dest=dest, action="store_false", default=None if unset else default,
                                help=help_text)  # fmt: skip
            continue
        flag = "--" + (prefix + name).replace("_", "-")
        if kind is bool:
            target.add_argument(flag, dest=dest, action="store_true", default=None if unset else default,
                                help=help_text)  # fmt: skip
            continue
        kwargs: dict[str, Any] = {"dest": dest, "help": help_text, "type": md.get("type", kind)}
        if md.get("choices") is not None:
            kwargs["choices"] = list(md["choices"])
        if md.get("nargs") or several:
            kwargs["nargs"] = md.get("nargs", "+")
        if md.get("metavar") or md.get("choices") is None:
            kwargs["metavar"] = md.get("metavar", name.upper())
        if default is dataclasses.MISSING:
            kwargs["required"] = not unset
            default = None
        target.add_argument(flag, default=None if unset else default, **kwargs)


def values(
    cls, args: argparse.Namespace, *, scope: str = "", skip: Iterable[str] = (), unset: bool = False
) -> dict:
    """The option fields of ``cls`` as parsed (``unset``: only those given)."""
    out = {}
    for f in _fields(cls, skip):
        value = getattr(args, scope + f.name)
        if unset and value is None:
            continue
        if isinstance(value, list) and str(f.type).replace(" ", "").startswith("tuple["):
            value = tuple(value)
        out[f.name] = value
    return out


def from_args(cls, args: argparse.Namespace, *, scope: str = "", skip: Iterable[str] = (), **extra):
    """``cls`` built from its parsed options, plus ``extra`` fields given by the caller."""
    return cls(**values(cls, args, scope=scope, skip=skip), **extra)
