"""A real browser (Playwright + Debian Chromium) through the Runs tab: the leaderboard of real tiny BBC News runs
(tests/_leaderboard_fixtures.py) filtered, two finished runs picked by clicking their rows, both runs' curves on
one plot (by step, then by epoch) and the config.yaml diff, the table downloaded as CSV, a running run's deletion
refused, a finished run deleted after confirming. Screenshots: artifacts/runs_*.png."""

import csv
import re

import pytest

from _app_fixtures import serve_app  # (browser: conftest)
from _leaderboard_fixtures import BUSY, lr_runs, runs_folder  # noqa: F401
from conftest import ROOT

ART = ROOT / "artifacts"


@pytest.fixture
def served(tmp_path, lr_runs, tiny_run):  # noqa: F811
    """The whole app on a runs folder of finished runs, and `busy`: a real run started through the app's job runner
    (cancelled at the end if the test has not)."""
    from ui.train_tab import manager

    runs = runs_folder(tmp_path, lr_runs, tiny_run)
    with serve_app(runs) as url:
        manager(runs).submit(BUSY, name="busy")
        yield url, runs


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1200}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    _shot(pg, "last")  # the page as the test left it, for a failing run's diagnosis
    context.close()


def _shot(page, name):
    ART.mkdir(exist_ok=True)
    page.screenshot(path=str(ART / f"runs_{name}.png"), full_page=True)


def _cell(page, name):
    return page.locator("#runs-table [role=gridcell]", has_text=name)


def _choose(page, elem_id, option):
    box = page.locator(f"#{elem_id} input")
    box.click()
    listbox = box.get_attribute("aria-controls")  # each dropdown's options are tied to its input
    page.locator(f"li[id^='{listbox}-option'][aria-label='{option}']").click()


def test_browser_compare_two_runs_and_delete(served, page, lr_runs, tmp_path):  # noqa: F811
    from ui.train_tab import manager

    url, runs = served
    page.goto(url)
    page.get_by_role("tab", name="Runs").click()
    _cell(page, "busy").first.wait_for()
    page.locator("#runs-count", has_text=re.compile(r"^\s*6 runs\s*$")).wait_for()

    page.locator("#runs-filter textarea, #runs-filter input").first.fill("lr-5e")
    page.locator("#runs-count", has_text="2 of 6 runs shown").wait_for()
    with page.expect_download() as download:
        page.locator("#runs-csv").click()
    rows = list(csv.DictReader(open(download.value.path(), encoding="utf-8")))
    assert sorted(r["name"] for r in rows) == ["lr-5e-4", "lr-5e-5"] and all(r["state"] == "done" for r in rows)

    # two finished runs, picked by clicking their rows: both runs' curves on one plot, and what differs
    _cell(page, "lr-5e-5").first.click()
    _cell(page, "lr-5e-4").first.click()
    note = page.locator("#runs-compare-note", has_text="2 runs by step")
    note.wait_for()
    assert "lr-5e-5 (4 train and 2 validation points)" in note.inner_text()
    assert "lr-5e-4 (4 train and 2 validation points)" in note.inner_text()
    for plot in ("#runs-plot-loss img", "#runs-plot-metric img"):
        page.locator(plot).wait_for()
    diff = page.locator("#runs-config-diff")
    diff.locator("[role=gridcell]", has_text="learning_rate").wait_for()
    assert [line.split() for line in diff.locator("[role=row]").all_inner_texts()] == [
        ["key", "lr-5e-5", "lr-5e-4"], ["learning_rate", "5e-05", "0.0005"]]  # only the key that differs
    side = page.locator("#runs-side-by-side").inner_text()
    assert "F1 · lr-5e-5" in side and "F1 · lr-5e-4" in side and "politics" in side
    page.locator("#runs-plot-loss").scroll_into_view_if_needed()
    _shot(page, "compare")
    page.locator("#runs-x label", has_text="epoch").click()
    page.locator("#runs-compare-note", has_text="2 runs by epoch").wait_for()
    page.locator("#runs-plot-loss img").wait_for()
    page.locator("#runs-plot-loss").screenshot(path=str(ART / "runs_compare_epoch_loss.png"))

    # a running run cannot be deleted: refused with one line, the folder stays
    page.locator("#runs-filter textarea, #runs-filter input").first.fill("")
    page.locator("#runs-count", has_text=re.compile(r"^\s*6 runs\s*$")).wait_for()
    _choose(page, "runs-delete-run", "busy")
    page.locator("#runs-delete").click()
    refused = page.locator("#runs-message", has_text="delete: run 'busy' is")
    refused.wait_for()
    assert "cancel it first, then delete it" in refused.inner_text() and len(refused.inner_text().splitlines()) == 1
    assert not page.locator("#runs-confirm").is_visible() and (runs / "busy" / "config.yaml").exists()
    _shot(page, "delete_refused")
    manager(runs).cancel("busy", grace=2)  # done with it: give the CPU back

    # a finished run goes after a second, confirming click, and nothing else does
    _choose(page, "runs-delete-run", "old-run")
    page.locator("#runs-delete").click()
    page.locator("#runs-confirm-text", has_text="Delete run old-run?").wait_for()
    assert (runs / "old-run").exists()  # the first click only asks
    page.locator("#runs-delete-confirm").click()
    page.locator("#runs-message", has_text="Run old-run deleted").wait_for()
    assert not (runs / "old-run").exists() and _cell(page, "old-run").count() == 0
    assert all((p / "model" / "config.json").exists() for p in lr_runs.values())
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == [
        "busy", "lr-5e-4", "lr-5e-5", "search", "tiny"]
    _shot(page, "deleted")


