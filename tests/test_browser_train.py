"""A real browser (Playwright + Debian Chromium) through the Fine-tuning tab: upload a CSV of real BBC News
articles, map its columns, read the pre-flight report, start a tiny run, watch it grow to done, read the
metrics and confusion matrix, then open the model in the Prediction tab and predict.
Screenshots go to artifacts/ at the repo root."""

import csv
import random
import re

import pytest

from conftest import ROOT, whole_default_model

from _app_fixtures import serve_app  # (browser: conftest)

ART = ROOT / "artifacts"
DOCS = ROOT / "docs" / "screenshots"


@pytest.fixture
def served(tmp_path):
    """The whole app (Prediction + Fine-tuning tabs) on a fresh runs folder; any run still going is cancelled. Its
    runs train the whole default model (not the session's 2-layer cut): the README shows these pages, so they show
    what a user's first run gives."""
    runs_dir = tmp_path / "runs"
    with whole_default_model(), serve_app(runs_dir) as url:
        yield url, runs_dir


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1300})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    _shot(pg, "last")  # the page as the test left it, for a failing run's diagnosis
    context.close()


def _real_csv(path, n=160):
    """BBC News articles with deliberately non-default column names, so the mapping matters."""
    from engine.data import BUNDLED

    data = BUNDLED["bundled:bbc_news"][0]()
    rows = list(zip(data["text"], data["label"]))
    random.Random(3).shuffle(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["topic", "article", "source"])
        for text, label in rows[:n]:
            w.writerow([label, text[:600], "bbc"])
    return path


def _choose(page, elem_id, option):
    box = page.locator(f"#{elem_id} input")
    box.click()
    # each dropdown's options are tied to its input by aria-controls (other dropdowns' lists may linger)
    listbox = box.get_attribute("aria-controls")
    page.locator(f"li[id^='{listbox}-option'][aria-label='{option}']").click()


def _number(page, field, value):
    box = page.locator(f"#cfg-{field} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def _open(page, group):
    page.locator(f"#cfg-group-{group} > button.label-wrap, #cfg-group-{group} button.label-wrap").first.click()


def _shot(page, name, doc: str | None = None):
    ART.mkdir(exist_ok=True)
    page.screenshot(path=str(ART / f"train_{name}.png"), full_page=True)
    if doc:  # the README's guide shows what this test sees, so its pictures stay current
        DOCS.mkdir(parents=True, exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(DOCS / doc))


def test_browser_upload_check_train_and_predict(served, page, tmp_path):
    url, runs_dir = served
    data = _real_csv(tmp_path / "bbc sample.csv")
    page.goto(url)
    page.get_by_role("tab", name="Fine-tuning").click()
    page.locator("[data-testid='Upload a file-radio-label']").click()
    page.locator("#train-upload input[type=file]").set_input_files(str(data))
    page.wait_for_function("(document.querySelector('#train-problems')?.innerText || '').includes('columns: topic')")
    _choose(page, "train-text-col", "article")
    _choose(page, "train-label-col", "topic")

    # bad input first: the trainer's own validation, shown in the form before anything is launched
    _number(page, "learning_rate", -1)
    page.locator("#train-check").click()
    page.wait_for_function("(document.querySelector('#train-problems')?.innerText || '').includes('learning_rate')")
    assert "must be >=" in page.locator("#train-problems").inner_text()
    assert not [p for p in runs_dir.iterdir() if p.name != "uploads" and p.is_dir()]

    _number(page, "learning_rate", 0.0002)
    _number(page, "max_steps", 6)
    # a 6-step run long enough (~10 s) for the page to see it between its first and last step on a busy CI too
    _number(page, "per_device_train_batch_size", 32)
    _open(page, "data")
    _number(page, "max_seq_length", 64)
    _open(page, "evaluation")
    _choose(page, "cfg-eval_strategy", "steps")
    _number(page, "eval_steps", 3)
    _open(page, "logging")
    _number(page, "logging_steps", 1)
    page.locator("#train-check").click()
    page.wait_for_function("(document.querySelector('#train-report')?.innerText || '').includes('ETA')", timeout=300_000)
    report = page.locator("#train-report").inner_text()
    assert "Token lengths" in report and "Padding" in report and "6 optimizer steps" in report, report
    counts = page.locator("#train-label-counts").inner_text()
    assert "sports" in counts and "business" in counts
    assert "training and" in report
    shown = page.locator("#train-command .cm-content").inner_text()
    assert "-m accelerate.commands.launch --config_file accelerate_configs/cpu.yaml -m engine.train --config" in shown
    _shot(page, "1_preflight")

    page.locator("#train-start").click()
    page.wait_for_function("(document.querySelector('#train-problems')?.innerText || '').includes('started')")
    run_name = re.search(r"run (\S+) started", page.locator("#train-problems").inner_text()).group(1)
    command = page.locator("#train-command .cm-content").inner_text()
    from engine.runs.jobs import JobManager

    job = JobManager(runs_dir)._job(run_name)
    assert command.strip() == job["command"] and f"--config {runs_dir / run_name / 'config.yaml'}" in command

    # the curve grows while it runs: the step count advances and the loss plot changes
    page.wait_for_function("/step [2-5]\\/6/.test((document.querySelector('#run-progress')?.innerText || ''))",
                           timeout=240_000)
    early = page.locator("#plot-loss").screenshot()
    _shot(page, "2_running")
    # closing/reloading the page does not stop training: a fresh page reattaches to the running run
    page.reload()
    page.get_by_role("tab", name="Fine-tuning").click()
    page.wait_for_function(f"(document.querySelector('#run-progress')?.innerText || '').includes('{run_name}')")
    page.wait_for_selector("#run-state[data-state='done']", timeout=240_000)
    page.wait_for_selector("#train-confusion img")
    late = page.locator("#plot-loss").screenshot()
    assert early != late
    metrics = page.locator("#train-metrics").inner_text()
    assert "accuracy" in metrics
    assert "sports" in page.locator("#train-per-class").inner_text()
    assert page.locator("#train-runs").inner_text().count(run_name) >= 1
    # the log says in plain words that the head is new: no colour codes, no table of MISSING weights
    page.wait_for_function("(document.querySelector('#train-log')?.innerText || '').includes('model saved to')")
    log = page.locator("#train-log").inner_text()
    assert "a new classification head (classifier.bias, classifier.weight) starts untrained" in log, log[-3000:]
    assert "\x1b" not in log and "␛" not in log and "MISSING" not in log and "LOAD REPORT" not in log
    _shot(page, "3_done", doc="fine-tuning.png")

    page.locator("#train-open-predict").click()
    page.wait_for_selector("#predict-text textarea")
    # the Prediction tab's picker now holds this run, and its "No finished run yet" notice (drawn when the page
    # loaded, before the run) has gone
    assert run_name in page.locator("#predict-model input").input_value()
    page.locator("#predict-empty").wait_for(state="hidden")
    page.locator("#predict-text textarea").fill(
        "The striker scored twice as the champions won the cup final at Wembley.")
    page.locator("#predict-button").click()
    page.wait_for_function("/sports|business|tech|politics|entertainment/.test("
                           "(document.querySelector('#predict-label')?.innerText || ''))", timeout=120_000)
    _shot(page, "4_predict", doc="prediction.png")

    page.get_by_role("tab", name="Runs").click()  # the run is listed there too
    page.locator("#runs-table [role=gridcell]", has_text=run_name).first.wait_for()
