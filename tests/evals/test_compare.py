import csv
import io
import json

import pytest

from nlft.cli import main
from nlft.evals.compare import Curve, compare, load_curve, pair_colors
from nlft.evals.evaluation import EvalSettings, checkpoint_describe, evaluate, folder_name
from nlft.evals.protocols import PaperProtocol
from nlft.evals.questions import EvalData
from nlft.models.generation import Completion
from nlft.records import Question
from nlft.runs import Checkpoint, load_run

N = 10
DATA = EvalData("gsm8k:test", "test", [Question(f"q{i}", f"question {i}", "#### 1") for i in range(N)])


class RightOnFirst:
    """Answers the first ``k`` questions right (per seed, ``k`` may differ)."""

    def __init__(self, k):
        self.k = k
        self.settings = None

    def generate(self, requests):
        for r in requests:
            k = self.k(self.settings.seed) if callable(self.k) else self.k
            yield r, Completion("#### 1" if int(r.key[1:]) < k else "#### 0", finish_reason="stop")


def make_run(root, name, method, right_by_epoch, *, final_epochs=None, seeds=None):
    """A run folder whose eval/ holds real `evaluate` results: ``right_by_epoch[e]`` of N right at epoch e (0: base)."""
    path = root / name
    path.mkdir()
    info = {"base_model": "tiny-base", "method": method}
    if final_epochs is not None:
        info["epochs"] = final_epochs
    (path / "run.json").write_text(json.dumps(info))
    run = load_run(path)
    settings = EvalSettings(temperature=0.6, seeds=seeds) if seeds else EvalSettings()
    for epoch, right in right_by_epoch.items():
        label = "final" if epoch is None else ("base" if epoch == 0 else f"epoch-{epoch}")
        weights = Checkpoint("tiny-base", None, label, None if epoch is None else float(epoch))
        out = path / "eval" / folder_name("paper", "test", None, label)
        evaluate(
            RightOnFirst(right),
            PaperProtocol(),
            DATA,
            out,
            settings,
            describe=checkpoint_describe(run, weights),
            progress=False,
        )
    return path


def test_compare_writes_table_csv_and_plot(tmp_path):
    nlft = make_run(tmp_path, "nlft-50", "nlft", {0: 2, 1: 4, 2: 6, 3: 7})
    sft = make_run(tmp_path, "sft-50", "sft", {0: 2, 1: 3, 2: 4, 3: 4})
    paths = compare([nlft, sft], tmp_path / "cmp", rule="authors")

    md = paths["md"].read_text()
    assert "| epoch | nlft-50 (NLFT) | sft-50 (SFT) |" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| epoch")]
    assert [r.split("|")[1].strip() for r in rows] == ["0", "1", "2", "3"]
    assert rows[2].split("|")[2:4] == [" 60.0 ", " 40.0 "]

    table = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert len(table) == 8 and {r["method"] for r in table} == {"nlft", "sft"}
    last = next(r for r in table if r["method"] == "nlft" and r["epoch"] == "3.0")
    assert float(last["authors"]) == pytest.approx(0.7) and float(last["strict"]) == pytest.approx(0.7)

    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    from PIL import Image

    with Image.open(paths["png"]) as img:
        assert img.size[0] > 600 and img.size[1] > 400


def test_final_weights_count_as_the_last_epoch_unless_evaluated_from_epochs(tmp_path):
    only_final = make_run(tmp_path, "a", "nlft", {0: 1, None: 5}, final_epochs=10)
    curve = load_curve(only_final, "paper", "gsm8k:test")
    assert [(r["checkpoint"], r["epoch"]) for r in curve.rows] == [("base", 0.0), ("final", 10.0)]
    both = make_run(tmp_path, "b", "nlft", {1: 3, 2: 5, None: 5}, final_epochs=2)
    assert [r["checkpoint"] for r in load_curve(both, "paper", "gsm8k:test").rows] == ["epoch-1", "epoch-2"]
    unknown = make_run(tmp_path, "c", "sft", {1: 3, None: 4})
    assert [(r["checkpoint"], r["epoch"]) for r in load_curve(unknown, "paper", "gsm8k:test").rows] == [
        ("epoch-1", 1.0),
        ("final", None),
    ]


