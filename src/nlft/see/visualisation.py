"""HTML for the saliency map: token cells, record sections, legend, summary, and the self-contained report.

One renderer serves ``nlft saliency`` (a report file) and ``nlft studio`` (fragments the page swaps in), so
both look the same and escape the same way: every text from data — tokens, questions, judgments, ids — goes
through ``html.escape``; nothing from data reaches a script. The page needs no network: CSS is inline.

Colours: a token trained towards (likelihood) is green, as dark as its weight (2, the largest weight NLFT
gives, is full green); a blamed token (unlikelihood) is red, as dark as its weight over the unlikelihood factor.
Confirmed and blamed tokens are outlined, cluster neighbours dashed blue, weight-0 tokens grey.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence

from ..method.weighting import WeightingConfig, weight_scale
from .views import RecordView, TokenView

GREEN = (22, 163, 74)
RED = (220, 38, 38)

CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --card:#fff;
        --green:rgb(22,163,74); --red:rgb(220,38,38); --blue:rgb(37,99,235); }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
h1 { font-size:20px; margin:0 0 4px; } h2 { font-size:15px; margin:0; }
.muted { color:var(--muted); }
.legend { display:flex; flex-wrap:wrap; gap:6px 18px; align-items:center; background:var(--card); border:1px solid var(--line);
          border-radius:8px; padding:8px 12px; margin:12px 0; font-size:12px; }
.legend .item { display:inline-flex; align-items:center; gap:6px; }
.legend .ramp { width:90px; height:12px; border-radius:3px; border:1px solid var(--line); }
.legend .ramp.green { background:linear-gradient(90deg, rgba(22,163,74,0), rgba(22,163,74,1)); }
.legend .ramp.red { background:linear-gradient(90deg, rgba(220,38,38,0), rgba(220,38,38,1)); }
.legend .tok { line-height:1.2; }
table.summary { border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:8px; font-size:13px; margin:8px 0; }
table.summary th, table.summary td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
table.summary th:first-child, table.summary td:first-child, table.summary td.kind { text-align:left; }
table.summary th { background:#f1f5f9; font-weight:600; }
table.summary a { color:var(--blue); text-decoration:none; }
.record { background:var(--card); border:1px solid var(--line); border-radius:8px; margin:14px 0; padding:12px 16px; }
.record header { border-bottom:1px solid var(--line); padding-bottom:8px; margin-bottom:8px; }
.record .title { display:flex; align-items:center; gap:10px; flex-wrap:wrap; }
.badge { font-size:11px; font-weight:700; text-transform:uppercase; letter-spacing:.04em; padding:1px 8px; border-radius:10px; }
.badge.correct { background:#dcfce7; color:#166534; } .badge.wrong { background:#fee2e2; color:#991b1b; }
.counts { font-size:12px; color:var(--muted); }
.counts b { color:var(--ink); }
.counts .warn { color:#b45309; font-weight:600; }
.field { margin:6px 0 0; font-size:13px; display:grid; grid-template-columns:88px 1fr; gap:8px; }
.field .label { color:var(--muted); font-weight:600; font-size:11px; text-transform:uppercase; padding-top:2px; }
.field .text { white-space:pre-wrap; margin:0; max-height:9em; overflow:auto; }
.field.judgment .text { color:#7f1d1d; }
.tokens { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:13px; line-height:1.25; padding-top:4px; }
.tok { display:inline-flex; flex-direction:column; align-items:stretch; position:relative; margin:2px 0; padding:1px 1px 0;
       border-radius:3px; vertical-align:top; cursor:default; }
.tok .t { white-space:pre; min-width:.45em; text-align:center; }
body:has(#show-weights:not(:checked)) .tok .w { display:none; }
.tok .w { font-size:9px; line-height:1.1; color:var(--muted); text-align:center; padding:0 1px; }
.tok.dark .t, .tok.dark .w { color:#fff; }
.tok.confirmed { box-shadow:inset 0 0 0 1.5px #14532d; }
.tok.blamed { box-shadow:inset 0 0 0 1.5px #7f1d1d; }
.tok.neighbour { outline:1.5px dashed var(--blue); outline-offset:-1.5px; }
.tok.zero .t { color:#9ca3af; }
.tok.frag .t { color:#cbd5e1; }
.tok .nl { color:#94a3b8; }
.tok[data-tip]:hover { z-index:20; }
.tok[data-tip]:hover::after { content:attr(data-tip); position:absolute; top:100%; left:0; margin-top:3px; z-index:30;
       white-space:pre; background:#111827; color:#f9fafb; font:11px/1.45 ui-monospace,Menlo,Consolas,monospace;
       padding:6px 8px; border-radius:5px; box-shadow:0 4px 12px rgba(0,0,0,.25); pointer-events:none; }
.settings { font-size:12px; color:var(--muted); }
.settings code { color:var(--ink); }
"""


