"""A real browser (Playwright + Debian Chromium) through the Fine-tuning tab's Search mode: a bad search refused by
Check and Start with the same line (nothing created), then a tiny real search on bundled BBC News started from the
page: the command shown, the trials table filling in, Cancel stopping the running trial and the study, Resume
finishing it (the interrupted trial tried again), the best trial and Optuna's plot. Screenshots go to artifacts/."""

import json

import pytest

from conftest import ROOT

from _app_fixtures import serve_app  # (browser: conftest)

ART = ROOT / "artifacts"


@pytest.fixture
def served(tmp_path):
    runs_dir = tmp_path / "runs"
    with serve_app(runs_dir) as url:
        yield url, runs_dir
        from engine.search import jobs as search_jobs

        for name in search_jobs.list_searches(runs_dir):  # a failing test leaves no search behind
            search_jobs.cancel(runs_dir / name)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1400})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    _shot(pg, "last")
    context.close()


def _shot(page, name):
    ART.mkdir(exist_ok=True)
    page.screenshot(path=str(ART / f"search_{name}.png"), full_page=True)


def _field(page, field, value):
    box = page.locator(f"#cfg-{field} input[type=number], #cfg-{field} textarea").first
    box.fill(str(value))
    box.press("Tab")


def _choose(page, elem_id, option):
    box = page.locator(f"#{elem_id} input")
    box.click()
    listbox = box.get_attribute("aria-controls")
    page.locator(f"li[id^='{listbox}-option'][aria-label='{option}']").click()


def _open(page, group):
    page.locator(f"#cfg-group-{group} button.label-wrap").first.click()


def _text_has(page, elem_id, text, timeout=60_000):
    page.wait_for_function(f"(document.querySelector('#{elem_id}')?.innerText || '').includes({json.dumps(text)})",
                           timeout=timeout)


def _answer(page, button, elem_id="search-message", timeout=240_000) -> str:
    """Click `button` and return the panel's text once this click's answer is in: the panel must first be seen
    busy (emptied, or gradio's timer in it) after the click, so an answer equal to the one already shown still
    counts as new (a second click's wait used to pass on the first click's text and read the timer)."""
    page.locator(f"#{elem_id}").evaluate("""e => { window.__busy = false;
        window.__watch && window.__watch.disconnect();
        const busy = () => { const t = e.innerText.trim(); if (!t || /\\d\\.\\ds/.test(t)) window.__busy = true; };
        window.__watch = new MutationObserver(busy);
        window.__watch.observe(e, {subtree: true, childList: true, characterData: true, attributes: true}); }""")
    page.locator(f"#{button}").click()
    page.wait_for_function("id => { const t = (document.querySelector('#' + id)?.innerText || '').trim();"
                           " return window.__busy && t && !/\\d\\.\\ds/.test(t); }", arg=elem_id, timeout=timeout)
    return page.locator(f"#{elem_id}").inner_text()


def _check_and_start_refuse(page, runs_dir, params, line):
    page.locator("#search-params textarea").fill(params)
    for button in ("search-check", "search-start"):
        message = _answer(page, button)
        assert line in message and "Please fix before starting the search" in message, (button, message)
    assert not list(runs_dir.glob("search-*"))


def test_browser_search_mode_runs_cancels_and_resumes_a_search(served, page):
    url, runs_dir = served
    page.goto(url)
    page.get_by_role("tab", name="Fine-tuning").click()
    page.locator("[data-testid='Hyperparameter search-radio-label']").click()
    page.locator("#search-params textarea").wait_for()
    assert not page.locator("#train-start").is_visible() and page.locator("#search-view").is_visible()

    # bad input: the same line from Check and from Start, and no search folder
    _check_and_start_refuse(page, runs_dir, "learnin_rate: [1e-4]", "search.params.learnin_rate: unknown key")
    _check_and_start_refuse(page, runs_dir, "warmup_ratio: {low: 0.3, high: 0.1}", "empty range: low 0.3 >= high 0.1")
    _shot(page, "1_refused")

    # every trial: 12 steps on 200 real articles at 32 tokens, evaluated every 6
    _field(page, "max_steps", 12)
    _field(page, "per_device_train_batch_size", 16)
    _open(page, "data")
    for field, value in (("max_train_samples", 200), ("max_eval_samples", 60), ("max_seq_length", 32)):
        _field(page, field, value)
    _open(page, "evaluation")
    _choose(page, "cfg-eval_strategy", "steps")
    _field(page, "eval_steps", 6)
    page.locator("#search-params textarea").fill("learning_rate: [3e-4, 1e-4]\nwarmup_ratio: {low: 0.0, high: 0.2}")
    page.locator("#search-n-trials input[type=number]").fill("2")
    _choose(page, "search-pruner", "none")
    page.locator("#search-check").click()
    _text_has(page, "search-message", "the search is valid", timeout=240_000)
    message = page.locator("#search-message").inner_text()
    assert "2 trials varying learning_rate, warmup_ratio; accuracy (maximize)" in message, message
    assert "-m engine.search --config" in page.locator("#search-command").inner_text()

    page.locator("#search-start").click()
    _text_has(page, "search-message", "started")
    name = next(p.name for p in runs_dir.iterdir() if p.name.startswith("search-"))
    search = runs_dir / name
    shown = page.locator("#search-command .cm-content").inner_text().strip()
    assert shown.endswith(f"-m engine.search --config {search / 'search.yaml'}")

    # trial-0 done and trial-1 training: Cancel stops both the trial and the study
    _text_has(page, "search-running", "trial-1 running", timeout=300_000)
    assert "done" in page.locator("#search-table").inner_text()
    _shot(page, "2_running")
    page.locator("#search-cancel").click()
    _text_has(page, "search-action", "cancelled", timeout=90_000)
    page.wait_for_selector("#search-state-word[data-state='cancelled']", timeout=30_000)
    _text_has(page, "search-table", "interrupted")
    from engine.rundir import RunDir

    assert RunDir(search / "trial-1").read_status()["search_state"] == "interrupted"

    page.locator("#search-resume").click()
    _text_has(page, "search-action", "resumed")
    page.wait_for_selector("#search-state-word[data-state='done']", timeout=300_000)
    _text_has(page, "search-table", "retry of trial 1")
    _text_has(page, "search-best", "Best so far: trial-")
    page.wait_for_selector("#search-history img", timeout=30_000)
    _shot(page, "3_done")

    data = json.loads((search / "trials.json").read_text())
    assert [r["state"] for r in data["rows"]] == ["done", "interrupted", "done"]
    assert data["rows"][2]["params"] == data["rows"][1]["params"]
    assert data["best"]["run"] in page.locator("#search-best").inner_text()
    assert (search / "best.yaml").is_file() and (search / "optimization_history.png").is_file()
    table = page.locator("#search-table").inner_text()
    for column in ("learning_rate", "warmup_ratio", "accuracy", "duration"):
        assert column in table
    job = json.loads((search / "trial-2" / "job.json").read_text())
    assert "-m accelerate.commands.launch --config_file accelerate_configs/cpu.yaml -m engine.train" in job["command"]
