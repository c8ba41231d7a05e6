"""The Fine-tuning tab as a newcomer meets it, in a real browser (Playwright driving Debian Chromium): the data
shown is the data that trains, Check and Start refuse the same things with the same lines, Start waits while a
check runs, the command and config.yaml shown before Start are the ones the run gets, and a failed run shows its
cause. Real data throughout: BBC News articles written to CSV files with a user's own column names.
Screenshots go to artifacts/trust_*.png."""

from __future__ import annotations

import csv
import random
import re
import shutil
from pathlib import Path

import pytest

from _app_fixtures import serve_app  # (browser: conftest)
from conftest import ROOT

ART = ROOT / "artifacts"
TINY = {"max_steps": 2, "max_train_samples": 64, "max_seq_length": 32, "per_device_train_batch_size": 16}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The whole app on a fresh runs folder; any run still going at the end is cancelled."""
    runs_dir = tmp_path_factory.mktemp("trust") / "runs"
    with serve_app(runs_dir) as url:
        yield url, runs_dir


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    _shot(pg, "last")
    context.close()


def _shot(page, name):
    ART.mkdir(exist_ok=True)
    page.screenshot(path=str(ART / f"trust_{name}.png"), full_page=True)


def _articles(n: int, seed: int = 5) -> list[tuple[str, str]]:
    from engine.data import BUNDLED

    data = BUNDLED["bundled:bbc_news"][0]()
    rows = list(zip(data["text"], data["label"]))
    random.Random(seed).shuffle(rows)
    return [(text[:400], label) for text, label in rows[:n]]


def _csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _panel(page) -> str:
    return page.locator("#train-problems").inner_text()


def _wait_panel(page, fragment: str, timeout: int = 60_000) -> str:
    page.wait_for_function("f => (document.querySelector('#train-problems')?.innerText || '').includes(f)", arg=fragment,
                           timeout=timeout)
    return _panel(page)


def _fine_tuning(page, url):
    page.goto(url)
    page.get_by_role("tab", name="Fine-tuning").click()
    page.locator("#train-check").wait_for()


def _upload(page, path: Path):
    page.locator("#train-upload input[type=file]").set_input_files(str(path))


def _choose(page, elem_id, option):
    box = page.locator(f"#{elem_id} input")
    box.click()
    listbox = box.get_attribute("aria-controls")
    page.locator(f"li[id^='{listbox}-option'][aria-label='{option}']").click()


def _options(page, elem_id) -> list[str]:
    box = page.locator(f"#{elem_id} input")
    box.click()
    listbox = box.get_attribute("aria-controls")
    names = page.locator(f"li[id^='{listbox}-option']").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    box.press("Escape")
    return names


def _number(page, field, value):
    box = page.locator(f"#cfg-{field} input[type=number], #cfg-{field} textarea, #cfg-{field} input[type=text]")
    box.first.fill(str(value))
    box.first.press("Tab")


def _run_dirs(runs_dir: Path) -> list[str]:
    return sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name != "uploads") if runs_dir.exists() \
        else []


def _act(page, button: str) -> list[str]:
    """Click Check or Start and return the message panel's lines once the action has answered (the panel is
    emptied when an action starts, so an answer equal to the last one is still seen as new)."""
    # watch the panel: it must be seen empty (the action began) before an answer counts
    page.locator("#train-problems").evaluate("""e => { window.__emptied = false;
        window.__watch && window.__watch.disconnect();
        window.__watch = new MutationObserver(() => { if (!e.innerText.trim()) window.__emptied = true; });
        window.__watch.observe(e, {subtree: true, childList: true, characterData: true}); }""")
    page.locator(button).click()
    page.wait_for_function("() => { const t = (document.querySelector('#train-problems')?.innerText || '');"
                           " return window.__emptied && /Please fix|started|valid|✗/.test(t)"
                           " && !/\\d\\.\\ds/.test(t); }", timeout=240_000)
    return [line for line in _panel(page).splitlines() if line.strip() and "Please fix" not in line]


def _check_lines(page) -> list[str]:
    return _act(page, "#train-check")


def _start_lines(page) -> list[str]:
    return _act(page, "#train-start")


def test_clearing_or_a_refused_upload_leaves_no_data_behind(served, page, tmp_path):
    url, runs_dir = served
    _fine_tuning(page, url)
    page.locator("[data-testid='Upload a file-radio-label']").click()
    good = _csv(tmp_path / "reviews.csv", ["article", "topic"], _articles(120))
    _upload(page, good)
    assert "columns: article, topic" in _wait_panel(page, "Uploaded")
    _choose(page, "train-text-col", "article")
    _choose(page, "train-label-col", "topic")
    assert "valid" in _check_lines(page)[0]
    command = page.locator("#train-command")
    assert "--config" in command.inner_text()

    page.locator("#train-upload button[aria-label='Clear']").click()
    assert "Upload cleared" in _wait_panel(page, "Upload cleared")
    # the command follows the cleared state: no run's config is named any more
    page.wait_for_function("!(document.querySelector('#train-command')?.innerText || '').includes('--config')")
    assert "no file uploaded yet" in command.inner_text()
    lines = _check_lines(page)
    assert lines == ["train_file: no file uploaded yet; upload a .csv, .json, .jsonl or .parquet file, or a .zip of "
                     "images"], lines
    _shot(page, "1_cleared_then_check")

    _upload(page, good)
    _wait_panel(page, "Uploaded")
    page.locator("#train-upload button[aria-label='Clear']").click()
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    _upload(page, empty)
    refused = _wait_panel(page, "✗")
    assert "is empty" in refused and not re.search(r"/(tmp|work|root|home)\b|uploads/", refused), refused  # no path
    assert "empty.csv" in refused
    page.locator("#train-upload input[type=file]").wait_for(state="attached")  # the refused file is taken off
    # Check has no file: it falls back neither on the refused one nor on reviews.csv before it, and says why:
    # the refusal stays the reason until the next upload, for Check and Start alike
    reason = refused.removeprefix("✗").strip()
    assert _check_lines(page) == [reason] and _start_lines(page) == [reason]
    # and the command box says the same, not "no file uploaded yet" (nor a command left from before)
    assert "is empty" in page.locator("#train-command").inner_text()
    assert _run_dirs(runs_dir) == []
    _shot(page, "2_refused_upload_then_check")


def test_start_refuses_exactly_what_check_refuses(served, page, tmp_path):
    url, runs_dir = served
    _fine_tuning(page, url)
    page.locator("[data-testid='Upload a file-radio-label']").click()
    # a user's file with no label column: a text column and a numeric id beside it
    rows = [(text, 1000 + i) for i, (text, _) in enumerate(_articles(80))]
    _upload(page, _csv(tmp_path / "no labels.csv", ["review", "id"], rows))
    _wait_panel(page, "Uploaded")
    assert _options(page, "train-text-col") == ["review"]  # a column of numbers is never offered as the text
    assert page.locator("#train-label-col input").input_value() == "id"

    check = _check_lines(page)
    assert len(check) == 1 and "label_column: column 'id' of no-labels.csv has 80 different values in 80 rows" \
        in check[0], check
    assert _start_lines(page) == check
    assert "review" not in _options(page, "train-label-col")  # the text column is not offered as the label,
    label = page.locator("#train-label-col input")  # but a user may still type any column name
    label.fill("review")
    label.press("Enter")
    check = _check_lines(page)
    assert check == ["label_column: 'review' is also the text column; the label column must hold the classes (e.g. "
                     "'label', 'category'): choose another column for one of them"], check
    assert _start_lines(page) == check
    assert _run_dirs(runs_dir) == [], "a refused Start created a run"
    _shot(page, "3_refused_start")


def test_start_waits_while_a_check_runs(served, page):
    url, _ = served
    _fine_tuning(page, url)
    _number(page, "max_steps", 2)
    start = page.locator("#train-start")
    page.locator("#train-check").click()
    page.wait_for_function("() => document.querySelector('#train-start').disabled")
    assert start.is_disabled() and page.locator("#train-check").is_disabled()
    _shot(page, "4_check_running")
    _wait_panel(page, "valid", timeout=240_000)
    page.wait_for_function("() => !document.querySelector('#train-start').disabled")
    assert "ETA" in page.locator("#train-report").inner_text()


def test_command_and_config_are_live_and_are_what_start_runs(served, page, tmp_path):
    url, runs_dir = served
    _fine_tuning(page, url)
    command = page.locator("#train-command .cm-content")
    page.wait_for_function("() => (document.querySelector('#train-command .cm-content')?.innerText || '').includes('engine.train')")
    first = command.inner_text()
    name = re.search(r"/([\w.-]+)/config\.yaml", first).group(1)
    assert name == "bbc_news-1", first  # the name the run will really get, not a placeholder
    _number(page, "max_steps", 7)
    page.locator("#train-yaml-accordion button.label-wrap").first.click()  # it starts closed
    page.wait_for_function("() => (document.querySelector('#train-yaml .cm-content') || {innerText: ''})"
                           ".innerText.includes('max_steps: 7')")
    yaml_before = page.locator("#train-yaml .cm-content").inner_text()
    assert f"output_dir: {runs_dir / name}" in yaml_before  # the path the run writes to, as written there
    _shot(page, "5_live_command")

    for field, value in TINY.items():
        if not page.locator(f"#cfg-{field}").is_visible():
            page.locator("#cfg-group-data button.label-wrap").first.click()
        _number(page, field, value)
    page.wait_for_function("() => (document.querySelector('#train-yaml .cm-content')?.innerText || '').includes("
                           "'per_device_train_batch_size: 16')")  # the last field set
    shown_cmd, shown_yaml = command.inner_text().strip(), page.locator("#train-yaml .cm-content").inner_text()
    page.locator("#train-start").click()
    started = _wait_panel(page, "started")
    assert f"run {name} started" in started, started
    from engine.runs.jobs import JobManager

    job = JobManager(runs_dir)._job(name)
    assert job["command"] == shown_cmd
    assert (runs_dir / name / "config.yaml").read_text().strip() == shown_yaml.strip()

    # a name that exists is refused by Check and Start with the same line
    page.locator("#train-run-name textarea, #train-run-name input").first.fill(name)
    page.locator("#train-run-name textarea, #train-run-name input").first.press("Tab")
    taken = [f"run name: '{name}' is already taken by another run; choose another name, or leave the box empty for "
             "an automatic one"]
    assert _check_lines(page) == taken and _start_lines(page) == taken
    assert _run_dirs(runs_dir) == [name]

    # the command box follows the data, also after a Start: a cleared upload names no run's config
    page.locator("#train-run-name textarea, #train-run-name input").first.fill("")
    page.locator("[data-testid='Upload a file-radio-label']").click()
    _upload(page, _csv(tmp_path / "after start.csv", ["text", "label"], _articles(60)))
    _wait_panel(page, "Uploaded")
    page.wait_for_function("() => /after-start-1\\/config\\.yaml/.test("
                           "document.querySelector('#train-command .cm-content')?.innerText || '')")
    page.locator("#train-upload button[aria-label='Clear']").click()
    _wait_panel(page, "Upload cleared")
    page.wait_for_function("() => (document.querySelector('#train-command')?.innerText || '').includes("
                           "'no file uploaded yet')")
    assert "config.yaml" not in page.locator("#train-command").inner_text()


def test_a_failed_run_shows_its_cause(served, page, tmp_path, tiny_run):
    """A half-copied model folder (its weights cut off; config and tokenizer whole, so Start's checks pass): the run
    fails in the training process, and the page shows that process's exception, not the launcher's 'returned
    non-zero exit status 1'."""
    url, runs_dir = served
    model = tmp_path / "half-copied-model"
    shutil.copytree(tiny_run / "model", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    _fine_tuning(page, url)
    page.locator("#train-base-model input").fill(str(model))
    page.locator("#train-base-model input").press("Enter")
    _number(page, "max_steps", 2)
    page.locator("#train-run-name textarea, #train-run-name input").first.fill("half")
    page.locator("#train-start").click()
    _wait_panel(page, "run half")  # started, or queued behind the run of the test before
    from conftest import wait_final
    from engine.runs.jobs import JobManager

    assert wait_final(JobManager(runs_dir), "half", timeout=300)["state"] == "failed"
    page.locator("#train-runs [role=gridcell]", has_text="half").first.click()  # show it, as a user would
    page.wait_for_selector("#run-state[data-state='failed']", timeout=60_000)
    page.locator("#run-error").wait_for()
    shown = page.locator("#run-error").inner_text()
    assert "SafetensorError" in shown and "CalledProcessError" not in shown, shown
    _shot(page, "6_failed_run")


def test_configs_this_machine_cannot_run_are_listed_with_their_reason(served, page):
    from engine.training.launch import accelerate_configs

    url, _ = served
    _fine_tuning(page, url)
    configs = accelerate_configs()
    info = page.locator("#train-accel").inner_text()
    page.locator("#train-accel input").click()
    page.get_by_role("option").first.wait_for()
    offered = [o.inner_text().replace("✓", "").strip() for o in page.get_by_role("option").all()]
    assert offered == [n for n, why in configs.items() if why.startswith("ok")]  # only what can start here
    for name, why in configs.items():  # and every other one with the reason it cannot (no GPU, no DeepSpeed ...)
        assert f"{name} ({why})" in " ".join(info.split()), (name, info)
    if "deepspeed_zero2.yaml" not in offered:
        assert "deepspeed_zero2.yaml (needs DeepSpeed" in info or "deepspeed_zero2.yaml (needs 2+ GPUs" in info
    _shot(page, "7_accelerate_configs")
