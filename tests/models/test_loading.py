"""Model names: the embedded models wherever a model is accepted, local paths refused at once when missing."""

import contextlib
import io
import json
import time

import pytest

from nlft.cli import main
from nlft.models.loading import load_model, looks_local, model_source


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, err.getvalue()


@pytest.mark.parametrize(
    "spec", ["/nonexistent", "./nope", "../up/model", "runs/demo/nlft/adapter", "~/nothing", "pool.jsnol/x/y"]
)
def test_a_name_that_looks_like_a_path_is_a_local_folder(spec):
    assert looks_local(spec)
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        model_source(spec)


@pytest.mark.parametrize("spec", ["gpt2", "meta-llama/Meta-Llama-3-8B", "Qwen/Qwen2.5-0.5B"])
def test_hub_ids_stay_hub_ids(spec):
    assert not looks_local(spec) and model_source(spec) == spec


@pytest.mark.parametrize(
    "argv",
    [
        ("sample", "nlft:sample", "--split", "test", "--model", "/nonexistent", "--out", "{tmp}/s.jsonl"),
        ("eval", "/nonexistent", "--data", "nlft:sample", "--out", "{tmp}/e"),
        ("eval", "/nonexistent", "--limit", "5", "--out", "{tmp}/e"),  # default data: gsm8k:test, on the hub
        ("merge", "/nonexistent", "--out", "{tmp}/m"),
        ("saliency", "--model", "/nonexistent", "--data", "nlft:sample", "--out", "{tmp}/s.html"),
        ("train", "--model_name_or_path", "/nonexistent", "--data", "nlft:sample", "--output_dir", "{tmp}/r"),
    ],
)
def test_a_missing_model_folder_is_one_line_at_once(tmp_path, argv):
    started = time.monotonic()
    code, err = cli(*(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2 and "/nonexistent: no such model folder" in err and "Traceback" not in err
    assert time.monotonic() - started < 20  # no hub retries
    assert not any(tmp_path.iterdir())


def test_a_mistyped_data_file_is_no_such_file_not_a_hub_lookup(tmp_path):
    code, err = cli("data", "validate", str(tmp_path / "pool.jsnol"))
    assert code == 2 and "no such file" in err
    code, err = cli(
        "train",
        "--data",
        "pool.jsnol",
        "--model_name_or_path",
        "nlft:tiny",
        "--output_dir",
        str(tmp_path / "r"),
    )
    assert code == 2 and "no such file" in err


def test_the_tiny_model_loads_wherever_a_model_is_accepted():
    net, tokenizer, found = load_model("nlft:tiny", device="cpu")
    assert found.base_model == "nlft:tiny" and tokenizer.eos_token == "<|eot_id|>"
    assert net.config.hidden_size == 64


def test_damaged_adapter_and_run_files_are_named(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00" * 20)  # truncated
    code, err = cli("merge", str(run), "--out", str(tmp_path / "m"))
    assert code == 2 and "adapter" in err and "cannot load the LoRA adapter" in err and "Traceback" not in err
    (run / "run.json").write_text("{not json")
    code, err = cli("merge", str(run), "--out", str(tmp_path / "m"))
    assert code == 2 and "run.json" in err and "damaged run file" in err
    (run / "run.json").write_text(json.dumps({"method": "nlft"}))
    code, err = cli("merge", str(run), "--out", str(tmp_path / "m"))
    assert code == 2 and "no 'base_model'" in err
    adapter = tmp_path / "lone-adapter"
    shutil.copytree(tiny_run / "adapter", adapter)
    (adapter / "adapter_config.json").write_text("[1, 2")
    code, err = cli("merge", str(adapter), "--out", str(tmp_path / "m"))
    assert code == 2 and "adapter_config.json" in err and "damaged" in err


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("llama", ["down_proj", "gate_proj", "up_proj"]),
        ("gemma2", ["down_proj", "gate_proj", "up_proj"]),
        ("qwen2", ["down_proj", "gate_proj", "up_proj"]),
        ("phi3", ["down_proj", "gate_up_proj"]),
        ("gpt2", r".*\.(mlp)\.(c_fc|c_proj)"),
    ],
)
def test_default_lora_targets_are_the_mlp_projections_of_every_architecture(arch, expected):
    from peft import LoraConfig, get_peft_model

    from nlft.models.loading import lora_targets
    from nlft.models.tiny import build_tiny_architecture

    model = build_tiny_architecture(arch)
    targets = lora_targets(model, None)
    assert targets == expected
    adapted = get_peft_model(model, LoraConfig(r=2, target_modules=targets))
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in adapted.named_parameters() if ".lora_A" in n}
    assert wrapped and all(
        ".mlp." in n for n in wrapped
    )  # the MLP, and only the MLP (GPT-2's attn.c_proj not)
    per_layer = {n.split(".mlp.")[1] for n in wrapped}
    assert per_layer == ({"c_fc", "c_proj"} if arch == "gpt2" else set(expected))


def test_lora_targets_that_match_nothing_are_refused():
    from nlft.models.loading import lora_targets
    from nlft.models.tiny import build_tiny_architecture

    with pytest.raises(ValueError, match="gate_proj, up_proj match no module of Phi3ForCausalLM"):
        lora_targets(build_tiny_architecture("phi3"), ["gate_proj", "up_proj", "down_proj"])
    with pytest.raises(ValueError, match="gate_proj, up_proj, down_proj match no module of GPT2LMHeadModel"):
        lora_targets(build_tiny_architecture("gpt2"), ["gate_proj", "up_proj", "down_proj"])
