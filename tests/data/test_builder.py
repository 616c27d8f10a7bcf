import json

import pytest

from nlft.data.builder import build_dataset, parse_ratio, select, split_counts
from nlft.jsonl import atomic_write_jsonl, read_jsonl
from nlft.records import load_records, records_from_dicts


@pytest.fixture
def pool_file(tmp_path, pool_200):
    path = tmp_path / "pool.jsonl"
    atomic_write_jsonl(path, (r.to_dict() for r in pool_200))
    return path


def test_build_50_at_1_to_2_writes_both_files(tmp_path, pool_file):
    result = build_dataset(pool_file, tmp_path / "out", size=50, ratio="1:2", seed=7)
    nlft = load_records(result.nlft_path)
    sft = read_jsonl(result.sft_path)
    assert len(nlft) == 50 and len(sft) == 50
    assert sum(r.is_correct for r in nlft) == 17 and sum(not r.is_correct for r in nlft) == 33
    assert all(r.judgment for r in nlft if not r.is_correct)
    # The SFT rows are the same records in the same order, with the same response as completion.
    for rec, row in zip(nlft, sft):
        assert row["id"] == rec.id
        assert row["completion"] == [{"role": "assistant", "content": rec.response}]
        assert row["prompt"][-1] == {"role": "user", "content": rec.question}
        assert row["prompt"][0]["role"] == "system"
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["ids"] == [r.id for r in nlft] and manifest["correct"] == 17


def test_same_seed_byte_identical_other_seed_differs(tmp_path, pool_file):
    a = build_dataset(pool_file, tmp_path / "a", size=50, ratio="1:2", seed=3)
    b = build_dataset(pool_file, tmp_path / "b", size=50, ratio="1:2", seed=3)
    c = build_dataset(pool_file, tmp_path / "c", size=50, ratio="1:2", seed=4)
    assert a.nlft_path.read_bytes() == b.nlft_path.read_bytes()
    assert a.sft_path.read_bytes() == b.sft_path.read_bytes()
    assert a.nlft_path.read_bytes() != c.nlft_path.read_bytes()


def test_selection_ignores_pool_order(pool_200):
    forward = select(pool_200, 30, (1, 1), seed=1)
    backward = select(list(reversed(pool_200)), 30, (1, 1), seed=1)
    assert [r.id for r in forward.records] == [r.id for r in backward.records]


def test_natural_mix_and_extremes(pool_200):
    assert len(select(pool_200, 40, None, 0).records) == 40
    assert all(r.is_correct for r in select(pool_200, 10, parse_ratio("correct"), 0).records)
    assert not any(r.is_correct for r in select(pool_200, 10, parse_ratio("wrong"), 0).records)


def test_not_enough_records_is_a_clear_error():
    pool = records_from_dicts(
        [
            {"id": f"w{i}", "question": "q", "response": f"r{i}", "reference": "x", "judgment": "bad"}
            for i in range(3)
        ]
        + [{"id": "u", "question": "q", "response": "ru", "reference": "x", "correct": False}]
    )
    with pytest.raises(
        ValueError,
        match=r"needs 4 wrong with a judgment \(the pool has 3\).*1 wrong records without a judgment",
    ):
        select(pool, 4, (0, 1))


@pytest.mark.parametrize("bad", ["1:x", "0:0", "-1:2", "1:2:3"])
def test_bad_ratio(bad):
    with pytest.raises(ValueError, match="ratio"):
        parse_ratio(bad)


def test_split_counts_rounds_half_up():
    assert split_counts(50, (1, 2)) == (17, 33)
    assert split_counts(3, (1, 1)) == (2, 1)
    assert split_counts(12, (2, 1)) == (8, 4)


def test_a_folder_nlft_did_not_make_is_refused_untouched_overwrite_or_not(tmp_path, pool_file):
    """Audit N-2: `nlft data build --out .` in a web extension's folder replaced its manifest.json and nlft.jsonl."""
    folder = tmp_path / "webext"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"manifest_version": 3, "name": "my extension"}')
    (folder / "nlft.jsonl").write_text('{"my": "data"}\n')
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a dataset nlft data build made"):
            build_dataset(pool_file, folder, size=6, ratio="1:2", overwrite=overwrite)
    assert (folder / "manifest.json").read_text() == '{"manifest_version": 3, "name": "my extension"}'
    assert (folder / "nlft.jsonl").read_text() == '{"my": "data"}\n'


def test_an_earlier_build_is_replaced_only_with_overwrite(tmp_path, pool_file):
    """A run trained on data/ (size 25) is not pulled from under it by a later --size 50 into the same folder."""
    first = build_dataset(pool_file, tmp_path / "data", size=24, ratio="1:2", seed=1)
    before = first.nlft_path.read_bytes()
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        build_dataset(pool_file, tmp_path / "data", size=48, ratio="1:2", seed=1)
    assert first.nlft_path.read_bytes() == before
    again = build_dataset(pool_file, tmp_path / "data", size=48, ratio="1:2", seed=1, overwrite=True)
    assert len(load_records(again.nlft_path)) == 48
    assert json.loads(again.manifest_path.read_text())["made_by"] == "nlft data build"
    (tmp_path / "data" / "notes.txt").write_text(
        "mine"
    )  # a file of the user's beside the dataset: not ours now
    with pytest.raises(FileExistsError, match="not a dataset"):
        build_dataset(pool_file, tmp_path / "data", size=24, ratio="1:2", overwrite=True)
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"


def test_import_replaces_only_a_file_an_earlier_import_wrote(tmp_path):
    from nlft.data.sources import ImportOptions, run_import

    mine = tmp_path / "mine.jsonl"
    mine.write_text("precious\n")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not records nlft data import wrote"):
            run_import(
                ImportOptions(source="gold", path="mini-math", limit=3, out=str(mine), overwrite=overwrite)
            )
    assert mine.read_text() == "precious\n"
    out = tmp_path / "gold.jsonl"
    assert run_import(ImportOptions(source="gold", path="mini-math", limit=3, out=str(out))) == 3
    assert all(row["imported_from"] == "gold" for row in read_jsonl(out))
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        run_import(ImportOptions(source="gold", path="mini-math", limit=2, out=str(out)))
    assert (
        run_import(ImportOptions(source="gold", path="mini-math", limit=2, out=str(out), overwrite=True)) == 2
    )