def test_seeded_results_show_mean_and_sd(tmp_path):
    run = make_run(tmp_path, "s", "nlft", {1: lambda seed: {1: 4, 2: 6}[seed]}, seeds=(1, 2))
    md = compare([run], tmp_path / "o")["md"].read_text()
    assert "50.0 ± 14.1" in md  # mean of 40% and 60%, sample sd sqrt(2 * 10^2 / 1)


def test_missing_results_say_what_to_run(tmp_path):
    run = make_run(tmp_path, "r", "nlft", {1: 3})
    with pytest.raises(
        FileNotFoundError, match=r"no 'lm-eval' results on 'test'.*paper-test-epoch-1.*nlft eval"
    ):
        compare([run], tmp_path / "o", protocol="lm-eval")
    with pytest.raises(ValueError, match="2 labels for 1 runs"):
        compare([run], tmp_path / "o", labels=["a", "b"])


def test_compare_cli(tmp_path, capsys):
    a = make_run(tmp_path, "nlft-25", "nlft", {1: 5, 2: 6})
    b = make_run(tmp_path, "sft-25", "sft", {1: 1, 2: 2})
    out = tmp_path / "fig"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "compare",
                str(a),
                str(b),
                "--labels",
                "NLFT 25",
                "SFT 25",
                "--rule",
                "strict",
                "--out",
                str(out),
            ]
        )
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert "| epoch | NLFT 25 | SFT 25 |" in printed and "strict match" in printed
    assert (out / "comparison.png").stat().st_size > 0 and (out / "comparison.csv").exists()


def test_runs_differing_only_in_method_share_a_colour():
    curves = [
        Curve(n, m, f"runs/{n}", [])
        for n, m in [("nlft-25", "nlft"), ("sft-25", "sft"), ("nlft-50", "nlft"), ("SFT_50", "sft")]
    ]
    assert pair_colors(curves) == ["C0", "C0", "C1", "C1"]
    assert pair_colors([Curve("a", "nlft", "x/alpha", []), Curve("b", "nlft", "x/beta", [])]) == ["C0", "C1"]


def test_damaged_summaries_and_run_files_are_named(tmp_path, capsys):
    run = make_run(tmp_path, "nlft-50", "nlft", {0: 2, 1: 4})
    summary = next((run / "eval").glob("*/summary.json"))
    summary.write_text('{"accuracy": ')
    with pytest.raises(SystemExit) as info:
        main(["compare", str(run), "--out", str(tmp_path / "cmp")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and str(summary) in err and "damaged evaluation summary" in err
    summary.write_text('{"protocol": "paper"}')
    with pytest.raises(SystemExit):
        main(["compare", str(run), "--out", str(tmp_path / "cmp")])
    assert "damaged evaluation summary (no accuracy" in capsys.readouterr().err
    (run / "run.json").write_text("[")
    with pytest.raises(SystemExit):
        main(["compare", str(run), "--out", str(tmp_path / "cmp")])
    assert "run.json" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_compare_replaces_only_its_own_comparison(tmp_path):
    """Audit N-38: `nlft compare --out .` replaced an existing comparison.md."""
    import pytest

    nlft = make_run(tmp_path, "nlft-50", "nlft", {0: 2, 1: 4})
    sft = make_run(tmp_path, "sft-50", "sft", {0: 2, 1: 3})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "comparison.md").write_text("# my notes\n")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a comparison nlft compare wrote"):
            compare([nlft, sft], mine, rule="authors", overwrite=overwrite)
    assert (mine / "comparison.md").read_text() == "# my notes\n" and not (mine / "comparison.png").exists()
    compare([nlft, sft], tmp_path / "cmp", rule="authors")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        compare([nlft, sft], tmp_path / "cmp", rule="authors")
    assert compare([nlft, sft], tmp_path / "cmp", rule="authors", overwrite=True)["md"].is_file()
