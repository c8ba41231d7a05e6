"""A real browser (Playwright + Debian Chromium, 1400x1000 like a laptop) on the Fine-tuning tab's run view with
real runs (tests/_run_view_fixtures.py): a finished run with a single evaluation shows its metric point, the
misclassified table has label / prediction / score before the text and every table fits its box, the one-class
warning is visible; an image run shows its mistakes as pictures; a failed run shows its error panel, no results,
a log box at its end, and only Resume enabled; a run started (Start, or the job runner) shows at once and counts its
steps, and Cancel before a checkpoint says Resume restarts it (issue 25). Screenshots go to artifacts/run_view_*.png."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from _app_fixtures import serve  # (the browser fixture comes from conftest)
from _run_view_fixtures import view_runs  # noqa: F401 - a fixture
from engine.rundir import RunDir

ART = ROOT / "artifacts"


@pytest.fixture(scope="module")
def url(view_runs):
    import app
    from ui.train_tab import manager

    with serve(app.build_app(runs_dir=view_runs)) as address:
        yield address
        manager(view_runs).stop_scheduler()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(url)
    pg.get_by_role("tab", name="Fine-tuning").click()
    yield pg
    context.close()


def _show(page, name: str) -> None:
    """Click the run's row in the runs list, as a user would, and wait for its view."""
    page.locator("#train-runs [role=gridcell]", has_text=name).first.click()
    page.wait_for_function(f"(document.querySelector('#run-progress')?.innerText || '').includes('{name}')")


def _shot(page, name: str) -> None:
    ART.mkdir(exist_ok=True)
    page.screenshot(path=str(ART / f"run_view_{name}.png"), full_page=True)


def _headers(page, table: str) -> list[str]:
    return page.evaluate(f"[...document.querySelectorAll('{table} th[role=columnheader]')].map(th => th.title)")


def _fits(page, table: str) -> bool:
    """Every header cell of the table lies inside the table's visible box (nothing cut on the right)."""
    return page.evaluate(f"""(() => {{
        const box = document.querySelector('{table}').getBoundingClientRect();
        return [...document.querySelectorAll('{table} th[role=columnheader]')]
            .every(th => th.getBoundingClientRect().right <= box.right + 1);
    }})()""")


