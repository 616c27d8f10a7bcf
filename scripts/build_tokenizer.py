"""Build the project's small test tokenizer (shipped in src/nlft/resources/tokenizer).

A byte-level BPE trained with `tokenizers` on GSM8K text, with Llama-3's pre-tokenizer pattern, special
tokens and chat template, so that tests and the demo exercise the same code paths as a real Llama-3 model
without downloading anything. Training is deterministic: the same input gives the same files.

    python scripts/build_tokenizer.py --gsm8k ../shared/data/gsm8k --out src/nlft/resources/tokenizer
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# Llama-3's split pattern (tiktoken cl100k-style), so numbers split into groups of at most three digits.
LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|pad|>",
]
CHAT_TEMPLATE = Path(__file__).resolve().parents[1] / "src/nlft/resources/chat_templates/llama3.jinja"


def gsm8k_texts(folder: Path) -> list[str]:
    texts = []
    for name in ("train.jsonl", "test.jsonl"):
        with open(folder / name, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                texts.append(row["question"])
                texts.append(row["answer"])
    return texts


def build(texts: list[str], vocab_size: int):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
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
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE.read_text()
    return fast


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gsm8k",
        type=Path,
        default=Path("../shared/data/gsm8k"),
        help="folder with train.jsonl and test.jsonl",
    )
    parser.add_argument("--out", type=Path, default=Path("src/nlft/resources/tokenizer"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()
    fast = build(gsm8k_texts(args.gsm8k), args.vocab_size)
    args.out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(args.out)
    print(f"wrote {args.out} ({len(fast)} tokens)")


if __name__ == "__main__":
    main()
