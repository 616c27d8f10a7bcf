import json

import pytest

from nlft.runs import load_run, resolve_checkpoint


def test_run_folder_resolution(tmp_path):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base/m"}))
    for e in (2, 1, 10):
        (run / "epochs" / f"epoch-{e}").mkdir(parents=True)
        (run / "epochs" / f"epoch-{e}" / "adapter_config.json").write_text("{}")
    (run / "run.json").write_text(json.dumps({"base_model": "base/m", "method": "nlft"}))
    r = load_run(run)
    assert [w.epoch for w in r.epochs()] == [1.0, 2.0, 10.0]
    w = resolve_checkpoint(str(run))
    assert w.base_model == "base/m" and w.adapter == run / "adapter"
    assert resolve_checkpoint(str(run / "adapter")).base_model == "base/m"
    assert resolve_checkpoint("some/hub-id").adapter is None


def test_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path)
