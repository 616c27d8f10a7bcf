"""``mini-math``: a seeded world of GSM8K-style word problems, small enough for a model pretrained on a laptop.

A problem follows one person's collection of things through 1-4 calculation steps (``+ - * /``): buying more,
giving some away, buying packs of several, doubling, halving, sharing into equal boxes. Several phrasings per
step, 30 names, 20 kinds of object. Solutions are written the GSM8K way — one line per step with a calculator
annotation ``<<a+b=c>>``, then ``#### N`` — so that the grading rules of ``nlft.tasks.answers`` and the arithmetic judge
of ``nlft.data.arithmetic`` work on them unchanged.

Splits are fixed: problem ``i`` of a split is drawn from its own generator, seeded by the split's name and ``i``
(Python's string seeding, stable across versions), and the ``train`` split never holds a question of the ``test``
split. ``pretrain`` is the stream ``scripts/pretrain_mini.py`` trains ``nlft:mini`` on: it holds no question of
either split, so that training and evaluation on ``train``/``test`` are on problems the model has never seen.

``Difficulty`` holds the knobs (number of steps, size of the numbers); ``corrupt`` makes a wrong solution of a
problem — an arithmetic slip or a wrong operation, its consequences carried through the later steps — as a
model might write it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

from ..records import Question
from .answers import NumericTask

NAMES = [
    ("Mia", "she"), ("Leo", "he"), ("Ava", "she"), ("Sam", "he"), ("Noah", "he"), ("Emma", "she"),
    ("Liam", "he"), ("Zoe", "she"), ("Omar", "he"), ("Ivy", "she"), ("Ben", "he"), ("Lily", "she"),
    ("Max", "he"), ("Nora", "she"), ("Eli", "he"), ("Ruby", "she"), ("Jack", "he"), ("Maya", "she"),
    ("Finn", "he"), ("Lucy", "she"), ("Owen", "he"), ("Ella", "she"), ("Ryan", "he"), ("Anna", "she"),
    ("Adam", "he"), ("Sara", "she"), ("Luke", "he"), ("Rosa", "she"), ("Tom", "he"), ("Jade", "she"),
]  # fmt: skip
OBJECTS = [
    "apples", "marbles", "stickers", "pencils", "cookies", "books", "coins", "shells", "cards", "eggs",
    "stamps", "buttons", "candies", "crayons", "beads", "flowers", "toy cars", "balloons", "rocks", "muffins",
]  # fmt: skip
CONTAINERS = {
    "box": "boxes",
    "bag": "bags",
    "jar": "jars",
    "pack": "packs",
    "basket": "baskets",
    "crate": "crates",
    "tin": "tins",
    "tray": "trays",
}

_PRONOUNS = {"she": ("she", "her", "her"), "he": ("he", "him", "his")}  # subject, object, possessive

# Question sentences and solution lines, by step kind. {q} is the value before the step, {b}/{c} the step's own
# numbers, {r} its result; {d} the pack total.
_SENTENCES = {
    "add": [
        "{P} buys {b} more {obj}.",
        "{Friend} gives {o} {b} more {obj}.",
        "{P} finds {b} more {obj}.",
        "Then {p} gets {b} more {obj} from {friend}.",
    ],
    "sub": [
        "{P} gives {b} {obj} to {friend}.",
        "{P} sells {b} of the {obj}.",
        "{P} loses {b} {obj}.",
        "Then {p} uses up {b} {obj}.",
    ],
    "pack": [
        "{P} also buys {b} {containers} with {c} {obj} in each {container}.",
        "{Friend} gives {o} {b} {containers} of {obj}, and each {container} holds {c}.",
    ],
    "times": [
        "{P} then gets enough {obj} to have {k_word} as many as before.",
        "After that, the number of {obj} {p} has becomes {k_word} as large.",
    ],
    "half": [
        "{P} gives half of {poss} {obj} to {friend}.",
        "Then {p} sells half of the {obj} {p} has.",
    ],
    "share": [
        "{P} puts all of {poss} {obj} into {b} {containers} with the same number in each.",
        "{P} shares the {obj} equally among {b} {containers}.",
    ],
}
_LINES = {
    "add": ["{N} has {q}+{b}=<<{q}+{b}={r}>>{r} {obj} now.", "Now {n} has {q}+{b}=<<{q}+{b}={r}>>{r} {obj}."],
    "sub": ["{N} has {q}-{b}=<<{q}-{b}={r}>>{r} {obj} left.", "That leaves {q}-{b}=<<{q}-{b}={r}>>{r} {obj}."],
    "pack": [
        "The {containers} hold {b}*{c}=<<{b}*{c}={d}>>{d} {obj}.\n{N} has {q}+{d}=<<{q}+{d}={r}>>{r} {obj} now.",
    ],
    "times": ["{N} has {q}*{k}=<<{q}*{k}={r}>>{r} {obj} now.", "Now {n} has {q}*{k}=<<{q}*{k}={r}>>{r} {obj}."],
    "half": ["{N} has {q}/2=<<{q}/2={r}>>{r} {obj} left.", "Half of {q} is {q}/2=<<{q}/2={r}>>{r}, so {n} has {r} {obj} left."],
    "share": ["Each {container} holds {q}/{b}=<<{q}/{b}={r}>>{r} {obj}."],
}  # fmt: skip
_STARTS = ["{N} has {a} {obj}.", "{N} collects {a} {obj}.", "{N} starts the day with {a} {obj}."]
_QUESTIONS = ["How many {obj} does {n} have now?", "How many {obj} does {n} have in the end?"]
_SHARE_QUESTION = "How many {obj} are in each {container}?"
_K_WORDS = {2: "twice", 3: "three times", 4: "four times"}


@dataclass(frozen=True)
class Difficulty:
    """The knobs of the world: how many calculation steps (annotations) a problem takes, and number sizes."""

    min_steps: int = 1
    max_steps: int = 4
    max_start: int = 30
    max_change: int = 20  # numbers added or taken away
    max_count: int = 5  # packs, and the boxes of a share
    max_each: int = 9  # things per pack
    max_value: int = 99  # no intermediate result above this: two-digit arithmetic, learnable on a laptop


@dataclass(frozen=True)
class Step:
    kind: str  # add, sub, pack, times, half, share
    b: int = 0  # the step's number: the change, the pack count, the factor, the divisor (2 for half)
    c: int = 0  # pack: things in each
    sentence: int = 0  # which phrasing
    line: int = 0

    @property
    def annotations(self) -> int:
        return 2 if self.kind == "pack" else 1

    def apply(self, q: int) -> int | None:
        """The step's result from ``q``, or None where it has no whole, non-negative one."""
        if self.kind == "add":
            return q + self.b
        if self.kind == "sub":
            return q - self.b if q >= self.b else None
        if self.kind == "pack":
            return q + self.b * self.c
        if self.kind == "times":
            return q * self.b
        if self.kind == "half":
            return q // 2 if q % 2 == 0 else None  # b is 2
        if self.kind == "share":
            return q // self.b if self.b and q % self.b == 0 else None
        raise ValueError(f"unknown step kind {self.kind!r}")


