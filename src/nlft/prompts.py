"""The three conditioning prompts and the token sequences NLFT scores (docs/method.md section 2).

Every record is scored under ``base`` (the plain question; the only sequence that trains), ``std`` (question +
standard answer) and, for wrong responses, ``judge`` (question + judgment). The response is tokenized **once**
and the same ids are appended after each prompt, because tokenizing prompt and response together can merge
tokens across the boundary and give the three sequences different targets.

Prompts are rendered with the tokenizer's chat template (system + user message, generation prompt added).
A tokenizer without one gets the documented plain format ``PLAIN_FORMAT`` (or a chat template you name).
Text from data is never allowed to become a control token: chat templates are applied with
``sanitize_control_tokens`` and responses are tokenized with ``split_special_tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from . import resource_path
from .files import read_text, read_yaml
from .records import Problem, Record, RecordError

PROMPT_KINDS = ("base", "std", "judge")
BUILTIN_TEMPLATE_SETS = ("math", "generic")
BUILTIN_CHAT_TEMPLATES = ("llama3",)
# Used when the tokenizer has no chat template and none is named: parts trimmed, a blank system part left out.
PLAIN_FORMAT = "{system}\n\n{user}\n\n### Response:\n"
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(\w+)\}")  # {{ and }} are literal braces; {name} a placeholder


def _resource_text(*parts: str) -> str:
    return resource_path(*parts).read_text(encoding="utf-8")


def chat_messages(system: str, user: str) -> list[dict[str, str]]:
    """A system message (left out when blank) and a user message: how every prompt nlft asks is laid out."""
    head = [{"role": "system", "content": system}] if system.strip() else []
    return [*head, {"role": "user", "content": user}]


# What a template may name. Any other {word} in a template is refused as a typo ({refrence}, {judgement}), which
# would otherwise reach the model as it is written.
PLACEHOLDERS = ("system", "question", "reference", "judgment")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``{name}`` for the names in ``values`` in one pass (``{{`` and ``}}`` give literal braces);
    other braces stay as they are."""

    def one(m: re.Match) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        return values.get(m.group(1), m.group(0))

    return _PLACEHOLDER.sub(one, template)


@dataclass(frozen=True)
class PromptPair:
    system: str
    user: str


