"""The embedded default: the project's tokenizer and tiny random-weight Llama models built from a config.

Tests and the demo use these so that nothing is downloaded. The model is a real ``LlamaForCausalLM`` saved
with ``save_pretrained``, so it is loaded through the same code path as any hub model.
"""

from __future__ import annotations

from pathlib import Path

from . import resource_path

TOKENIZER_DIR = resource_path("tokenizer")
SAMPLE_GSM8K_TEST = resource_path("sample", "gsm8k_test_sample.jsonl")


def load_tokenizer():
    """The project's byte-level BPE (4096 tokens, trained on GSM8K) with a Llama-3-style chat template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def tiny_llama_config(
    vocab_size: int | None = None,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int | None = None,
    **kwargs,
):
    from transformers import LlamaConfig

    tok = load_tokenizer()
    return LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        **kwargs,
    )


def build_tiny_model(seed: int = 0, **config_kwargs):
    """A tiny ``LlamaForCausalLM`` with random weights (deterministic for a seed) over the project's tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(**config_kwargs)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def save_tiny_model(path: str | Path, seed: int = 0, **config_kwargs) -> Path:
    """Write a tiny model and the project's tokenizer to ``path`` (a folder any ``from_pretrained`` accepts)."""
    path = Path(path)
    build_tiny_model(seed, **config_kwargs).save_pretrained(path)
    load_tokenizer().save_pretrained(path)
    return path
