"""What a command prints besides its results: logging set-up for the ``nlft`` commands, and text from data made
safe for a terminal."""

from __future__ import annotations

import logging
import re
import warnings

# What a terminal acts on rather than shows: C0/C1 controls (escape sequences, bell, carriage return, NUL) and the
# bidirectional overrides that reorder what is displayed. Newlines and tabs are layout and stay.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape (``\\x1b``, ``\\u202e``): ids,
    questions and judgments from a downloaded dataset cannot clear the screen, set the title or forge output."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text
    )


class EscapingStream:
    """A text stream that writes through ``printable`` (everything else is the wrapped stream's)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(printable(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _EscapingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def setup_logging(level: int = logging.INFO) -> None:
    """nlft's own messages at ``level`` (INFO by default), everyone else's warnings only."""
    # PEFT reads a property transformers 5 deprecated; the warning is theirs and says nothing to our users.
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*deprecated", category=FutureWarning
    )
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("nlft").setLevel(level)
    quiet_deepspeed()


def quiet_deepspeed() -> None:
    """Where DeepSpeed is installed on a machine without CUDA, tell it so before anything imports it: otherwise
    every command that loads transformers' trainer prints DeepSpeed's accelerator-detection warning."""
    import importlib.util
    import os

    if "DS_ACCELERATOR" in os.environ or importlib.util.find_spec("deepspeed") is None:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