def esc(text: object) -> str:
    """Text from data as inert HTML: escaped, and with control characters and bidirectional overrides written out
    (``\\u202e``), so that an id or a token cannot reorder or hide what the page shows."""
    from ..console import printable

    return html.escape(printable(str(text)), quote=True)


def fmt(x: float | None) -> str:
    """A number for a cell or a tooltip: short, never hiding a small nonzero value as 0."""
    if x is None:
        return "-"
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if abs(x) >= 0.01 and abs(x) < 1e4:
        return f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"
    return f"{x:.1e}".replace("e-0", "e-").replace("e+0", "e")


def cell_number(w: float) -> str:
    """A weight in at most 3 characters, to sit under a token without widening it much: 0, .00 (positive
    but below .005), .42, 1.7. The tooltip has the full number."""
    if w == 0:
        return "0"
    if w >= 0.995:
        return f"{w:.1f}"
    return f"{w:.2f}"[1:] if w > 0 else fmt(w)


def cell_colour(token: TokenView, cfg: WeightingConfig) -> tuple[tuple[int, int, int], float]:
    """(rgb, alpha) of a token's cell: green by likelihood weight, red by unlikelihood weight."""
    full = weight_scale(cfg, token.unlikely)
    rgb = RED if token.unlikely else GREEN
    alpha = min(max(token.weight / full, 0.0), 1.0) if full > 0 else 0.0
    return rgb, round(alpha, 3)


def css_colour(rgb: tuple[int, int, int], alpha: float) -> str:
    return f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha})"


def _tip(t: TokenView, correct: bool, cfg: WeightingConfig) -> str:
    lines = [f"#{t.index}  {t.text!r}  (id {t.id})", f"p_base   {fmt(t.p_base)}", f"p_std    {fmt(t.p_std)}"]
    if not correct:
        lines += [f"p_judge  {fmt(t.p_judge)}", f"ratio    {fmt(t.ratio)}  (p_judge / p_base)"]
    kind = "unlikelihood: log(1 - p_base)" if t.unlikely else "likelihood: log p_base"
    lines.append(f"weight   {fmt(t.weight)}  ({kind})")
    role = {
        "confirmed": f"confirmed: p_std > c = {fmt(cfg.correct_confidence)}",
        "blamed": "blamed by the judgment",
        "neighbour": "cluster neighbour of a " + ("confirmed" if correct else "blamed") + " token",
        "other": "other",
    }[t.role]
    lines.append(f"role     {role}")
    if not t.text:
        lines.append("(part of a multi-byte character: shown on the token that completes it)")
    return "\n".join(lines)


def token_cell(t: TokenView, correct: bool, cfg: WeightingConfig) -> str:
    rgb, alpha = cell_colour(t, cfg)
    classes = ["tok", t.role]
    if t.weight == 0:
        classes.append("zero")
    if alpha > 0.55:
        classes.append("dark")
    if not t.text:
        classes.append("frag")
    lines = t.text.split("\n")
    shown = '<span class="nl">↵</span>'.join(esc(part) for part in lines) if t.text else "·"
    cell = (
        f'<span class="{" ".join(classes)}" style="background-color:{css_colour(rgb, alpha)}" '
        f'data-i="{t.index}" data-weight="{t.weight!r}" data-role="{t.role}" data-tip="{esc(_tip(t, correct, cfg))}">'
        f'<span class="t">{shown}</span><span class="w">{cell_number(t.weight)}</span></span>'
    )
    return cell + "<br>" * (len(lines) - 1)


def _counts(v: RecordView, cfg: WeightingConfig) -> str:
    parts = [f"<b>{v.n}</b> tokens"]
    if v.correct:
        parts.append(f"<b>{v.salient}</b> confirmed")
    else:
        share = f"{100 * (v.blamed_fraction or 0):.1f}%"
        cut = f"{100 * cfg.blamed_fraction_cutoff:.1f}%"
        parts.append(f"<b>{v.salient}</b> blamed ({share}")
        parts[-1] += (
            f' <span class="warn">&gt; cutoff {cut}: the rest weighs 0</span>)'
            if v.cutoff_exceeded
            else f" &le; cutoff {cut})"
        )
    parts.append(f"<b>{v.neighbours}</b> cluster neighbours")
    parts.append(f"mean weight <b>{fmt(v.mean_weight)}</b>")
    return " · ".join(parts)