def _round_blobs(png: bytes, rgb, tol: int = 60) -> int:
    """How many filled round marks of colour `rgb` the image holds (a plotted point; a legend's marker sits on its
    line and text strokes are thin, so neither counts)."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    mask = np.abs(img - np.array(rgb)).sum(-1) < tol
    seen, found = np.zeros_like(mask), 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, pts = [(y, x)], []
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            pts.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        ys, xs = zip(*pts)
        h, w = max(ys) - min(ys) + 1, max(xs) - min(xs) + 1
        found += 5 <= h <= 14 and 5 <= w <= 14 and abs(h - w) <= 3 and len(pts) >= 0.6 * h * w
    return found


def test_finished_run_with_one_evaluation(page):
    _show(page, "one-eval")
    page.wait_for_selector("#run-state[data-state='done']")
    page.wait_for_selector("#train-confusion img")
    metric_chart = page.locator("#plot-metrics img")
    metric_chart.wait_for()
    assert _round_blobs(metric_chart.screenshot(), (0x25, 0x63, 0xEB)) >= 1  # the accuracy point at step 3
    assert "no data yet" not in page.locator("#plot-metrics").inner_text()

    assert _headers(page, "#train-wrong")[:4] == ["label", "prediction", "score", "text"]
    assert _fits(page, "#train-wrong") and _fits(page, "#train-per-class") and _fits(page, "#train-metrics")
    assert _headers(page, "#train-metrics") == ["metric", "value"]
    assert "accuracy" in page.locator("#train-metrics").inner_text()
    assert "support" in _headers(page, "#train-per-class")
    warning = page.locator("#train-warning")
    assert warning.is_visible() and "⚠️" in warning.inner_text() and " of 60 validation" in warning.inner_text()
    shown = page.evaluate("(() => { const i = document.querySelector('#train-confusion img');"
                          " return [i.naturalWidth, i.getBoundingClientRect().width]; })()")
    assert shown[1] >= 0.9 * shown[0]  # drawn for this width: not shrunk
    assert page.locator("#train-cancel").is_disabled() and page.locator("#train-resume").is_disabled()
    assert not page.locator("#train-failure").is_visible()
    page.locator("#train-confusion").scroll_into_view_if_needed()
    _shot(page, "1_one_evaluation")


def test_image_run_shows_its_mistakes(page):
    _show(page, "digits")
    gallery = page.locator("#train-wrong-images")
    gallery.wait_for()
    gallery.scroll_into_view_if_needed()
    assert not page.locator("#train-wrong").is_visible()  # no table of names like "digits #721"
    page.wait_for_function("[...document.querySelectorAll('#train-wrong-images img')].some(i => i.complete && "
                           "i.naturalWidth >= 96)")
    captions = gallery.inner_text()
    assert "true " in captions and "→ predicted " in captions
    page.wait_for_timeout(500)
    _shot(page, "2_image_run")


def test_failed_run_shows_its_error(page):
    _show(page, "one-eval")
    page.wait_for_selector("#train-results", state="visible")
    _show(page, "one-topic")  # from a finished run's results to a failed run: nothing of the first may stay
    panel = page.locator("#run-error")
    panel.wait_for()
    text = panel.inner_text()
    assert "Run failed" in text and "only one class (sports)" in text and "log below" in text
    assert page.locator("#run-state[data-state='failed']").count() == 1
    assert not page.locator("#train-results").is_visible()  # no results of another run left on screen
    page.wait_for_function("!document.querySelector('#train-resume').disabled")
    assert page.locator("#train-cancel").is_disabled()
    log_end = page.evaluate("""(() => {
        const box = document.querySelector('#run-log'), text = box.querySelector('pre');
        return [box.scrollHeight - box.clientHeight, box.getBoundingClientRect().bottom,
                text.getBoundingClientRect().bottom];
    })()""")
    assert log_end[0] > 20  # the log is longer than its box...
    assert abs(log_end[1] - log_end[2]) < 12  # ...and the box shows its last lines
    _shot(page, "3_failed")

    page.locator("#train-cancel").evaluate("b => { b.disabled = false; b.click(); }")  # as an API client could
    page.wait_for_function("(document.querySelector('#run-message')?.innerText || '').includes('already failed')")
    assert page.locator("#run-message").inner_text().startswith("✗")
    assert "Error" not in page.locator("#train-progress").inner_text()  # no status badge over the progress line
    _shot(page, "4_cancel_refused")


def test_cancel_only_while_running_then_resume(browser, tmp_path):
    """Cancel is enabled (and red) only while the run can be stopped; once cancelled only Resume is."""
    import app
    from ui.train_tab import manager

    runs = tmp_path / "runs"
    with serve(app.build_app(runs_dir=runs)) as address:
        mgr = manager(runs)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(120_000)
        try:
            page.goto(address)
            page.get_by_role("tab", name="Fine-tuning").click()
            assert page.locator("#train-cancel").is_disabled()  # no run at all: nothing to cancel
            mgr.submit({"dataset_name": "bundled:digits", "model_name_or_path": "mlp", "max_steps": 20_000,
                        "logging_steps": 50, "save_steps": 200}, name="long")
            page.wait_for_selector("#run-state[data-state='running']")
            page.wait_for_function("!document.querySelector('#train-cancel').disabled")
            assert page.locator("#train-resume").is_disabled()
            assert "stop" in page.locator("#train-cancel").get_attribute("class")  # red only now
            _shot(page, "5_running")
            page.locator("#train-cancel").click()
            page.wait_for_selector("#run-state[data-state='cancelled']")
            page.wait_for_function("!document.querySelector('#train-resume').disabled")
            assert page.locator("#train-cancel").is_disabled()
            assert "cancelled" in page.locator("#run-message").inner_text()
            assert "Run cancelled" in page.locator("#run-note").inner_text()
            _shot(page, "6_cancelled")
        finally:
            context.close()
            mgr.stop_scheduler()
            if mgr.info("long")["state"] in ("queued", "starting", "running"):
                mgr.cancel("long", grace=2)


def test_busy_phase_bar_moves(browser, view_runs):
    """While a run evaluates or saves (no ETA to give), its bar's stripes move: the page's CSS animation runs."""
    import gradio as gr

    from engine.runs.jobs import JobManager
    from ui.run_view import progress_html

    info = {**JobManager(view_runs).info("one-eval"), "state": "running", "phase": "evaluating"}
    with gr.Blocks() as demo:
        gr.HTML(progress_html(info), elem_id="bar")
    with serve(demo) as address:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.goto(address)
            fill = page.locator("#bar .run-bar[data-busy='true'] > div")
            fill.wait_for()
            assert fill.evaluate("d => getComputedStyle(d).animationName") == "hubtune-busy"
            first = fill.evaluate("d => getComputedStyle(d).backgroundPosition")
            page.wait_for_timeout(350)
            assert fill.evaluate("d => getComputedStyle(d).backgroundPosition") != first
            assert "evaluating on the validation set" in page.locator("#bar").inner_text()
        finally:
            context.close()


LONG_DIGITS = {"dataset_name": "bundled:digits", "model_name_or_path": "mlp", "max_steps": 20_000,
               "logging_steps": 1_000_000, "save_steps": 1_000_000}  # no train event, no checkpoint before the end


@pytest.fixture
def fresh(browser, tmp_path, view_runs):
    """(page, runs folder, job runner): the whole app on a runs folder holding a copy of the finished `digits` run,
    which the page shows first; any run a test leaves going is cancelled at the end."""
    import shutil

    from _app_fixtures import serve_app
    from ui.train_tab import manager

    runs = tmp_path / "runs"
    shutil.copytree(view_runs / "digits", runs / "digits", ignore=shutil.ignore_patterns("checkpoints"))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(90_000)
    try:
        with serve_app(runs) as address:
            page.goto(address)
            page.get_by_role("tab", name="Fine-tuning").click()
            page.wait_for_function("(document.querySelector('#run-progress')?.innerText || '').includes('digits')")
            yield page, runs, manager(runs)
    finally:
        context.close()


def _progress(page) -> str:
    return page.locator("#run-progress").inner_text()


def test_progress_follows_the_steps_as_they_happen(fresh):
    """Issue 25 #6: the progress line counts the steps while the run has logged no train event yet (it logs one
    every logging_steps; the line said "step 0/N" until then)."""
    page, runs, mgr = fresh
    mgr.submit(LONG_DIGITS, name="long")
    _show(page, "long")
    page.wait_for_function("(() => { const p = document.querySelector('#run-progress');"
                           " return p && p.innerText.includes('long') && /step [1-9][0-9]*\\/20000/.test(p.innerText)"
                           " && !!p.querySelector(\"#run-state[data-state='running']\"); })()")
    assert not [e for e in RunDir(runs / "long").read_events() if e.get("type") == "train"]  # the log's pace only
    first = int(re.search(r"step (\d+)/", _progress(page)).group(1))
    page.wait_for_function(f"(() => {{ const m = /step (\\d+)\\/20000/.exec(document.querySelector("
                           f"'#run-progress')?.innerText || ''); return m && +m[1] > {first}; }})()")  # it goes on
    _shot(page, "7_steps_between_train_events")


def test_cancel_before_the_first_checkpoint_then_resume_says_it_restarts(fresh):
    """Issue 25 #4: cancelled before its first checkpoint, a run is said to restart from the beginning on Resume
    (as the trainer then does and its log says), not to keep checkpoints or to resume from the latest one."""
    page, runs, mgr = fresh
    mgr.submit(LONG_DIGITS, name="early")
    _show(page, "early")
    page.wait_for_function("!document.querySelector('#train-cancel').disabled")
    page.wait_for_selector("#run-state[data-state='running']")
    page.locator("#train-cancel").click()
    page.wait_for_function("(document.querySelector('#run-message')?.innerText || '').includes('cancelled')")
    said = page.locator("#run-message").inner_text()
    assert "cancelled before its first checkpoint: Resume starts it again from the beginning" in said, said
    assert "checkpoints are kept" not in said
    assert "starts again from the beginning" in page.locator("#run-note").inner_text()
    page.wait_for_function("!document.querySelector('#train-resume').disabled")
    _shot(page, "8_cancelled_before_a_checkpoint")
    page.locator("#train-resume").click()
    page.wait_for_function("(document.querySelector('#run-message')?.innerText || '').includes('restart')")
    said = page.locator("#run-message").inner_text()
    assert "restarted from the beginning (no checkpoint yet)" in said and "latest checkpoint" not in said, said
    page.wait_for_selector("#run-state[data-state='running']")
    # the trainer's own words agree: it found no checkpoint and starts from the beginning
    page.wait_for_function("(document.querySelector('#run-log')?.innerText || '').includes('no complete checkpoint')")
    _shot(page, "9_restarted")


def test_start_shows_the_new_run_at_once(fresh):
    """Issue 25 #7: from the moment Start says the run started, the progress line shows that run (not the run shown
    before, for the seconds until the next refresh), and no refresh running meanwhile draws the old one back."""
    page, runs, mgr = fresh
    page.wait_for_selector("#run-state[data-state='done']")
    _choose(page, "train-base-model", "mlp")
    _choose(page, "train-bundled", "bundled:digits")
    page.locator("#cfg-max_steps input[type=number]").fill("20000")
    page.locator("#train-run-name textarea, #train-run-name input").first.fill("fresh")
    page.evaluate("""() => { window.hubtuneAtStart = null; window.hubtuneSeen = [];
        new MutationObserver(() => {
            const shown = document.querySelector('#run-progress')?.innerText || '';
            const said = document.querySelector('#train-problems')?.innerText || '';
            if (window.hubtuneAtStart === null && said.includes('started')) window.hubtuneAtStart = shown;
            if (window.hubtuneAtStart !== null) window.hubtuneSeen.push(shown);
        }).observe(document.body, {subtree: true, childList: true, characterData: true}); }""")
    page.locator("#train-start").click()
    page.wait_for_function("window.hubtuneAtStart !== null")
    at_start = page.evaluate("window.hubtuneAtStart")
    assert "run fresh" in at_start and "run digits" not in at_start, at_start
    page.wait_for_function("(document.querySelector('#run-progress')?.innerText || '').includes('running')")
    seen = page.evaluate("window.hubtuneSeen")
    assert not [s for s in seen if "run digits" in s], seen  # never the previous run again
    _shot(page, "10_started")


def _choose(page, elem_id, option):
    box = page.locator(f"#{elem_id} input")
    box.click()
    listbox = box.get_attribute("aria-controls")  # each dropdown's options are tied to its input
    page.locator(f"li[id^='{listbox}-option'][aria-label='{option}']").click()