@dataclass(frozen=True)
class Problem:
    """One word problem: who, what, the start value and the steps; the question and solution are rendered."""

    name: str
    pronoun: str
    friend: str
    obj: str
    container: str
    start: int
    steps: tuple[Step, ...]
    start_phrase: int = 0
    question_phrase: int = 0

    def values(self) -> list[int]:
        """The value before the first step and after each step."""
        out = [self.start]
        for step in self.steps:
            r = step.apply(out[-1])
            if r is None:
                raise ValueError("the steps have no whole answer")
            out.append(r)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def _words(self) -> dict[str, str]:
        p, o, poss = _PRONOUNS[self.pronoun]
        return {
            "N": self.name, "n": self.name, "P": p.capitalize(), "p": p, "o": o, "poss": poss,
            "Friend": self.friend, "friend": self.friend, "obj": self.obj, "container": self.container,
            "containers": CONTAINERS[self.container],
        }  # fmt: skip

    def question(self) -> str:
        w = self._words()
        parts = [_STARTS[self.start_phrase].format(a=self.start, **w)]
        for step in self.steps:
            extra = {"b": step.b, "c": step.c, "k_word": _K_WORDS.get(step.b, f"{step.b} times")}
            parts.append(_SENTENCES[step.kind][step.sentence].format(**extra, **w))
        last = self.steps[-1].kind if self.steps else None
        ask = _SHARE_QUESTION if last == "share" else _QUESTIONS[self.question_phrase]
        parts.append(ask.format(**w))
        return " ".join(parts)

    def solution(self, results: list[int] | None = None, kinds: list[str] | None = None) -> str:
        """The GSM8K-style solution. ``results``/``kinds`` (one per step) override what each step computes and
        which operation it writes, for the wrong solutions of ``corrupt``; later steps start from the result
        written before them, as a model carrying its mistake forward would."""
        w = self._words()
        lines = []
        q = self.start
        for i, step in enumerate(self.steps):
            kind = kinds[i] if kinds else step.kind
            shown = replace(step, kind=kind) if kind != step.kind else step
            r = results[i] if results else shown.apply(q)
            d = step.b * step.c
            template = _LINES[kind][step.line % len(_LINES[kind])]
            lines.append(template.format(q=q, b=step.b, c=step.c, d=d, k=step.b, r=r, **w))
            q = r
        return "\n".join(lines) + f"\n#### {q}"


