"""Training configuration: weighting files and the settings they may hold."""

import pytest

from nlft.train.config import load_weighting_file


def test_weighting_file_takes_weighting_fields_and_names_typos(tmp_path):
    good = tmp_path / "w.yaml"
    good.write_text("threshold: 1.1\ncluster: similarity\nlearning_rate: 1.0e-4\n")
    assert load_weighting_file(good) == {"threshold": 1.1, "cluster": "similarity"}
    typo = tmp_path / "t.yaml"
    typo.write_text("threshhold: 1.1\n")
    with pytest.raises(ValueError, match=r"t\.yaml.*threshhold"):
        load_weighting_file(typo)
    bad = tmp_path / "b.yaml"
    bad.write_text("judge_floor: low\n")
    with pytest.raises(ValueError, match=r"b\.yaml.*judge_floor"):
        load_weighting_file(bad)
