"""Pretrain ``nlft:mini``: a small Llama that solves some ``mini-math`` problems and reads NLFT's two extra prompts.

    python scripts/pretrain_mini.py --out src/nlft/resources/mini        # about an hour on 2 CPU cores

Deterministic for its settings (seeded data order, initialisation and corruptions; a fixed number of intra-op
threads). It builds, in order:

1. a byte-level BPE tokenizer trained on text of the world (questions, solutions, judgments, the prompts), digits
   always single tokens (so that the model can learn arithmetic digit by digit), Llama-3's special tokens and
   chat template;
2. a Llama model from ``model_config``;
3. the pretraining mix, every example rendered with the project's own ``RecordEncoder`` and ``math`` template
   set, so the model sees exactly the prompts nlft later renders; the loss is on response tokens only:
   * ``base``:  X_base(question)            -> the gold solution;
   * ``std``:   X_std(question, gold)       -> the gold solution (a solution that follows the standard answer);
   * ``judge``: X_judge(question, judgment) -> a corrupted solution (``mini_math.corrupt``: an arithmetic slip or
     a wrong operation carried through), the judgment written by the project's arithmetic judge on it;
4. AdamW with a warm-up and then a constant rate (``min_lr_ratio`` 1: no decay), for ``steps`` steps: stopped
   early on purpose, so that greedy accuracy on the test split lands between 25% and 60% (room for fine-tuning
   to improve it).

The model folder gets ``pretrain.json``: the settings, the training log (loss per step, test accuracy at each
evaluation) and the time taken. ``tests/models/test_mini.py`` rebuilds the tokenizer and the first steps from here.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

from nlft.data.arithmetic import judge_response  # noqa: E402
from nlft.prompts import RecordEncoder, TemplateSet  # noqa: E402
from nlft.records import Record  # noqa: E402
from nlft.tasks.mini_math import MiniMathTask, Problem, corrupt, pretrain_stream  # noqa: E402

# Llama-3's split pattern with one change: every digit is its own piece (Llama-3 groups up to three).
PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|pad|>",
]
CHAT_TEMPLATE = REPO / "src" / "nlft" / "resources" / "chat_templates" / "llama3.jinja"
KINDS = ("base", "std", "judge")


@dataclass
class Settings:
    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 768
    max_positions: int = 1024
    steps: int = 1000  # where test accuracy (100 questions) reached 35%: in the 25-60% range
    batch_tokens: int = 12_000  # padded tokens per optimizer step, after the shared prompt prefix
    lr: float = 1.5e-3
    warmup: int = 100
    # Warm-up, then a constant rate: the model at step N does not depend on how long the run was planned, so
    # stopping at N (where test accuracy is in range) is the same as planning N steps.
    min_lr_ratio: float = 1.0
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    mix: dict[str, float] = field(default_factory=lambda: {"base": 0.6, "std": 0.15, "judge": 0.25})
    threads: int = 2
    eval_every: int = 200
    eval_questions: int = 100
    tokenizer_problems: int = 3000


# --------------------------------------------------------------------------------------------------------------
# 1. Tokenizer
# --------------------------------------------------------------------------------------------------------------


def judged(problem: Problem, rng: random.Random) -> tuple[str, str] | None:
    """(wrong solution, arithmetic judgment of it) for ``problem``, or None when no corruption worked."""
    for _ in range(4):
        wrong = corrupt(problem, rng)
        if wrong is None:
            continue
        verdict = judge_response(wrong.solution, problem.solution(), question=problem.question())
        if verdict.judgment:
            return wrong.solution, verdict.judgment
    return None


def tokenizer_corpus(settings: Settings) -> list[str]:
    """Text of the world: questions, solutions, wrong solutions with their judgments, and the prompt templates."""
    rng = random.Random(f"tokenizer:{settings.seed}")
    templates = TemplateSet.load("math")
    texts = [templates.system] + [getattr(templates, k).system + getattr(templates, k).user for k in KINDS]
    stream = pretrain_stream()
    for _ in range(settings.tokenizer_problems):
        p = next(stream)
        texts += [p.question(), p.solution()]
        found = judged(p, rng)
        if found:
            texts += list(found)
    return texts


def build_tokenizer(settings: Settings):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=settings.vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(settings), trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|pad|>",
        model_max_length=settings.max_positions,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE.read_text(encoding="utf-8")
    return fast


# --------------------------------------------------------------------------------------------------------------
# 2. Model
# --------------------------------------------------------------------------------------------------------------


def model_config(tokenizer, settings: Settings):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.kv_heads,
        max_position_embeddings=settings.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build_model(tokenizer, settings: Settings):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(settings.seed)
    return LlamaForCausalLM(model_config(tokenizer, settings))


# --------------------------------------------------------------------------------------------------------------
# 3. The pretraining mix
# --------------------------------------------------------------------------------------------------------------


def examples(tokenizer, settings: Settings):
    """Endless (kind, input_ids, labels) for the mix; labels are -100 over the prompt."""
    encoder = RecordEncoder(tokenizer, "math", max_length=settings.max_positions, on_overlong="error")
    rng = random.Random(f"mix:{settings.seed}")
    kinds, weights = zip(*settings.mix.items())
    for i, p in enumerate(pretrain_stream()):
        kind = rng.choices(kinds, weights)[0]
        gold = p.solution()
        if kind == "judge":
            found = judged(p, rng)
            if found is None:
                kind = "base"
            else:
                wrong, judgment = found
                enc = encoder.encode(Record(f"p{i}", p.question(), wrong, gold, judgment, correct=False))
        if kind != "judge":
            enc = encoder.encode(Record(f"p{i}", p.question(), gold, gold))
        prompt = enc.prompt_ids[kind]
        yield kind, prompt + enc.response_ids, [-100] * len(prompt) + enc.response_ids


def prompt_prefixes(tokenizer) -> dict[str, list[int]]:
    """The ids every prompt of a kind starts with (the chat template's system part, up to the question).

    Every example of a kind shares them, so a batch computes them once and every row attends to that one copy
    (``prefixed_loss``): the model sees the same positions and tokens as with the whole sequence, at about half
    the compute, since the math system prompt is most of every prompt."""
    encoder = RecordEncoder(tokenizer, "math")
    one = encoder.encode(Record("a", "Mia has 3 apples.", "x", "first", "one", correct=False))
    two = encoder.encode(Record("b", "Leo buys 9 pens?", "y", "second two", "two two", correct=False))
    out = {}
    for kind in KINDS:
        a, b = one.prompt_ids[kind], two.prompt_ids[kind]
        n = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        out[kind] = a[:n]
    return out


def batches(tokenizer, settings: Settings):
    """Endless batches of about ``batch_tokens`` tokens (counting every row's shared prefix once per row, as if
    it were there), each of one kind, lengths grouped within pools of 256 examples. A batch holds the kind's
    prefix ids and each row's ids after it, right-padded."""
    import torch

    rng = random.Random(f"batches:{settings.seed}")
    stream = examples(tokenizer, settings)
    prefixes = prompt_prefixes(tokenizer)
    pad = tokenizer.pad_token_id
    while True:
        pool = sorted((next(stream) for _ in range(256)), key=lambda e: (e[0], len(e[1])))
        groups, current = [], []
        for ex in pool:
            width = max([len(ex[1])] + [len(e[1]) for e in current])
            if current and (ex[0] != current[0][0] or width * (len(current) + 1) > settings.batch_tokens):
                groups.append(current)
                current = []
            current.append(ex)
        groups.append(current)
        rng.shuffle(groups)
        for group in groups:
            kind = group[0][0]
            prefix = prefixes[kind]
            rows = []
            for _, x, y in group:
                if x[: len(prefix)] != prefix:
                    raise AssertionError(f"a {kind} prompt does not start with the {kind} prefix")
                rows.append((x[len(prefix) :], y[len(prefix) :]))
            width = max(len(x) for x, _ in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, (x, y) in enumerate(rows):
                ids[r, : len(x)] = torch.tensor(x)
                labels[r, : len(y)] = torch.tensor(y)
                mask[r, : len(x)] = 1
            yield (
                {
                    "prefix": torch.tensor([prefix]),
                    "input_ids": ids,
                    "attention_mask": mask,
                    "labels": labels,
                },
                kind,
            )


def prefixed_loss(model, batch):
    """The mean response-token loss of a batch whose rows all start with ``batch["prefix"]``: the prefix runs
    once, its keys and values are repeated for every row, the rows run after it."""
    import torch

    prefix = batch["prefix"]
    rows = batch["input_ids"].shape[0]
    cache = model(input_ids=prefix, use_cache=True).past_key_values
    cache.batch_repeat_interleave(rows)
    mask = torch.cat([torch.ones(rows, prefix.shape[1], dtype=torch.long), batch["attention_mask"]], dim=1)
    return model(
        input_ids=batch["input_ids"], attention_mask=mask, past_key_values=cache, labels=batch["labels"]
    ).loss


def whole_loss(model, batch):
    """The same loss on whole sequences (prefix written out in every row): what ``prefixed_loss`` must equal."""
    import torch

    rows = batch["input_ids"].shape[0]
    prefix = batch["prefix"].expand(rows, -1)
    ids = torch.cat([prefix, batch["input_ids"]], dim=1)
    mask = torch.cat([torch.ones_like(prefix), batch["attention_mask"]], dim=1)
    labels = torch.cat([torch.full_like(prefix, -100), batch["labels"]], dim=1)
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


# --------------------------------------------------------------------------------------------------------------
# 4. Training
# --------------------------------------------------------------------------------------------------------------


def lr_at(step: int, settings: Settings) -> float:
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return settings.lr * (settings.min_lr_ratio + (1 - settings.min_lr_ratio) * cosine)


def test_accuracy(model, tokenizer, n: int, batch_size: int = 50) -> float:
    """Greedy accuracy on the first ``n`` test problems under the paper protocol's prompt (the X_base prompt)."""
    from nlft.evals.protocols import PaperProtocol
    from nlft.models.generation import HFBackend, SamplingSettings

    task = MiniMathTask()
    questions = task.load("test", limit=n)
    prompted = PaperProtocol("math").build(questions)
    backend = HFBackend(model, tokenizer, SamplingSettings(max_new_tokens=200), batch_size=batch_size)
    by_key = {p.request.key: p.question for p in prompted}
    was_training = model.training
    model.eval()
    right = sum(
        task.grade(c.text or "", by_key[r.key]).correct
        for r, c in backend.generate([p.request for p in prompted])
    )
    model.train(was_training)
    return right / n


def train(
    settings: Settings, tokenizer, *, steps: int | None = None, evaluate: bool = True, log=print, keep=None
):
    """Train a fresh model; returns (model, log rows). ``steps`` (default ``settings.steps``) may stop early;
    ``keep(step, model)`` is called at every evaluation (to keep the model of that step)."""
    import torch

    torch.set_num_threads(settings.threads)
    model = build_model(tokenizer, settings)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=(0.9, 0.95),
    )
    rows = []
    started = time.time()
    data = batches(tokenizer, settings)
    total = settings.steps if steps is None else steps
    for step in range(total):
        batch, kind = next(data)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, settings)
        loss = prefixed_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        row = {
            "step": step + 1,
            "kind": kind,
            "loss": round(loss.item(), 6),
            "seconds": round(time.time() - started, 1),
        }
        if evaluate and ((step + 1) % settings.eval_every == 0 or step + 1 == total):
            row["test_accuracy"] = test_accuracy(model, tokenizer, settings.eval_questions)
            if keep is not None:
                keep(step + 1, model)
        rows.append(row)
        if step % 20 == 0 or "test_accuracy" in row:
            log(json.dumps(row))
    return model, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "src" / "nlft" / "resources" / "mini")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the settings')")
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="also save the model of every evaluation step under KEEP/step-N",
    )
    args = parser.parse_args()
    settings = Settings()
    if args.steps is not None:
        settings.steps = args.steps
    if args.eval_every is not None:
        settings.eval_every = args.eval_every
    started = time.time()
    tokenizer = build_tokenizer(settings)
    print(f"tokenizer: {len(tokenizer)} tokens ({time.time() - started:.0f}s)", flush=True)

    def keep(step, model):
        if args.keep is not None:
            model.save_pretrained(args.keep / f"step-{step}")

    model, rows = train(settings, tokenizer, log=lambda line: print(line, flush=True), keep=keep)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    info = {"settings": asdict(settings), "seconds": round(time.time() - started), "log": rows}
    (args.out / "pretrain.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {time.time() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