def test_browser_fine_tuning_lists_runs_trained_from_the_shell(browser, tmp_path, lr_runs, tiny_run):  # noqa: F811
    """Issue 25 #8: the Fine-tuning tab's runs table lists every run of the runs folder, the ones trained from the
    shell (here all of them: engine.train wrote them, no job runner) marked as such and a search's trial too, and
    a click on one shows it: its progress line, results and log note, and no Cancel or Resume (not this app's)."""
    runs = runs_folder(tmp_path, lr_runs, tiny_run)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        with serve_app(runs) as url:
            page.goto(url)
            page.get_by_role("tab", name="Fine-tuning").click()
            table = page.locator("#train-runs")
            table.locator("[role=gridcell]", has_text="search/trial-1").first.wait_for()
            rows = {r[0]: " ".join(r) for r in page.evaluate(  # the cells of each body row, by its data-row
                "[...document.querySelectorAll('#train-runs [role=row]')].map(row => [...row.querySelectorAll("
                "'[role=gridcell][data-row]')].map(td => td.innerText.trim())).filter(r => r.length)")}
            assert set(rows) >= {"lr-5e-5", "lr-5e-4", "tiny", "old-run", "search/trial-1"}, rows
            assert all("done · shell" in rows[n] for n in ("lr-5e-5", "lr-5e-4", "tiny", "old-run"))
            assert "search trial" in rows["search/trial-1"]

            table.locator("[role=gridcell]", has_text="lr-5e-4").first.click()
            page.wait_for_function("(document.querySelector('#run-progress')?.innerText || '').includes('lr-5e-4')")
            progress = page.locator("#run-progress").inner_text()
            assert "done" in progress and "trained from the shell" in progress and "step 20/20" in progress
            page.locator("#train-metrics").wait_for()
            assert "accuracy" in page.locator("#train-metrics").inner_text()
            page.wait_for_function("(document.querySelector('#run-log')?.innerText || '').includes('from the shell')")
            assert page.locator("#train-cancel").is_disabled() and page.locator("#train-resume").is_disabled()
            page.wait_for_selector("#plot-loss img")
            _shot(page, "shell_run_in_fine_tuning")

            table.locator("[role=gridcell]", has_text="search/trial-1").first.click()
            page.wait_for_function("(document.querySelector('#run-progress')?.innerText || '').includes('trial-1')")
            assert "a search's trial" in page.locator("#run-progress").inner_text()
    finally:
        context.close()