def record_section(v: RecordView, index: int, cfg: WeightingConfig) -> str:
    kind = "correct" if v.correct else "wrong"
    fields = [
        f'<div class="field"><span class="label">Question</span><p class="text">{esc(v.question)}</p></div>'
    ]
    if v.judgment is not None:
        fields.append(
            f'<div class="field judgment"><span class="label">Judgment</span><p class="text">{esc(v.judgment)}</p></div>'
        )
    cells = "".join(token_cell(t, v.correct, cfg) for t in v.tokens)
    return (
        f'<section class="record {kind}" id="rec-{index}" data-id="{esc(v.id)}">'
        f'<header><div class="title"><span class="badge {kind}">{kind}</span><h2>{esc(v.id)}</h2>'
        f'<span class="counts">{_counts(v, cfg)}</span></div>{"".join(fields)}</header>'
        f'<div class="tokens">{cells}</div></section>'
    )


def legend(cfg: WeightingConfig) -> str:
    def sample(classes: str, colour: str, text: str) -> str:
        return f'<span class="tok {classes}" style="background-color:{colour}"><span class="t">{text}</span></span>'

    items = [
        f'<span class="item"><span class="ramp green"></span>likelihood weight 0 → {fmt(weight_scale(cfg, False))}</span>',
        f'<span class="item"><span class="ramp red"></span>unlikelihood weight 0 → {fmt(weight_scale(cfg, True))} (pushed down)</span>',
        f'<span class="item">{sample("confirmed", css_colour(GREEN, 0.6), "tok")} confirmed (correct, p_std &gt; c)</span>',
        f'<span class="item">{sample("blamed", css_colour(RED, 0.6), "tok")} blamed (wrong: the judgment makes it likelier)</span>',
        f'<span class="item">{sample("neighbour", "transparent", "tok")} cluster neighbour</span>',
        f'<span class="item">{sample("zero", "transparent", "tok")} weight 0</span>',
        '<label class="item"><input type="checkbox" id="show-weights" checked> weights in the cells</label>',
        '<span class="item muted">hover a token for p_base, p_std, p_judge, ratio and its exact weight</span>',
    ]
    return f'<div class="legend">{"".join(items)}</div>'


def summary_table(views: Sequence[RecordView], cfg: WeightingConfig) -> str:
    rows = []
    for i, v in enumerate(views):
        fraction = "-" if v.blamed_fraction is None else f"{100 * v.blamed_fraction:.1f}%"
        if v.cutoff_exceeded:
            fraction += " &gt; cutoff"
        rows.append(
            f'<tr><td><a href="#rec-{i}">{esc(v.id)}</a></td><td class="kind">{"correct" if v.correct else "wrong"}</td>'
            f"<td>{v.n}</td><td>{v.salient if v.correct else '-'}</td><td>{'-' if v.correct else v.salient}</td>"
            f"<td>{v.neighbours}</td><td>{fraction}</td><td>{fmt(v.mean_weight)}</td></tr>"
        )
    head = (
        "<tr><th>record</th><th>kind</th><th>tokens</th><th>confirmed</th><th>blamed</th>"
        "<th>cluster neighbours</th><th>blamed fraction</th><th>mean weight</th></tr>"
    )
    return f'<table class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def render_body(views: Sequence[RecordView], cfg: WeightingConfig) -> str:
    """Legend, summary table and one section per record: what the report and the studio both show."""
    sections = "".join(record_section(v, i, cfg) for i, v in enumerate(views))
    return legend(cfg) + summary_table(views, cfg) + sections


def settings_line(cfg: WeightingConfig) -> str:
    return " · ".join(f"{esc(k)} <code>{esc(v)}</code>" for k, v in cfg.to_dict().items())


GENERATOR = "nlft saliency"  # what marks a report as nlft's own (``nlft saliency`` replaces only those)


def render_report(
    views: Sequence[RecordView], cfg: WeightingConfig, *, title: str, details: Mapping[str, object]
) -> str:
    """A whole self-contained HTML page (inline CSS, no scripts, no network)."""
    meta = " · ".join(f"{esc(k)}: <code>{esc(v)}</code>" for k, v in details.items())
    made = time.strftime("%Y-%m-%d %H:%M")
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="{GENERATOR}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}\n.page {{ max-width:1200px; margin:0 auto; padding:20px; }}</style></head>"
        f'<body><div class="page"><h1>{esc(title)}</h1><div class="settings">{meta} · made {esc(made)}</div>'
        f'<div class="settings">weighting: {settings_line(cfg)}</div>'
        f"{render_body(views, cfg)}</div></body></html>\n"
    )
