"""The run view of the Fine-tuning tab on real run directories: charts, tables, gallery, confusion matrix, log,
progress phases, the failed-run panel, Cancel/Resume states and the one-class warning (UI and model card)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from _run_view_fixtures import view_runs  # noqa: F401 - a fixture

BLUE = (0x25, 0x63, 0xEB)  # engine.hub.plots' first series colour


def _png(fig) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return np.asarray(Image.open(buf).convert("RGB")).astype(int)


def _pixels(img: np.ndarray, rgb, tol: int = 40) -> int:
    return int((np.abs(img - np.array(rgb)).sum(-1) < tol).sum())


def _draw(fig):
    """Lay the figure out as savefig would (text sizes and tick labels exist only then); returns the renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _tick_labels(fig, axis: str) -> list[str]:
    _draw(fig)
    ax = fig.axes[0]
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    return [t.get_text() for t in ticks if lo <= (t.get_position()[0 if axis == "x" else 1]) <= hi]


def _info(runs, name):
    from engine.runs.jobs import JobManager

    return JobManager(runs).info(name)


def test_one_evaluation_shows_its_point(view_runs):
    from ui import run_view

    run = view_runs / "one-eval"
    series = run_view.curve_series(run)["metrics"]
    assert [len(s["x"]) for s in series] == [1, 1]  # accuracy and macro F1 at the one evaluation
    fig = run_view.curves(run)["metrics"]
    lines = [line for line in fig.axes[0].get_lines() if len(line.get_xdata()) == 1]
    assert len(lines) == 2 and all(line.get_marker() == "o" for line in lines)
    assert _pixels(_png(fig), BLUE) > 30  # the accuracy point is really drawn, not an empty line of one point
    assert f"{series[0]['y'][0]:.1%}" in [t.get_text() for t in fig.axes[0].texts]  # its value beside it


def test_empty_charts_say_no_data_yet():
    from ui import run_view

    for fig in run_view.curves(None).values():
        assert [t.get_text() for t in fig.axes[0].texts] == ["no data yet"]
        assert not fig.axes[0].axison  # no axes with a meaningless range (the old chart read "-Infinity")


def test_step_ticks_are_integers_and_axis_labels_short(tiny_run):
    from ui import run_view

    charts = run_view.curves(tiny_run)
    for name, fig in charts.items():
        xs = _tick_labels(fig, "x")
        assert xs and all(re.fullmatch(r"\d+", x) for x in xs), (name, xs)
        ys = _tick_labels(fig, "y")
        assert ys and all(len(y) <= 7 for y in ys), (name, ys)
        assert len(set(ys)) == len(ys), (name, ys)  # enough digits to tell ticks apart
    assert all(y.endswith("%") for y in _tick_labels(charts["metrics"], "y"))
    assert any("e-" in y for y in _tick_labels(charts["lr"], "y"))


def test_tick_format():
    from engine.hub.plots import _fmt

    assert [_fmt(v, "plain", 0.005) for v in (1.605, 1.61)] == ["1.605", "1.610"]
    assert [_fmt(v, "percent", 0.25) for v in (0, 0.25)] == ["0%", "25%"]
    assert [_fmt(v, "sci", 2.5e-6) for v in (3.5e-5, 3.75e-5, 0)] == ["3.5e-5", "3.75e-5", "0"]
    assert _fmt(2400, "plain", 500) == "2.4k"


