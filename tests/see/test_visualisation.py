"""The HTML saliency map: escaping, colours, a self-contained page, and `nlft saliency` end to end."""

from html.parser import HTMLParser

import pytest
import torch

from nlft.method.weighting import WeightingConfig
from nlft.see.saliency import make_report
from nlft.see.views import record_view
from nlft.see.visualisation import GREEN, RED, cell_colour, render_report
from nlft.train.snapshots import list_snapshots, load_snapshot

from ..conftest import make_probe

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'


class Page(HTMLParser):
    """The elements, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def cells(self) -> list[dict]:
        return [
            a for t, a in self.tags if t == "span" and "tok" in a.get("class", "").split() and "data-i" in a
        ]


def hostile_probe():
    tokens = ["Fine", SCRIPT, " and", IMG, "\n", " end"]
    rec = make_probe("<b>id</b>", False, n=len(tokens), tokens=tokens)
    rec.question = f"What is {SCRIPT}?"
    rec.judgment = f"Step 1 {IMG} is wrong"
    return rec


def render(records, cfg=None):
    cfg = cfg or WeightingConfig()
    views = [record_view(r, cfg) for r in records]
    return views, render_report(views, cfg, title=f"report {SCRIPT}", details={"model": IMG})


def test_tokens_and_texts_from_data_render_as_text():
    _, text = render([hostile_probe()])
    page = Page(text)
    tags = {t for t, _ in page.tags}
    assert "script" not in tags and "img" not in tags
    assert not [(t, a) for t, a in page.tags for name in a if name.startswith("on")]
    shown = "".join(page.text)
    for raw in (SCRIPT, IMG, "<b>id</b>", f"What is {SCRIPT}?", f"Step 1 {IMG} is wrong"):
        assert raw in shown, raw
    cells = page.cells()
    assert len(cells) == 6
    assert repr(IMG) in cells[3]["data-tip"]  # the tooltip holds the token as text too


def test_report_is_self_contained():
    _, text = render([make_probe("w", False), make_probe("c", True, seed=1)])
    page = Page(text)
    assert {"script", "link", "img", "iframe"}.isdisjoint({t for t, _ in page.tags})
    for _, attrs in page.tags:
        for name in ("src", "href"):
            assert not attrs.get(name, "#").startswith(("http", "//")), attrs
    assert "@import" not in text and "url(" not in text


def test_cells_are_coloured_and_numbered_by_their_weight():
    cfg = WeightingConfig(cluster="off", blamed_fraction_cutoff=0.9)
    views, text = render([make_probe("w", False, n=40), make_probe("c", True, n=40, seed=1)], cfg)
    cells = Page(text).cells()
    tokens = [t for v in views for t in v.tokens]
    assert len(cells) == len(tokens) == 80
    seen = set()
    for cell, token in zip(cells, tokens):
        assert float(cell["data-weight"]) == token.weight
        assert cell["data-role"] == token.role and token.role in cell["class"].split()
        rgb, alpha = cell_colour(token, cfg)
        assert rgb == (RED if token.unlikely else GREEN)
        full = cfg.unlikelihood_factor if token.unlikely else 2.0
        assert alpha == pytest.approx(min(token.weight / full, 1.0), abs=1e-3)
        assert f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha})" in cell["style"]
        for key in ("p_base", "p_std", "weight"):
            assert key in cell["data-tip"]
        seen.add((token.role, rgb))
    assert {("blamed", RED), ("confirmed", GREEN), ("other", GREEN)} <= seen
    # Darker for heavier: the blamed (unlikelihood) cells of the wrong record follow their weight.
    blamed = sorted((t.weight, cell_colour(t, cfg)[1]) for t in views[0].tokens if t.unlikely)
    assert [a for _, a in blamed] == sorted(a for _, a in blamed) and blamed[0][1] < blamed[-1][1]


def test_newlines_break_lines_and_records_have_headers():
    views, text = render([make_probe("w", False, n=14), make_probe("c", True, n=14, seed=1)])
    assert text.count("<br>") == sum(t.text.count("\n") for v in views for t in v.tokens) == 4
    page = Page(text)
    sections = [a for t, a in page.tags if t == "section"]
    assert [s["data-id"] for s in sections] == ["w", "c"]
    shown = "".join(page.text)
    for v in views:
        assert v.question in shown
    assert "Judgment of w" in shown
    assert f"{views[0].salient} blamed" in shown and f"{views[1].salient} confirmed" in shown


def test_report_of_a_run_shows_the_weights_of_its_last_snapshot(snapshot_run, tmp_path):
    """Scoring a run's final adapter outside training gives what the trainer's last snapshot holds."""
    report = make_report(tmp_path / "r.html", model=str(snapshot_run), limit=4, progress=False)
    last = load_snapshot(list_snapshots(snapshot_run)[-1][1])
    assert report.weighting == last.weighting  # the run's own settings, e.g. its cluster_radius 0.95
    by_id = {r.id: record_view(r, last.weighting) for r in last.records}
    assert len(report.views) == 4
    for v in report.views:
        want = by_id[v.id]
        assert [t.text for t in v.tokens] == [t.text for t in want.tokens]
        assert torch.equal(v.weights.salient, want.weights.salient)
        assert torch.equal(v.weights.cluster, want.weights.cluster)
        assert torch.allclose(v.weights.weight, want.weights.weight, rtol=1e-4, atol=1e-6)
    assert any(v.salient for v in report.views)
    text = report.path.read_text()
    assert text.count('<section class="record') == 4 and "cluster_radius <code>0.95</code>" in text


def test_saliency_command_layers_yaml_and_flags(snapshot_run, tmp_path, capsys):
    from nlft.cli import main

    yaml_file = tmp_path / "w.yaml"
    yaml_file.write_text("threshold: 0.5\nunlikelihood_factor: 3\n")
    out = tmp_path / "snap.html"
    with pytest.raises(SystemExit) as info:
        main(["saliency", "--snapshot", str(snapshot_run), "--step", "1", "--out", str(out),
              "--weighting", str(yaml_file), "--threshold", "0.7", "--cluster", "off"])  # fmt: skip
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "w1" in printed
    text = out.read_text()
    for setting in (
        "threshold <code>0.7</code>",
        "unlikelihood_factor <code>3.0</code>",
        "cluster <code>off</code>",
    ):
        assert setting in text
    assert "step 1" in text

    yaml_file.write_text("treshold: 0.5\n")
    with pytest.raises(SystemExit) as info:
        main(["saliency", "--snapshot", str(snapshot_run), "--out", str(out), "--weighting", str(yaml_file),
              "--overwrite"])  # fmt: skip
    assert info.value.code == 2
    assert "w.yaml" in capsys.readouterr().err
    with pytest.raises(
        SystemExit
    ) as info:  # audit N-38: an existing report is replaced only with --overwrite
        main(["saliency", "--snapshot", str(snapshot_run), "--out", str(out)])
    assert info.value.code == 2 and "pass --overwrite" in capsys.readouterr().err
    mine = tmp_path / "mine.html"
    mine.write_text("<html>my page</html>")
    with pytest.raises(SystemExit) as info:
        main(["saliency", "--snapshot", str(snapshot_run), "--out", str(mine), "--overwrite"])
    assert info.value.code == 2 and "not a saliency report" in capsys.readouterr().err
    assert mine.read_text() == "<html>my page</html>"
    with pytest.raises(SystemExit) as info:
        main(["saliency", "--snapshot", str(tmp_path), "--out", str(out), "--overwrite"])
    assert info.value.code == 2 and "no saliency snapshots" in capsys.readouterr().err


def test_reference_probs_initial_scores_with_the_adapter_off(snapshot_run, tmp_path):
    data = str(snapshot_run.parent / "data.jsonl")
    initial = make_report(
        tmp_path / "i.html", model=str(snapshot_run), reference_probs="initial", progress=False
    )
    live = make_report(tmp_path / "l.html", model=str(snapshot_run), progress=False)
    base = make_report(tmp_path / "b.html", model=str(snapshot_run / "base-model"), data=data, progress=False)
    for ini, liv, b in zip(initial.views, live.views, base.views):
        assert [t.p_std for t in ini.tokens] == pytest.approx([t.p_std for t in b.tokens], rel=1e-5)
        assert [t.p_base for t in ini.tokens] == pytest.approx([t.p_base for t in liv.tokens], rel=1e-6)
    assert [t.p_std for t in initial.views[0].tokens] != pytest.approx(
        [t.p_std for t in live.views[0].tokens]
    )
    with pytest.raises(ValueError, match="adapter"):
        make_report(
            tmp_path / "x.html", model=str(snapshot_run / "base-model"), data=data, reference_probs="initial"
        )


def test_report_of_a_cached_run_scores_as_it_trained(tmp_path):
    """A run with reference_probs: cached took p_std/p_judge from the frozen base model; so does its report."""
    from nlft.train.run import train

    from ..conftest import VISIBLE, config

    train(*config(tmp_path, *VISIBLE, "--reference_probs", "cached", "--max_steps", "1", "--learning_rate", "1e-2", "--warmup_steps", "0",
                  "--per_device_train_batch_size", "4", "--saliency_steps", "1", "--saliency_probe", "4"))  # fmt: skip
    run = tmp_path / "run"
    last = load_snapshot(list_snapshots(run)[-1][1])
    report = make_report(tmp_path / "r.html", model=str(run), progress=False)
    assert "reference probs: <code>initial</code>" in report.path.read_text()
    by_id = {r.id: r for r in last.records}
    for v in report.views:
        assert [t.p_std for t in v.tokens] == pytest.approx(by_id[v.id].p_std.tolist(), rel=1e-5)
    live = make_report(tmp_path / "l.html", model=str(run), reference_probs="live", progress=False)
    assert [t.p_std for t in live.views[0].tokens] != pytest.approx([t.p_std for t in report.views[0].tokens])


def test_bidi_overrides_and_control_characters_are_shown_not_obeyed():
    """Audit N-29: a right-to-left override or a NUL in an id, a question or a token reached the report raw."""
    tokens = ["Fine", "\u202eevil", "\x00", " end"]
    rec = make_probe("id\u202edi", False, n=len(tokens), tokens=tokens)
    rec.question = "What is\u2066 this\u2069?"
    _, text = render([rec])
    for raw in ("\u202e", "\u2066", "\u2069", "\x00"):
        assert raw not in text
    shown = "".join(Page(text).text)
    assert "id\\u202edi" in shown and "What is\\u2066 this\\u2069?" in shown and "\\u202eevil" in shown
