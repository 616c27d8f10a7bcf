"""The embedded default: the project's tokenizer and tiny random-weight Llama models built from a config.

Tests and the demo use these so that nothing is downloaded. The model is a real ``LlamaForCausalLM`` saved
with ``save_pretrained``, so it is loaded through the same code path as any hub model.
"""

from __future__ import annotations

from pathlib import Path

from .. import resource_path

TOKENIZER_DIR = resource_path("tokenizer")


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


# Tiny configs of other architectures (same tokenizer), for tests of what differs between them: tied and soft-
# capped heads (Gemma 2), Conv1D MLPs and tied embeddings (GPT-2), fused MLP projections (Phi-3), Qwen 2.
ARCHITECTURES = ("llama", "gemma2", "gpt2", "phi3", "qwen2", "qwen3")


def build_tiny_architecture(arch: str, seed: int = 0, hidden_size: int = 64):
    """A tiny random-weight causal LM of ``arch`` (one of ``ARCHITECTURES``) over the project's tokenizer."""
    import torch
    import transformers

    tok = load_tokenizer()
    common = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)  # fmt: skip
    layers = dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)  # fmt: skip
    if arch == "llama":
        return build_tiny_model(seed, hidden_size=hidden_size)
    if arch == "gpt2":
        config = transformers.GPT2Config(
            n_embd=hidden_size, n_layer=2, n_head=4, n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, **common,
        )  # fmt: skip
    elif arch == "gemma2":
        config = transformers.Gemma2Config(
            head_dim=hidden_size // 4, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
            tie_word_embeddings=True, **layers, **common,
        )  # fmt: skip
    elif arch == "phi3":
        config = transformers.Phi3Config(tie_word_embeddings=False, **layers, **common)
    elif arch == "qwen2":
        config = transformers.Qwen2Config(tie_word_embeddings=False, **layers, **common)
    elif arch == "qwen3":
        config = transformers.Qwen3Config(
            head_dim=hidden_size // 4, tie_word_embeddings=False, **layers, **common
        )
    else:
        raise ValueError(f"architecture {arch!r}: choose from {', '.join(ARCHITECTURES)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return transformers.AutoModelForCausalLM.from_config(config)