def _k_word_ok(b: int) -> bool:
    return b in _K_WORDS


def generate(rng: random.Random, difficulty: Difficulty = Difficulty()) -> Problem:
    """A random problem (rejection-sampled until every step has a whole result within the limits)."""
    d = difficulty
    while True:
        name, pronoun = rng.choice(NAMES)
        friend = rng.choice([n for n, _ in NAMES if n != name])
        obj, container = rng.choice(OBJECTS), rng.choice(sorted(CONTAINERS))
        budget = rng.randint(d.min_steps, d.max_steps)
        q = rng.randint(3, d.max_start)
        start = q
        steps: list[Step] = []
        while budget > 0:
            kinds = ["add", "sub", "times", "half"] + (["pack"] * 2 if budget >= 2 else [])
            if budget == 1:
                kinds.append("share")
            kind = rng.choice(kinds)
            if kind == "add":
                step = Step("add", rng.randint(2, d.max_change))
            elif kind == "sub":
                if q < 3:
                    continue
                step = Step("sub", rng.randint(1, min(q - 1, d.max_change)))
            elif kind == "pack":
                step = Step("pack", rng.randint(2, d.max_count), rng.randint(2, d.max_each))
            elif kind == "times":
                step = Step("times", rng.choice([2, 2, 3]))
            elif kind == "half":
                if q % 2 or q < 4:
                    continue
                step = Step("half", 2)
            else:
                divisors = [k for k in range(2, d.max_count + 1) if q % k == 0 and q // k >= 2]
                if not divisors:
                    continue
                step = Step("share", rng.choice(divisors))
            r = step.apply(q)
            if r is None or r > d.max_value:
                if rng.random() < 0.05:
                    break  # a dead end: start over
                continue
            step = replace(
                step,
                sentence=rng.randrange(len(_SENTENCES[kind])),
                line=rng.randrange(len(_LINES[kind])),
            )
            steps.append(step)
            budget -= step.annotations
            q = r
            if kind == "share":
                break
        if budget > 0 or not steps:
            continue
        return Problem(
            name, pronoun, friend, obj, container, start, tuple(steps),
            start_phrase=rng.randrange(len(_STARTS)), question_phrase=rng.randrange(len(_QUESTIONS)),
        )  # fmt: skip


def problem_at(
    split: str, index: int, difficulty: Difficulty = Difficulty(), seed: str = "mini-math"
) -> Problem:
    """Problem ``index`` of ``split`` as the generator draws it (before the splits are kept apart)."""
    return generate(random.Random(f"{seed}:{split}:{index}"), difficulty)


# --------------------------------------------------------------------------------------------------------------
# Wrong solutions
# --------------------------------------------------------------------------------------------------------------

_SWAPS = {"add": ["sub"], "sub": ["add"], "times": ["add"], "half": ["times"]}


@dataclass(frozen=True)
class Corruption:
    """A wrong solution of a problem: which step went wrong and how."""

    problem: Problem
    step: int
    kind: str  # "slip" (a wrong result of the right calculation) or "operation" (the wrong calculation)
    solution: str
    answer: int


def corrupt(problem: Problem, rng: random.Random, kind: str | None = None) -> Corruption | None:
    """One wrong solution of ``problem``: at a random step, either an arithmetic slip (the right calculation
    with a wrong result) or a wrong operation (another calculation, worked out right), carried through the later
    steps. None when the draw leads nowhere sensible (a negative or fractional value on the way)."""
    values = problem.values()
    n = len(problem.steps)
    i = rng.randrange(n)
    kind = kind or rng.choice(["slip", "slip", "operation"])
    kinds = [s.kind for s in problem.steps]
    results: list[int] = []
    q = problem.start
    for j, s in enumerate(problem.steps):
        if j == i and kind == "slip":
            right = s.apply(q)
            if right is None:
                return None
            delta = rng.choice([-10, -2, -1, 1, 1, 2, 10]) if right > 10 else rng.choice([-1, 1, 2])
            r = right + delta
        elif j == i:
            options = _SWAPS.get(s.kind)
            if not options:
                return None
            kinds[i] = rng.choice(options)
            r = replace(s, kind=kinds[i]).apply(q)
        else:
            r = replace(s, kind=kinds[j]).apply(q)
        if r is None or r < 0:
            return None
        results.append(r)
        q = r
    if q == values[-1]:
        return None  # the mistake cancelled out
    return Corruption(problem, i, kind, problem.solution(results, kinds), q)


# --------------------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------------------

SPLIT_SIZES = {"train": 20000, "test": 2000}


@lru_cache(maxsize=4)
def _split(split: str, difficulty: Difficulty) -> tuple[Problem, ...]:
    """The problems of a split, each question once; train holds none of test's."""
    taken = set() if split == "test" else {p.question() for p in _split("test", difficulty)}
    out: list[Problem] = []
    i = 0
    while len(out) < SPLIT_SIZES[split]:
        p = problem_at(split, i, difficulty)
        i += 1
        if p.question() not in taken:
            taken.add(p.question())
            out.append(p)
    return tuple(out)


def held_out_questions(difficulty: Difficulty = Difficulty()) -> set[str]:
    """Every question of the train and test splits: what the pretraining stream leaves out."""
    return {p.question() for split in SPLIT_SIZES for p in _split(split, difficulty)}


def pretrain_stream(difficulty: Difficulty = Difficulty(), start: int = 0) -> Iterator[Problem]:
    """The endless stream of problems ``nlft:mini`` is pretrained on: never a question of train or test."""
    held_out = held_out_questions(difficulty)
    i = start
    while True:
        p = problem_at("pretrain", i, difficulty)
        i += 1
        if p.question() not in held_out:
            yield p


def as_question(problem: Problem, split: str, index: int) -> Question:
    return Question(
        id=f"mini-math-{split}-{index:05d}",
        question=problem.question(),
        reference=problem.solution(),
        extra={"gold": str(problem.answer), "steps": sum(s.annotations for s in problem.steps)},
    )


@dataclass
class MiniMathTask(NumericTask):
    name = "mini-math"
    description = "the project's synthetic GSM8K-style word problems (1-4 steps), for nlft:mini"
    difficulty: Difficulty = field(default_factory=Difficulty)

    def load(self, split: str, limit: int | None = None) -> list[Question]:
        self.check_split(split)
        problems = _split(split, self.difficulty)
        return [as_question(p, split, i) for i, p in enumerate(problems[:limit] if limit else problems)]

    def problems(self, split: str) -> tuple[Problem, ...]:
        self.check_split(split)
        return _split(split, self.difficulty)