@dataclass(frozen=True)
class TemplateSet:
    """The wording of the three prompts for one domain, plus the default system prompt."""

    name: str
    system: str
    base: PromptPair
    std: PromptPair
    judge: PromptPair
    description: str = ""
    # Layout for tokenizers without a chat template ({system}, {user}); a blank system part is left out.
    plain: str = PLAIN_FORMAT

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> TemplateSet:
        def need(mapping: Any, key: str, where: str) -> Any:
            if not isinstance(mapping, Mapping) or key not in mapping:
                raise ValueError(f"{source}: template set is missing '{where}{key}'")
            return mapping[key]

        pairs = {}
        for kind in PROMPT_KINDS:
            part = need(data, kind, "")
            pair = PromptPair(str(need(part, "system", f"{kind}.")), str(need(part, "user", f"{kind}.")))
            pairs[kind] = pair
        unknown = set(data) - {"name", "description", "system", "plain", *PROMPT_KINDS}
        if unknown:
            raise ValueError(f"{source}: unknown keys in template set: {', '.join(sorted(unknown))}")
        for kind, pair in pairs.items():
            for part in ("system", "user"):
                named = {m.group(1) for m in _PLACEHOLDER.finditer(getattr(pair, part)) if m.group(1)}
                typos = sorted(named - set(PLACEHOLDERS))
                if typos:
                    raise ValueError(
                        f"{source}: {kind}.{part}: unknown placeholder {', '.join('{' + t + '}' for t in typos)} "
                        f"(the placeholders are {', '.join('{' + p + '}' for p in PLACEHOLDERS)}; "
                        "write {{ and }} for a literal brace)"
                    )
        return cls(
            name=str(data.get("name", Path(source).stem)),
            system=str(data.get("system", "")),
            description=str(data.get("description", "")),
            plain=str(data.get("plain", PLAIN_FORMAT)),
            **pairs,
        )

    @classmethod
    def load(cls, spec: str | Path | TemplateSet | None = None) -> TemplateSet:
        """A built-in set by name (``math``, the default, or ``generic``) or a YAML file."""
        if isinstance(spec, TemplateSet):
            return spec
        spec = spec or "math"
        if str(spec) in BUILTIN_TEMPLATE_SETS:
            return cls.from_dict(yaml.safe_load(_resource_text("templates", f"{spec}.yaml")), str(spec))
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(
                f"template set '{spec}': neither a built-in ({', '.join(BUILTIN_TEMPLATE_SETS)}) nor a file"
            )
        data = read_yaml(path, "template set")
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: a template set is a YAML mapping with base, std and judge prompts")
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "system": self.system,
            "plain": self.plain,
        }
        for kind in PROMPT_KINDS:
            pair: PromptPair = getattr(self, kind)
            out[kind] = {"system": pair.system, "user": pair.user}
        return out

    def messages(self, kind: str, record: Record) -> tuple[str, str]:
        """The (system, user) texts of prompt ``kind`` for ``record``."""
        if kind not in PROMPT_KINDS:
            raise ValueError(f"unknown prompt kind '{kind}' (choose from {', '.join(PROMPT_KINDS)})")
        values = {
            "system": record.system if record.system is not None else self.system,
            "question": record.question,
            "reference": record.reference or "",
            "judgment": record.judgment or "",
        }
        pair: PromptPair = getattr(self, kind)
        return fill(pair.system, values), fill(pair.user, values)

    def fingerprint(self, *kinds: str) -> str:
        """A short hash of the wording of ``kinds`` (default: all) and the default system prompt: results made
        with one wording are never resumed with another, even under the same set name."""
        import hashlib

        parts = [self.system, self.plain] + [
            f"{getattr(self, k).system}\x00{getattr(self, k).user}" for k in (kinds or PROMPT_KINDS)
        ]
        return hashlib.sha256("\x01".join(parts).encode("utf-8")).hexdigest()[:16]

    def chat(self, kind: str, record: Record) -> list[dict[str, str]]:
        """Prompt ``kind`` for ``record`` as chat messages (what the chat template renders)."""
        return chat_messages(*self.messages(kind, record))


def load_chat_template(spec: str | None) -> str | None:
    """A chat template by built-in name (``llama3``) or from a Jinja file; None stays None."""
    if not spec:
        return None
    if spec in BUILTIN_CHAT_TEMPLATES:
        return _resource_text("chat_templates", f"{spec}.jinja")
    path = Path(spec)
    if path.exists():
        return read_text(path, "chat template")
    raise FileNotFoundError(
        f"chat template '{spec}': neither a built-in ({', '.join(BUILTIN_CHAT_TEMPLATES)}) nor a file"
    )


