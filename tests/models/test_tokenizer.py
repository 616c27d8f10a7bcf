"""The project's own test tokenizer: shipped, loadable offline, and reproducible from its script."""

import importlib.util
import json

from nlft.models.tiny import TOKENIZER_DIR, load_tokenizer

from ..conftest import REPO


def test_shipped_tokenizer_has_llama3_specials_and_template(tokenizer):
    assert len(tokenizer) == 4096
    assert tokenizer.bos_token == "<|begin_of_text|>" and tokenizer.eos_token == "<|eot_id|>"
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert (
        text
        == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    ids = tokenizer("Natalia sold 48/2 = 24 clips", add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == "Natalia sold 48/2 = 24 clips"


def test_rebuilding_from_gsm8k_gives_the_shipped_tokenizer(tmp_path, gsm8k_dir):
    spec = importlib.util.spec_from_file_location("build_tokenizer", REPO / "scripts" / "build_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(module.gsm8k_texts(gsm8k_dir), 4096).save_pretrained(tmp_path)
    shipped = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())
    rebuilt = json.loads((tmp_path / "tokenizer.json").read_text())
    assert rebuilt["model"]["vocab"] == shipped["model"]["vocab"]
    assert rebuilt["model"]["merges"] == shipped["model"]["merges"]
    assert load_tokenizer().chat_template == (tmp_path / "chat_template.jinja").read_text()
