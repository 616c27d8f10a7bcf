import json

import pytest
import torch

from nlft.cli import main
from nlft.models.generation import HFBackend, Request, SamplingSettings
from nlft.models.loading import load_model
from nlft.train.merge import merge_adapter

PROMPTS = [
    Request(
        "a",
        messages=[
            {"role": "system", "content": "Solve it."},
            {"role": "user", "content": "Tom has 3 apples and buys 4. How many?"},
        ],
    ),
    Request("b", text="Question: What is 12 * 3?\nAnswer:"),
]


def greedy(model, tokenizer) -> dict[str, str]:
    backend = HFBackend(model, tokenizer, SamplingSettings(max_new_tokens=16), batch_size=2)
    return {r.key: c.text for r, c in backend.generate(PROMPTS)}


def test_merged_model_generates_what_base_plus_adapter_generates(tiny_run, tmp_path):
    adapter = tiny_run / "epochs" / "epoch-2"
    out = tmp_path / "merged"
    with pytest.raises(SystemExit) as info:
        main(["merge", str(adapter), "--out", str(out)])
    assert info.value.code == 0
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()
    assert not (out / "adapter_config.json").exists()
    assert json.loads((out / "merge.json").read_text())["adapter"] == str(adapter)

    peft_model, tok, weights = load_model(adapter, device="cpu")
    merged, merged_tok, merged_weights = load_model(out, device="cpu")
    assert weights.adapter is not None and merged_weights.adapter is None
    assert type(merged).__name__ == "LlamaForCausalLM"

    expected = greedy(peft_model, tok)
    assert greedy(merged, merged_tok) == expected
    with torch.no_grad():
        ids = torch.tensor([tok("Question: What is 12 * 3?").input_ids])
        torch.testing.assert_close(merged(ids).logits, peft_model(ids).logits, rtol=1e-4, atol=1e-4)
    # The adapter really changes the model, so the equality above says something.
    base, base_tok, _ = load_model(weights.base_model, device="cpu")
    assert greedy(base, base_tok) != expected


def test_merge_refuses_to_clobber_and_needs_an_adapter(tiny_run, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        merge_adapter(tiny_run, out)
    with pytest.raises(ValueError, match="replaces only a merged model"):
        merge_adapter(tiny_run, out, overwrite=True)  # a folder of the user's: never replaced
    assert (out / "keep.txt").read_text() == "mine"
    merged = tmp_path / "merged"
    merge_adapter(tiny_run, merged)  # a run folder: its final adapter
    (merged / "stale.txt").write_text("from an earlier merge")
    merge_adapter(tiny_run, merged, overwrite=True)  # a merged model may be replaced
    assert not (merged / "stale.txt").exists() and (merged / "model.safetensors").exists()
    base = json.loads((tiny_run / "run.json").read_text())["base_model"]
    with pytest.raises(ValueError, match="no LoRA adapter"):
        merge_adapter(base, tmp_path / "m2")
    assert not (tmp_path / "m2").exists()


def test_merge_never_replaces_the_cwd_the_run_or_a_folder_holding_it(tiny_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "work" / "run"
    shutil.copytree(tiny_run, run)
    before = sorted(p.name for p in run.iterdir())
    monkeypatch.chdir(run)
    for out in (".", str(run.parent)):
        with pytest.raises(ValueError, match="current directory"):
            merge_adapter(run, out, overwrite=True)
    monkeypatch.chdir(tmp_path)
    for out in (run, run.parent, run / "adapter", run / "epochs" / "epoch-1"):
        with pytest.raises(ValueError, match="being merged"):
            merge_adapter(run, out, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == before


def test_merge_overwrite_never_replaces_the_base_model_of_what_it_merges(tiny_run, tmp_path):
    """Audit N-13: an adapter trained on merged1, merged with --out merged1 --overwrite, replaced its own base."""
    import shutil

    merged1 = tmp_path / "merged1"
    merge_adapter(tiny_run, merged1)
    before = (merged1 / "model.safetensors").read_bytes()
    on_merged = tmp_path / "on-merged"
    shutil.copytree(tiny_run / "adapter", on_merged)
    config = json.loads((on_merged / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(merged1)
    (on_merged / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="being merged"):
        merge_adapter(on_merged, merged1, overwrite=True)
    assert (merged1 / "model.safetensors").read_bytes() == before