class PromptRenderer:
    """Turns (system, user) texts into prompt token ids, and a response into its ids (EOS-terminated)."""

    def __init__(
        self,
        tokenizer,
        chat_template: str | None = None,
        eos_token: str | None = None,
        plain_format: str = PLAIN_FORMAT,
    ):
        self.tokenizer = tokenizer
        self.plain_format = plain_format
        self.chat_template = (
            load_chat_template(chat_template) or getattr(tokenizer, "chat_template", None) or None
        )
        eos = eos_token or tokenizer.eos_token
        if eos is None:
            raise ValueError("the tokenizer has no EOS token; name one with eos_token")
        self.eos_id = tokenizer.convert_tokens_to_ids(eos)
        if self.eos_id is None or self.eos_id == tokenizer.unk_token_id:
            raise ValueError(f"EOS token '{eos}' is not in the tokenizer's vocabulary")
        self._system_role = True  # switched off on templates that reject a system message
        probe = tokenizer("a", add_special_tokens=True).input_ids
        self._plain_bos = (
            [tokenizer.bos_token_id]
            if tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
            else []
        )

    @property
    def uses_chat_template(self) -> bool:
        return bool(self.chat_template)

    def _messages(self, system: str, user: str) -> list[dict[str, str]]:
        if self._system_role or not system.strip():
            return chat_messages(system, user)
        return [{"role": "user", "content": f"{system}\n\n{user}"}]

    def _apply(self, system: str, user: str, tokenize: bool):
        from jinja2.exceptions import TemplateError

        kwargs = dict(chat_template=self.chat_template, add_generation_prompt=True, tokenize=tokenize)
        if tokenize:
            kwargs.update(return_dict=False, sanitize_control_tokens=True)
        try:
            return self.tokenizer.apply_chat_template(self._messages(system, user), **kwargs)
        except TemplateError:
            if not (self._system_role and system):
                raise
            # Some templates (Gemma, older Mistral) refuse a system role: fold it into the user turn.
            self._system_role = False
            return self.tokenizer.apply_chat_template(self._messages(system, user), **kwargs)

    def prompt_text(self, system: str, user: str) -> str:
        """The prompt as text (for display, and for comparing against joint tokenization)."""
        if self.chat_template:
            return self._apply(system, user, tokenize=False)
        bos = self.tokenizer.bos_token if self._plain_bos else ""
        return f"{bos}{self._plain(system, user)}"

    def prompt_ids(self, system: str, user: str) -> list[int]:
        if self.chat_template:
            return list(self._apply(system, user, tokenize=True))
        return self._plain_bos + self._encode_text(self._plain(system, user))

    def _plain(self, system: str, user: str) -> str:
        # Parts are trimmed, as Llama-3's chat template trims message contents.
        text = fill(self.plain_format, {"system": system.strip(), "user": user.strip()})
        return text if system.strip() else text.lstrip()

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids

    def response_ids(self, response: str) -> list[int]:
        """The response's ids, ending with EOS. Tokenized on its own: never merged with the prompt."""
        ids = self._encode_text(response)
        if not ids or ids[-1] != self.eos_id:
            ids.append(self.eos_id)
        return ids


@dataclass
class EncodedRecord:
    """A record as token ids: one shared response after up to three prompts."""

    id: str
    correct: bool
    response_ids: list[int]
    prompt_ids: dict[str, list[int]]  # "base", "std" and, for incorrect records, "judge"
    truncated: tuple[str, ...] = ()  # prompt kinds whose left part was cut to fit max_length
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in PROMPT_KINDS if k in self.prompt_ids)

    def input_ids(self, kind: str) -> list[int]:
        return self.prompt_ids[kind] + self.response_ids

    def loss_mask(self, kind: str) -> list[int]:
        """1 on response tokens (EOS included), 0 on the prompt."""
        return [0] * len(self.prompt_ids[kind]) + [1] * len(self.response_ids)

    @property
    def width(self) -> int:
        """The longest of its sequences: the width it gives a padded pass (length-grouped sampling reads it)."""
        return len(self.response_ids) + max(len(p) for p in self.prompt_ids.values())

    def to_features(self) -> dict[str, Any]:
        """Flat columns for a ``datasets.Dataset`` (absent judge prompt = empty list)."""
        return {
            "id": self.id,
            "correct": self.correct,
            "response_ids": self.response_ids,
            "base_prompt_ids": self.prompt_ids["base"],
            "std_prompt_ids": self.prompt_ids["std"],
            "judge_prompt_ids": self.prompt_ids.get("judge", []),
            "length": self.width,
        }


class OverlongError(ValueError):
    pass


def fit_left(ids: list[int], budget: int, bos: int | None) -> list[int]:
    """``ids`` cut from the left to ``budget`` tokens, keeping a leading BOS token: how a prompt too long for the
    model is fitted, in training and in generation alike."""
    if len(ids) <= budget:
        return ids
    if bos is not None and ids and ids[0] == bos and budget > 1:
        return [bos] + ids[len(ids) - budget + 1 :]
    return ids[len(ids) - budget :]