def test_results_tables(view_runs):
    from ui import run_view

    run = view_runs / "one-eval"
    res = run_view.results(run)
    metrics = json.loads((run / "metrics.json").read_text())["validation"]
    assert list(res["headline"].columns) == ["metric", "value"]
    assert dict(res["headline"].values.tolist())["accuracy"] == f"{metrics['accuracy']:.4f}"
    assert list(res["per_class"].columns) == ["label", "precision", "recall", "f1", "support"]
    assert len(res["per_class"]) == len(metrics["labels"])
    wrong = res["misclassified"]
    assert list(wrong.columns) == ["label", "prediction", "score", "text"]  # the short columns first
    lines = [json.loads(x) for x in (run / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(wrong) == sum(x["label"] != x["prediction"] for x in lines) > 0 and res["total"] == len(lines)
    assert (wrong.label != wrong.prediction).all() and list(wrong.score) == sorted(wrong.score, reverse=True)
    assert wrong.text.str.len().max() <= 240
    assert res["images"] is None  # a text run: the table, no gallery


def test_one_class_warning_in_results_and_card(view_runs, tiny_run):
    from engine.hub.card import build_model_card
    from ui import run_view

    res = run_view.results(view_runs / "one-eval")
    assert res["warning"] and re.search(r"predicts '\w+' for (59|60) of 60 validation examples", res["warning"])
    card = str(build_model_card(view_runs / "one-eval"))
    results = card[card.index("## Results"):card.index("## Usage")]
    assert "Warning: this model does not tell the classes apart" in results and " of 60 validation" in results
    assert run_view.results(tiny_run)["warning"] is None
    assert "does not tell the classes apart" not in str(build_model_card(tiny_run))


def test_card_names_an_uploaded_file_as_the_user_named_it(tiny_run, tmp_path):
    """An upload is stored as runs/uploads/<time stamp>-<name>; the card, the runs list and the page say <name>."""
    import shutil

    import yaml

    from engine.hub.card import build_model_card
    from engine.runs.jobs import data_label
    from ui.common import hide_server_paths

    run = shutil.copytree(tiny_run, tmp_path / "uploaded-run", ignore=shutil.ignore_patterns("checkpoint*"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg.update(dataset_name=None, train_file=str(tmp_path / "uploads" / "20261207-101530-reviews_odd.csv"))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    card = str(build_model_card(run))
    assert "local file reviews_odd.csv" in card and "20261207" not in card
    assert data_label(cfg) == "reviews_odd"
    assert hide_server_paths(f"cannot read '{cfg['train_file']}'") == "cannot read 'reviews_odd.csv'"


def test_image_run_shows_misclassified_pictures(view_runs):
    from ui import run_view

    run = view_runs / "digits"
    items = run_view.misclassified_images(run)
    index = [json.loads(x) for x in (run / "samples" / "index.jsonl").read_text().splitlines()]
    wrong = [x for x in index if x["kind"] == "misclassified"]
    assert len(items) == len(wrong) > 0
    for (path, caption), row in zip(items, wrong):
        assert path.endswith(row["path"]) and Image.open(path).size == (8, 8)
        assert caption == f"true {row['label']} → predicted {row['prediction']} ({row['score']:.2f})"
    pictures = run_view.gallery_items(items[:3])
    assert all(im.size == (192, 192) and caption.startswith("true ") for im, caption in pictures)
    assert run_view.results(run)["images"] == items


def _label_boxes(fig):
    renderer = _draw(fig)
    ax = fig.axes[0]
    return ([t.get_window_extent(renderer) for t in ax.get_xticklabels()],
            [t.get_window_extent(renderer) for t in ax.get_yticklabels()], ax.texts)


def _no_overlap(boxes) -> bool:
    return not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_confusion_matrix_10_classes(view_runs):
    from ui import run_view

    path = run_view.confusion_png(view_runs / "digits")
    assert path.endswith("confusion_matrix-v2.png")
    width, height = Image.open(path).size
    assert 450 <= width <= 700 and height <= 760  # shown at about its own size in the ~680 px results area
    assert run_view.confusion_png(view_runs / "digits") == path  # cached


def test_confusion_matrix_20_classes_is_legible(view_runs):
    """No offline data set has 20 real classes: the digits run's real 10x10 matrix is tiled into a 20x20 one with
    long class names (the drawing depends only on the matrix and the names)."""
    from engine.hub.plots import DPI, confusion_matrix_figure

    val = json.loads((view_runs / "digits" / "metrics.json").read_text())["validation"]
    cm = val["confusion_matrix"]
    matrix = [[cm[i % 10][j % 10] * (3 if i // 10 == j // 10 else 1) for j in range(20)] for i in range(20)]
    labels = [f"question type {i}: description" if i % 4 == 0 else f"class_{i}" for i in range(20)]
    fig = confusion_matrix_figure(matrix, labels)
    width_px = fig.get_size_inches()[0] * DPI
    assert width_px <= 720  # fits the results area without being scaled down
    xs, ys, cells = _label_boxes(fig)
    assert len(cells) == 400 and min(t.get_fontsize() for t in cells) >= 7  # >= 9.7 px at 100 dpi
    assert min(t.get_fontsize() for t in fig.axes[0].get_yticklabels()) >= 7.5
    assert _no_overlap(ys)
    ax = fig.axes[0]
    x0, x1 = (ax.transData.transform((j, 0))[0] for j in (0, 1))
    rotation = ax.get_xticklabels()[0].get_rotation()
    label_px = ax.get_xticklabels()[0].get_fontsize() * DPI / 72
    # slanted labels are parallel: the gap between two neighbours is the tick spacing times sin(angle)
    assert (x1 - x0) * (np.sin(np.radians(rotation)) if rotation else 1) > label_px * 1.2
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert max(map(len, names)) <= 14 and "…" in names[0] and len(set(names)) == 20  # shortened, still distinct
    renderer = _draw(fig)
    cell_px = width_px / 20 * 0.6
    assert all(t.get_window_extent(renderer).width < cell_px * 1.6 for t in cells)  # counts stay in their cells


def test_log_box_shows_its_end(view_runs):
    from ui import run_view

    run = view_runs / "one-topic"
    tail = run_view.log_tail(run)
    last = tail.splitlines()[-1]
    shown = run_view.log_html(run)
    assert "flex-direction:column-reverse" in shown  # the box opens scrolled to its bottom
    assert shown.rstrip().endswith("</pre></div>") and __import__("html").escape(last) in shown
    assert "(no log yet)" in run_view.log_html(None)


def test_failed_run_panel_and_buttons(view_runs):
    from ui import run_panel, run_view

    info = _info(view_runs, "one-topic")
    assert info["state"] == "failed" and "only one class" in info["error"]
    panel = run_view.failure_html(info)
    assert "id='run-error'" in panel and "Run failed" in panel and "log below" in panel
    assert "only one class (sports) in sports_only.csv" in panel and str(view_runs) not in panel  # no server path
    assert "it starts again from the beginning" in panel
    assert run_view.failure_html(_info(view_runs, "one-eval")) is None
    status = run_panel._status(info)
    assert status[1]["visible"] is True  # the panel
    drawings, _ = run_panel._drawings(info, {})
    assert drawings[-7]["visible"] is False  # the results area stays hidden
    cancel, resume = status[2], status[3]
    assert cancel["interactive"] is False and resume["interactive"] is True and resume["variant"] == "primary"


@pytest.mark.parametrize("state,cancel,resume", [("queued", True, False), ("starting", True, False),
                                                  ("running", True, False), ("done", False, False),
                                                  ("failed", False, True), ("cancelled", False, True)])
def test_buttons_follow_the_state(state, cancel, resume):
    from ui.run_panel import _buttons

    c, r = _buttons({"state": state})
    assert (c["interactive"], r["interactive"]) == (cancel, resume)
    assert c["variant"] == ("stop" if cancel else "secondary")  # never bright red when there is nothing to stop


def test_progress_shows_the_phase(view_runs):
    from ui.run_view import progress_html

    done = _info(view_runs, "one-eval")
    running = {**done, "state": "running", "step": 3, "total_steps": 3, "eta_seconds": 0.0}
    for phase, words in (("evaluating", "step 3/3 · <span id='run-phase' data-phase='evaluating'>evaluating"),
                         ("checkpointing", "saving a checkpoint"), ("saving", "saving the model")):
        shown = progress_html({**running, "phase": phase})
        assert words in shown and "ETA" not in shown and "data-busy='true'" in shown
    assert "data-phase='finishing'" in progress_html({**running, "phase": "training"})  # not "ETA 0m00s"
    mid = progress_html({**running, "step": 1, "eta_seconds": 80, "phase": "training"})
    assert "ETA 1m20s" in mid and "data-busy" not in mid and "width:33.3%" in mid
    assert "pushing to the Hub" in progress_html({**done, "phase": "pushing", "hub_push": "pushing"})
    assert "data-busy" not in progress_html(done) and "data-state='done'" in progress_html(done)
    assert "loading model and data" in progress_html({**done, "state": "starting", "step": None})


def test_unchanged_run_is_not_redrawn(view_runs):
    """Every 2 s the timer refreshes every open page: charts, log and results are sent only when files changed."""
    import gradio as gr

    from ui import run_panel

    info = _info(view_runs, "digits")
    first, drawn = run_panel._drawings(info, {})
    assert first[0] is not None and first[-7]["visible"] is True
    again, drawn2 = run_panel._drawings(info, drawn)
    assert drawn2 == drawn and again == [gr.skip()] * 12


def test_refresh_queued_before_a_pick_shows_the_picked_run(view_runs):
    """Gradio reads a timer tick's picker value when the tick is queued and the page's State when it runs: a tick
    queued before the user picked a run (carrying the run left, or none yet) must show the picked run, else its
    late answer puts the old run back in the picker and on screen for good."""
    import gradio as gr

    import app
    from ui.train_tab import manager

    demo = app.build_app(runs_dir=view_runs)
    fns = {f.api_name: f.fn for f in demo.fns.values()}
    manager(view_runs).stop_scheduler()  # the handlers only read the runs folder
    runs, picker, progress, *_ = fns["train_refresh"]("one-eval", "one-topic")
    assert picker["value"] == "one-topic" and "one-topic" in progress and "data-state='failed'" in progress
    assert fns["train_refresh"](None, "digits")[1]["value"] == "digits"  # a fresh page's first tick, late
    assert fns["train_refresh"]("one-eval", None)[1]["value"] == "one-eval"  # nothing picked yet: as queued
    drawn = fns["train_refresh_drawings"]("one-eval", {}, "digits")[-1]
    assert drawn["results"][0] == "digits"
    shown = fns["train_select_run"]("one-topic", {})
    assert shown[-1] == "one-topic"  # remembered as the page's pick

    # a tick that hides the results (its run is not done: it may have read the run left just before a pick, and
    # land after the picked run was drawn) makes the next drawing tick draw them again, not leave them hidden
    ticked = fns["train_refresh"]("one-eval", "one-topic", drawn)
    assert ticked[-2]["visible"] is False and ticked[-1]["results"] is None
    assert ticked[-1]["curves"] == drawn["curves"]  # what else was drawn stays drawn
    redrawn = fns["train_refresh_drawings"]("one-eval", ticked[-1], "digits")
    assert redrawn[5]["visible"] is True and redrawn[-1]["results"][0] == "digits"
    assert fns["train_refresh"]("one-eval", "digits", drawn)[-2:] == (gr.skip(), gr.skip())  # done: untouched

def test_progress_follows_the_steps_between_train_events(tmp_path, monkeypatch, view_runs):
    """Issue 25 #6: status.json (the progress line's source) says each step as it ends, not only at train events
    (every logging_steps: a 6-step run logging every 100 said "step 0/6" until its end), and its empty charts say
    when their first point comes; a search's running trial shows its run's step, not the "starting" its search
    wrote into trials.json when the trial began."""
    import shutil

    from _run_view_fixtures import ONE_EVAL_ARGS
    from engine.rundir import RunDir, atomic_write_json
    from engine.search import jobs as search_jobs
    from engine.training import evaluation
    from engine.training.run import main
    from ui import run_view, search_panel

    monkeypatch.setattr(evaluation, "PROGRESS_SECONDS", 0, raising=False)  # every step, to count them exactly
    written = []
    plain = RunDir.write_status

    def recording(self, state, **fields):
        if state == "running" and "step" in fields:
            written.append(fields["step"])
        return plain(self, state, **fields)

    monkeypatch.setattr(RunDir, "write_status", recording)
    args = [*ONE_EVAL_ARGS, "--max_steps", "6", "--logging_steps", "100", "--save_steps", "1000"]
    assert main([*args, "--output_dir", str(tmp_path / "run"), "--learning_rate", "1e-4"]) == 0
    assert written == [0, 1, 2, 3, 4, 5, 6]  # the start, then every step (6: the last step's train event)
    assert [e["step"] for e in RunDir(tmp_path / "run").read_events() if e["type"] == "train"] == [6]
    early = RunDir(tmp_path / "early")  # the same run before its first train event: its charts say when it comes
    early.path.mkdir()
    shutil.copy(RunDir(tmp_path / "run").config, early.config)
    early.write_status("running", step=2, total_steps=6)
    charts = run_view.curves(early.path)
    assert [t.get_text() for t in charts["loss"].axes[0].texts] == ["no data yet", "first point at step 6"]
    assert [t.get_text() for t in charts["metrics"].axes[0].texts] == ["no data yet", "first evaluation after epoch 1"]
    early.write_status("cancelled")  # stopped before it: no point is coming
    assert [t.get_text() for t in run_view.curves(early.path)["loss"].axes[0].texts] == ["no data yet"]

    search = tmp_path / "search-1"
    trial = RunDir(shutil.copytree(view_runs / "one-eval", search / "trial-0",
                                   ignore=shutil.ignore_patterns("model", "checkpoints")))
    trial.write_status("running", step=2, total_steps=3)  # as the trial's trainer writes it mid-run
    atomic_write_json(search / "trials.json", {"metric": "accuracy", "direction": "maximize", "rows": [
        {"trial": 0, "run": "trial-0", "state": "running", "params": {"learning_rate": 1e-4}, "value": None,
         "duration_s": None, "note": "starting", "started_at": None}]})  # as the search wrote it at the start
    rows = search_jobs.trials(search)["rows"]
    assert rows[0]["note"] == "step 2/3"
    assert "trial-0 running: step 2/3" in search_panel._status_html("search-1", {"state": "running"}, {}, rows)
