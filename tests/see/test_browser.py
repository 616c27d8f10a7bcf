"""The studio and the report in a real browser: headless Chromium (Debian's package) driven by Playwright.

Screenshots are kept in test-artifacts/ (git-ignored) for people to look at. Where Chromium or the playwright
package is missing, the tests skip and say so; .ci/run installs Chromium.
"""

import os
import re
import shutil

import pytest

from nlft.method.weighting import WeightingConfig
from nlft.see.saliency import make_report
from nlft.see.views import record_view
from nlft.see.visualisation import cell_colour
from nlft.train.snapshots import list_snapshots, load_snapshot

from ..conftest import REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts"
# Without the background-networking flags Chromium keeps trying to reach Google's services.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
PWNED = '"><img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"


@pytest.fixture(scope="module")
def browser():
    path = os.environ.get("NLFT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("needs headless Chromium: apt-get install chromium (Debian); .ci/run installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("needs the playwright Python package: pip install -e '.[dev]'")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def demo_run(small_demo):
    """The NLFT run of the shared small demo (conftest): it has saliency snapshots every 2 steps."""
    return small_demo[0] / "nlft"


def rgba(css: str) -> tuple[tuple[int, int, int], float]:
    nums = [float(x) for x in re.findall(r"[\d.]+", css)]
    return (int(nums[0]), int(nums[1]), int(nums[2])), (nums[3] if len(nums) > 3 else 1.0)


def background(locator, timeout: float = 10.0) -> tuple[tuple[int, int, int], float]:
    """The element's computed background colour. The page may re-render the record between finding the element and
    reading its style (a detached element has no computed style: ''), so the locator is read again until it has
    one."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        css = locator.evaluate("el => getComputedStyle(el).backgroundColor")
        if css or time.monotonic() > deadline:
            return rgba(css)
        time.sleep(0.1)


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    return page, dialogs


def wait_until(page, predicate: str, arg=None, timeout: float = 30.0) -> None:
    """Poll ``predicate`` (a JS function) from here: Playwright's own polling evaluates strings, which the
    studio's Content-Security-Policy (no 'unsafe-eval') refuses whenever the first check is false."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout:.0f}s: {predicate}")
        page.wait_for_timeout(50)


def set_number(page, name: str, value: str) -> None:
    box = page.locator(f"#num-{name}")
    box.fill(value)
    box.dispatch_event("change")


@pytest.mark.xdist_group("demo")
def test_moving_theta_reweights_a_token_as_the_weighting_function_says(browser, demo_run, server):
    page, dialogs = open_page(browser, server(demo_run).url)
    page.wait_for_selector("section.record .tok")
    # Relax the blame test so that every wrong record has blamed tokens to watch.
    set_number(page, "judge_floor", "0")
    set_number(page, "ratio_threshold", "1.0")
    page.wait_for_selector("section.record.wrong .tok.blamed")
    wait_until(page, "() => !document.body.dataset.busy")

    step = int(page.evaluate("document.body.dataset.step"))
    assert step == list_snapshots(demo_run)[-1][0] > 0
    snap = load_snapshot(list_snapshots(demo_run)[-1][1])
    section = page.locator("section.record.wrong").first
    record_id = section.get_attribute("data-id")
    index = int(section.locator(".tok.blamed").first.get_attribute("data-i"))
    cell = page.locator(f'section.record.wrong >> nth=0 >> .tok[data-i="{index}"]')
    record = next(r for r in snap.records if r.id == record_id)

    def expected(**settings):
        cfg = WeightingConfig(**{**snap.weighting.to_dict(), **settings})
        return record_view(record, cfg).tokens[index], cfg

    before, cfg = expected(judge_floor=0.0, ratio_threshold=1.0)
    assert before.role == "blamed" and float(cell.get_attribute("data-weight")) == before.weight
    colour_before = background(cell)

    page.locator("#ctl-threshold").fill("0.5")  # the θ slider
    # The page swaps in new HTML: look the cell up again each time.
    wait_until(
        page,
        """([id, i, old]) => {
            const section = [...document.querySelectorAll("section.record")].find((s) => s.dataset.id === id);
            const el = section && section.querySelector(`.tok[data-i="${i}"]`);
            return el && el.dataset.weight !== old && !document.body.dataset.busy;
        }""",
        arg=[record_id, index, cell.get_attribute("data-weight")],
    )
    after, cfg = expected(judge_floor=0.0, ratio_threshold=1.0, threshold=0.5)
    assert after.weight != before.weight
    assert float(cell.get_attribute("data-weight")) == after.weight
    assert page.locator("#num-threshold").input_value() == "0.5"
    rgb, alpha = background(cell)
    want_rgb, want_alpha = cell_colour(after, cfg)
    assert rgb == want_rgb and alpha == pytest.approx(want_alpha, abs=0.01)
    assert abs(alpha - colour_before[1]) > 0.05  # the colour visibly changed with the weight

    # Show the correct records' confirmed tokens too, then keep a picture with a token's numbers on hover.
    set_number(page, "correct_confidence", "0.00025")
    page.wait_for_selector("section.record.correct .tok.confirmed")
    wait_until(page, "() => !document.body.dataset.busy")
    cell.scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    cell.hover()
    page.screenshot(path=str(ARTIFACTS / "studio.png"))

    page.locator("#export").click()
    page.wait_for_selector("#export-result pre")
    from nlft.train.config import parse_train_args

    _, _, train_cfg = parse_train_args(["--config", str(demo_run / "studio-weighting.yaml")])
    assert (train_cfg.threshold, train_cfg.judge_floor, train_cfg.correct_confidence) == (0.5, 0.0, 0.00025)
    assert not dialogs
    page.close()


@pytest.mark.xdist_group("demo")
def test_report_in_the_browser(browser, demo_run):
    out = ARTIFACTS / "report.html"
    report = make_report(
        out,
        model=str(demo_run),
        limit=5,  # the demo data's first five: three correct records, then two wrong ones
        overrides={"judge_floor": 0.0, "ratio_threshold": 1.0, "correct_confidence": 0.00025},
        progress=False,
        overwrite=True,  # this test's own report from an earlier run
    )
    page, dialogs = open_page(browser, out.as_uri())
    cells = page.locator("section.record .tok")
    assert cells.count() == sum(v.n for v in report.views)
    section = page.locator("section.record.wrong").first
    blamed = section.locator(".tok.blamed").first
    view = next(v for v in report.views if v.id == section.get_attribute("data-id"))
    token = view.tokens[int(blamed.get_attribute("data-i"))]
    assert token.role == "blamed"
    assert float(blamed.get_attribute("data-weight")) == token.weight
    rgb, alpha = background(blamed)
    want_rgb, want_alpha = cell_colour(token, report.weighting)
    assert rgb == want_rgb and alpha == pytest.approx(want_alpha, abs=0.01)
    page.screenshot(path=str(ARTIFACTS / "report.png"))  # the top: settings, legend, summary, first records
    blamed.hover()
    tip = blamed.evaluate("el => getComputedStyle(el, '::after').content")
    assert "p_judge" in tip and "ratio" in tip
    page.screenshot(path=str(ARTIFACTS / "report-hover.png"))
    assert not dialogs
    page.close()


def test_hostile_tokens_render_as_text_in_studio_and_report(browser, server, tmp_path):
    from nlft.train.snapshots import Snapshot, write_snapshot

    from ..conftest import make_probe

    tokens = ["Fine", SCRIPT, " and", PWNED, "\n", " end"]
    rec = make_probe(f"id {PWNED}", False, n=len(tokens), tokens=tokens)
    rec.question = f"Question {SCRIPT}"
    rec.judgment = f"Judgment {PWNED}"
    write_snapshot(tmp_path, Snapshot(3, [rec], WeightingConfig()))
    (tmp_path / "run.json").write_text('{"method": "nlft"}')  # the studio serves run folders only
    report = tmp_path / "hostile.html"
    make_report(report, snapshot=str(tmp_path))

    for name, url in (("studio", server(tmp_path).url), ("report", report.as_uri())):
        page, dialogs = open_page(browser, url)
        page.wait_for_selector("section.record .tok")
        page.wait_for_timeout(300)  # let an onerror handler run, were there one
        section = page.locator("section.record").first
        text = section.inner_text()
        for raw in (SCRIPT, PWNED, f"Question {SCRIPT}", f"Judgment {PWNED}"):
            assert raw in text, (name, raw)
        assert section.get_attribute("data-id") == f"id {PWNED}"
        assert page.locator("section.record img, section.record script").count() == 0
        assert page.evaluate("window.__pwned") is None and not dialogs
        page.screenshot(path=str(ARTIFACTS / f"{name}-hostile-tokens.png"))
        page.close()


def test_a_setting_applied_in_the_studio_during_training_is_used_from_the_next_step(
    browser, server, tmp_path
):
    """A real training run (in a thread, paced so that a person could act): the studio's "apply to this run"
    reaches the trainer, which logs the new setting with its step and weighs the next step's tokens with it."""
    import threading
    import time

    from transformers import TrainerCallback

    from nlft.train.run import train

    from ..conftest import SGD, config

    class Pace(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(0.3)
            return control

    run = tmp_path / "run"
    args = config(
        tmp_path, *SGD, "--max_steps", "40", "--saliency_steps", "1", "--per_device_train_batch_size", "2"
    )
    results = []
    worker = threading.Thread(target=lambda: results.append(train(*args, callbacks=[Pace()])), daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not list_snapshots(run) and time.monotonic() < deadline:
        time.sleep(0.1)
    page, dialogs = open_page(browser, server(run).url)
    page.wait_for_selector("section.record .tok")
    wait_until(page, "() => !document.querySelector('#apply').disabled")
    set_number(page, "other_exponent", "1.7")
    wait_until(page, "() => !document.body.dataset.busy")
    page.locator("#apply").click()
    wait_until(
        page, "() => document.querySelector('#apply-result').textContent.includes('applied by the run')"
    )
    worker.join(timeout=120)
    assert results, "training did not finish"
    history = results[0].log_history
    change = next(h for h in history if "weighting/other_exponent" in h)
    assert change["weighting/other_exponent"] == pytest.approx(1.7)
    step = int(change["weighting_step"])
    snaps = {s: load_snapshot(p) for s, p in list_snapshots(run)}
    assert snaps[step - 1].weighting.other_exponent == pytest.approx(0.6)
    assert snaps[step].weighting.other_exponent == pytest.approx(1.7)
    # The next step's weights are the weighting function's under the new setting.
    rec = next(r for r in snaps[step].records if r.correct)
    expected = record_view(rec, WeightingConfig(**{**snaps[step].weighting.to_dict()})).tokens
    old = record_view(rec, snaps[step].weighting.replace({"other_exponent": 0.6})).tokens
    assert [t.weight for t in expected] != [t.weight for t in old]
    assert not dialogs
    # Once the run has finished, the button is off: nothing can be applied any more.
    wait_until(page, "() => document.querySelector('#apply').disabled")