class RecordEncoder:
    """Encodes records into the NLFT token sequences, truncating prompts from the left to fit ``max_length``.

    A response that alone leaves no room for a prompt (``len(response) + 1 > max_length``) is never cut:
    with ``on_overlong="skip"`` (the default) the record is skipped and reported, with ``"error"`` it raises.
    """

    def __init__(
        self,
        tokenizer,
        templates: str | Path | TemplateSet | None = "math",
        *,
        max_length: int = 2048,
        on_overlong: Literal["skip", "error"] = "skip",
        chat_template: str | None = None,
        eos_token: str | None = None,
    ):
        if on_overlong not in ("skip", "error"):
            raise ValueError(f"on_overlong must be 'skip' or 'error', not {on_overlong!r}")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.templates = TemplateSet.load(templates)
        self.renderer = PromptRenderer(
            tokenizer, chat_template=chat_template, eos_token=eos_token, plain_format=self.templates.plain
        )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.on_overlong = on_overlong

    def kinds_for(self, record: Record) -> tuple[str, ...]:
        return PROMPT_KINDS if not record.is_correct else ("base", "std")

    def prompt_text(self, kind: str, record: Record) -> str:
        return self.renderer.prompt_text(*self.templates.messages(kind, record))

    def _fit(self, ids: list[int], budget: int) -> list[int]:
        return fit_left(ids, budget, self.tokenizer.bos_token_id)

    def encode(self, record: Record) -> EncodedRecord:
        """Encode one record; raises ``ValueError`` naming the record id when it can't be used for NLFT."""
        if not record.is_correct and record.judgment is None:
            raise ValueError(f"record {record.id}: marked wrong but has no judgment (run `nlft judge` first)")
        if record.is_correct and record.judgment is not None:
            raise ValueError(f"record {record.id}: has a judgment but is marked correct")
        if not record.response.strip():
            raise ValueError(f"record {record.id}: empty response")
        if record.reference is None:
            raise ValueError(f"record {record.id}: no reference (standard) answer for the std prompt")
        response = self.renderer.response_ids(record.response)
        budget = self.max_length - len(response)
        if budget < 1:
            raise OverlongError(
                f"record {record.id}: the response alone is {len(response)} tokens, which leaves no room for a prompt "
                f"within max_length={self.max_length}"
            )
        prompts, truncated = {}, []
        for kind in self.kinds_for(record):
            ids = self.renderer.prompt_ids(*self.templates.messages(kind, record))
            fitted = self._fit(ids, budget)
            if len(fitted) < len(ids):
                truncated.append(kind)
            prompts[kind] = fitted
        return EncodedRecord(record.id, record.is_correct, response, prompts, tuple(truncated))

    def encode_all(self, records: Iterable[Record], *, skip_invalid: bool | None = None) -> EncodeResult:
        """Encode many records. Bad ones raise one ``RecordError`` listing them all, unless skipped.

        Over-long responses follow ``on_overlong``; other bad records are skipped only with ``skip_invalid``.
        """
        encoded, skipped, errors = [], [], []
        source = (
            getattr(records, "source", "") or "<records>"
        )  # the file a RecordList was read from, and where
        where = getattr(records, "locations", {})
        for record in records:
            try:
                encoded.append(self.encode(record))
            except OverlongError as exc:
                problem = Problem(source, where.get(record.id, ""), "response", str(exc), record.id)
                (skipped if self.on_overlong == "skip" or skip_invalid else errors).append(problem)
            except ValueError as exc:
                problem = Problem(source, where.get(record.id, ""), None, str(exc), record.id)
                (skipped if skip_invalid else errors).append(problem)
        if errors:
            raise RecordError(errors, hint="Fix or remove these records, or skip them (--skip-invalid).")
        return EncodeResult(encoded, skipped)


@dataclass
class EncodeResult:
    records: list[EncodedRecord]
    skipped: list[Problem]

    @property
    def truncated(self) -> int:
        return sum(1 for r in self.records if r.truncated)

    def summary(self) -> str:
        parts = [f"{len(self.records)} records encoded"]
        if self.truncated:
            parts.append(f"{self.truncated} with a prompt truncated from the left")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        return ", ".join(parts)
