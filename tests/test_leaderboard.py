"""The runs leaderboard and comparison without the browser, on real tiny BBC News runs that differ in learning rate
(tests/_leaderboard_fixtures.py) and real regression / multi-label runs (tests/test_browser_heads.py's head_runs):
rows read from the run folders, sort and filter, CSV (module and shell), deletion through the job runner (queued and
running runs refused), config diff, curves by step and by epoch on shared axes, metrics side by side per head."""

import csv
import io
import json
import statistics
import subprocess
import sys

import pandas as pd
import pytest

from _leaderboard_fixtures import BUSY, copy_run, lr_runs, runs_folder  # noqa: F401
from conftest import ROOT
from engine.errors import ConfigError
from engine.rundir import RunDir
from engine.runs import compare, leaderboard
from engine.runs.jobs import JobError, JobManager
from _run_view_fixtures import view_runs  # noqa: F401 - real text and image (digits) runs
from test_browser_heads import head_runs  # noqa: F401 - the session's real regression and multi-label runs



@pytest.fixture
def runs(tmp_path, lr_runs, tiny_run):  # noqa: F811
    return runs_folder(tmp_path, lr_runs, tiny_run)


def _json(path):
    return json.loads(path.read_text())


def test_one_row_per_run_read_from_its_files(runs, lr_runs):  # noqa: F811
    rows = {r["name"]: r for r in leaderboard.rows(runs)}
    assert set(rows) == {"lr-5e-5", "lr-5e-4", "tiny", "old-run", "search/trial-1"}
    r = rows["lr-5e-4"]
    metrics, status = _json(lr_runs["lr-5e-4"] / "metrics.json"), _json(lr_runs["lr-5e-4"] / "status.json")
    assert (r["state"], r["task"], r["dataset"], r["metric"]) == ("done", "text-classification", "bbc_news", "accuracy")
    assert r["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and r["best_metric"] == metrics["best_metric"]
    assert (r["learning_rate"], r["batch_size"], r["max_seq_length"], r["step"], r["total_steps"]) == (
        5e-4, 16, 32, 20, 20)
    assert r["duration_s"] == pytest.approx(status["finished_at"] - status["started_at"], abs=0.1)
    speeds = [e["samples_per_second"] for e in RunDir(lr_runs["lr-5e-4"]).read_events() if e["type"] == "train"]
    assert len(speeds) == 4 and r["samples_per_second"] == pytest.approx(statistics.median(speeds), abs=0.01)
    assert rows["search/trial-1"]["group"] == "search" and rows["lr-5e-4"]["group"] == ""
    assert rows["lr-5e-5"]["learning_rate"] == 5e-5 and rows["tiny"]["step"] == 30


def test_best_so_far_of_a_run_without_final_metrics_follows_its_head(runs):
    """A run that stopped before metrics.json: the best of its real evaluations, higher or lower as the metric is."""
    run = RunDir(runs / "old-run")
    run.metrics.unlink()
    run.write_status("failed", error="killed")
    evals = [e for e in run.read_events() if e["type"] == "eval"]
    row = leaderboard.row(run, runs)
    assert (row["state"], row["metric"]) == ("failed", "accuracy")
    assert row["best_metric"] == max(e["eval_accuracy"] for e in evals)
    run.config.write_text(run.config.read_text().replace("metric_for_best_model: auto", "metric_for_best_model: loss"))
    row = leaderboard.row(run, runs)
    assert row["metric"] == "loss" and row["best_metric"] == min(e["eval_loss"] for e in evals)


def test_sort_and_filter(runs):
    RunDir(runs / "old-run").write_status("failed", error="killed")
    rows = leaderboard.rows(runs)
    best = [r["best_metric"] for r in leaderboard.sort_rows(rows, "best_metric")]
    assert best == sorted(best, reverse=True)
    lrs = [r["learning_rate"] for r in leaderboard.sort_rows(rows, "learning_rate", descending=False)]
    assert lrs == sorted(lrs) and lrs[0] == 5e-5
    assert [r["name"] for r in leaderboard.sort_rows(rows, "name", descending=False)][0] == "lr-5e-4"
    assert {r["name"] for r in leaderboard.filter_rows(rows, "LR-5e")} == {"lr-5e-5", "lr-5e-4"}
    assert {r["name"] for r in leaderboard.filter_rows(rows, "search 5e")} == set()  # every word must match
    assert {r["name"] for r in leaderboard.filter_rows(rows, "search")} == {"search/trial-1"}
    assert [r["name"] for r in leaderboard.filter_rows(rows, states=["failed"])] == ["old-run"]
    assert leaderboard.filter_rows(rows, tasks=["image-classification"]) == []
    assert len(leaderboard.filter_rows(rows, "minilm bbc", ["done"], ["text-classification"])) == 4
    with pytest.raises(ConfigError, match="sort: unknown column 'speed'"):
        leaderboard.sort_rows(rows, "speed")
    missing = leaderboard.sort_rows([{"best_metric": None, "name": "a"}, *rows], "best_metric")
    assert missing[-1]["name"] == "a"  # runs without a value come last, either way
    assert leaderboard.sort_rows(missing, "best_metric", descending=False)[-1]["name"] == "a"


def test_csv_from_the_module_the_shell_and_the_tab(runs, tmp_path):
    rows = leaderboard.rows(runs)
    back = list(csv.DictReader(io.StringIO(leaderboard.to_csv(rows))))
    assert [r["name"] for r in back] == [r["name"] for r in rows] and list(back[0]) == list(leaderboard.COLUMNS)
    assert [float(r["best_metric"]) for r in back] == [r["best_metric"] for r in rows]

    out = tmp_path / "board.csv"
    cmd = [sys.executable, "-m", "engine.leaderboard", str(runs), "--sort", "best_metric", "--csv", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"wrote 5 runs to {out}", done.stderr
    shell = list(csv.DictReader(out.open()))
    assert [float(r["best_metric"]) for r in shell] == sorted((r["best_metric"] for r in rows), reverse=True)
    printed = subprocess.run([*cmd[:4], "--filter", "lr-5e-4"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and printed.stdout.splitlines()[0].split()[:3] == ["name", "state", "task"]
    assert [line.split()[0] for line in printed.stdout.splitlines()[1:]] == ["lr-5e-4"]
    for bad, line in (([str(tmp_path / "nope")], "is not a folder"), ([str(runs), "--sort", "speed"], "invalid choice")):
        refused = subprocess.run([sys.executable, "-m", "engine.leaderboard", *bad], cwd=ROOT, capture_output=True,
                                 text=True, timeout=60)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and line in refused.stderr

    from ui.runs_tab import csv_file

    text = open(csv_file(rows), encoding="utf-8").read()
    assert "path" not in text.splitlines()[0].split(",") and str(tmp_path) not in text  # no server paths
    assert text.count("\n") == 6 and csv_file(rows) == csv_file(rows)  # one file per distinct content


def test_delete_refuses_queued_and_running_runs_and_removes_only_the_run(runs, tiny_run, lr_runs):  # noqa: F811
    mgr = JobManager(runs)
    busy, waiting = mgr.submit(BUSY, name="busy")["name"], mgr.submit(BUSY, name="waiting")["name"]
    try:
        assert mgr.info(busy)["state"] in ("starting", "running") and mgr.info(waiting)["state"] == "queued"
        for name, state in ((busy, "(starting|running)"), (waiting, "queued")):
            with pytest.raises(JobError, match=f"delete: run '{name}' is {state}; cancel it first"):
                mgr.delete(name)
            assert (runs / name / "config.yaml").exists()
    finally:
        mgr.cancel(waiting, grace=2)
        mgr.cancel(busy, grace=2)
    mgr.delete(busy)  # cancelled now: it goes, and the job runner no longer lists it
    assert not (runs / busy).exists() and [r["name"] for r in mgr.list_runs()] == [waiting]

    mgr.delete("tiny")  # a linked run: the link goes, never what it points to
    assert not (runs / "tiny").exists() and (tiny_run / "metrics.json").exists()
    mgr.delete("search/trial-1")
    assert (runs / "search").is_dir() and (lr_runs["lr-5e-4"] / "model" / "config.json").exists()
    copy_run(lr_runs["lr-5e-4"], runs / "search" / "trial-2")
    mgr.delete("old-run", check_only=True)  # passes, removes nothing
    assert (runs / "old-run" / "metrics.json").exists()
    for name in ("old-run", "search/trial-2"):
        mgr.delete(name)
        assert not (runs / name).exists()
    assert sorted(r["name"] for r in leaderboard.rows(runs)) == ["lr-5e-4", "lr-5e-5", "waiting"]
    for bad in ("nope", "../runs", "search", "uploads", ""):
        with pytest.raises(JobError, match="delete: no run named"):
            mgr.delete(bad)


def test_config_diff_shows_only_the_keys_that_differ(runs):
    names = {n: runs / n for n in ("lr-5e-5", "lr-5e-4")}
    assert compare.config_diff(names) == [{"key": "learning_rate", "lr-5e-5": 5e-5, "lr-5e-4": 5e-4}]
    diff = {d["key"]: d for d in compare.config_diff({**names, "tiny": runs / "tiny"})}
    assert set(diff) == {"learning_rate", "max_steps", "eval_steps", "save_steps", "report_to"}
    assert (diff["max_steps"]["tiny"], diff["max_steps"]["lr-5e-5"], diff["report_to"]["tiny"]) == (30, 20,
                                                                                                   "tensorboard")
    old = RunDir(runs / "old-run")  # an older run's config that lacks a key
    old.config.write_text("".join(line for line in old.config.read_text().splitlines(keepends=True)
                                  if not line.startswith("attention_dropout:")))
    diff = {d["key"]: d for d in compare.config_diff({"old-run": runs / "old-run", "lr-5e-5": runs / "lr-5e-5"})}
    assert diff == {"attention_dropout": {"key": "attention_dropout", "old-run": compare.NOT_SET, "lr-5e-5": 0.0}}

    # text_column: null (the data's 'text' column, found by name) and text are the same column on the same data
    # (old-run is a real copy: the other runs are links to the session's runs, which other tests read)
    pair = {"old-run": runs / "old-run", "lr-5e-5": runs / "lr-5e-5"}
    old.config.write_text(old.config.read_text().replace("text_column: null", "text_column: text"))
    assert "text_column: text" in old.config.read_text()
    assert [d["key"] for d in compare.config_diff(pair)] == ["attention_dropout"]
    old.config.write_text(old.config.read_text().replace("text_column: text", "text_column: body"))
    assert sorted(d["key"] for d in compare.config_diff(pair)) == ["attention_dropout", "text_column"]  # another


def test_curves_by_step_and_by_epoch_on_shared_axes(runs):
    run = RunDir(runs / "lr-5e-5")
    train = [e for e in run.read_events() if e["type"] == "train"]
    by_step = compare.curves(run.path, "step")
    assert by_step["train_loss"] == ([e["step"] for e in train], [e["loss"] for e in train])
    assert by_step["eval_loss"][0] == [10, 20] and by_step["metric"][0] == [10, 20]
    assert by_step["metric_name"] == "accuracy"
    by_epoch = compare.curves(run.path, "epoch")
    assert by_epoch["train_loss"][0] == [e["epoch"] for e in train] and by_epoch["train_loss"][1] == [
        e["loss"] for e in train]
    assert by_epoch["eval_loss"][0][-1] == pytest.approx(train[-1]["epoch"])  # the last eval is at the last step
    assert by_epoch["eval_loss"][0][0] == pytest.approx(train[-1]["epoch"] / 2, abs=1e-3)  # epochs: 4 decimals
    with pytest.raises(ValueError, match="x: 'time'"):
        compare.curves(run.path, "time")

    data = {n: compare.curves(runs / n, "epoch") for n in ("lr-5e-5", "lr-5e-4")}
    loss, metric = compare.comparison_figures(data, "epoch", "percent")
    (loss_ax,), (metric_ax,) = loss.axes, metric.axes
    assert len(loss_ax.lines) == 4 and len(metric_ax.lines) == 2  # train + validation per run; a metric per run
    assert {tuple(line.get_xdata()) for line in metric_ax.lines} == {tuple(data["lr-5e-5"]["metric"][0])}
    assert {tuple(line.get_ydata()) for line in metric_ax.lines} == {tuple(d["metric"][1]) for d in data.values()}
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["lr-5e-5", "lr-5e-4", "train", "validation"]
    assert loss_ax.get_xlabel() == "epoch" and metric_ax.get_title(loc="left") == "validation accuracy"


def test_per_class_metrics_side_by_side(runs, lr_runs):  # noqa: F811
    from ui import heads_view

    names = ("lr-5e-5", "lr-5e-4")
    metrics = {n: _json(lr_runs[n] / "metrics.json") for n in names}
    side = heads_view.side_by_side(metrics)
    assert list(side.columns) == ["label", "F1 · lr-5e-5", "F1 · lr-5e-4", "precision · lr-5e-5",
                                  "precision · lr-5e-4", "recall · lr-5e-5", "recall · lr-5e-4"]
    assert side["label"].tolist() == ["business", "entertainment", "politics", "sports", "tech"]
    for n in names:
        per_class = metrics[n]["validation"]["per_class"]
        assert side[f"F1 · {n}"].tolist() == [round(per_class[k]["f1-score"], 4) for k in side["label"]]
        assert side[f"recall · {n}"].tolist() == [round(per_class[k]["recall"], 4) for k in side["label"]]


def test_per_label_and_regression_metrics_side_by_side(head_runs, lr_runs):  # noqa: F811
    from ui import heads_view

    mesh = _json(head_runs / "mesh" / "metrics.json")
    side = heads_view.side_by_side({"a": mesh, "b": mesh})
    assert side["label"].tolist() == list(mesh["validation"]["per_class"])
    assert "threshold · a" in side.columns and side["threshold · b"].tolist() == [
        round(mesh["validation"]["thresholds"][k], 4) for k in side["label"]]
    vader = _json(head_runs / "vader" / "metrics.json")
    side = heads_view.side_by_side({"vader": vader, "again": vader})
    assert side["metric"].tolist() == ["R²", "RMSE", "MAE", "MSE", "Pearson r", "Spearman rho"]
    assert side["vader"].tolist() == [round(vader["validation"][k], 4) for k in ("r2", "rmse", "mae", "mse",
                                                                                   "pearson", "spearman")]
    mixed = heads_view.side_by_side({"vader": vader, "bbc": _json(lr_runs["lr-5e-5"] / "metrics.json")})
    rows = dict(zip(mixed["metric"], zip(mixed["vader"], mixed["bbc"])))
    assert pd.isna(rows["accuracy"][0]) and pd.isna(rows["R²"][1])  # each run has its own head's metrics only
    assert rows["R²"][0] == round(vader["validation"]["r2"], 4)


def test_max_length_is_shown_for_text_runs_only(view_runs):  # noqa: F811
    """An image run's config keeps the default max_seq_length (128); it reads no text, so its row shows none."""
    digits = leaderboard.row(RunDir(view_runs / "digits"))
    assert digits["task"] == "image-classification" and digits["max_seq_length"] is None
    assert read_yaml_value(view_runs / "digits", "max_seq_length") == 128  # what the row no longer shows
    text = leaderboard.row(RunDir(view_runs / "one-eval"))
    assert text["task"] == "text-classification" and text["max_seq_length"] == 32


def read_yaml_value(run_dir, key):
    from engine.rundir import read_config

    return read_config(RunDir(run_dir)).get(key)


def test_a_multi_label_run_has_one_best_number_everywhere(tmp_path, head_runs):  # noqa: F811
    """Issue 25 #2: the tuned-threshold micro F1 the saved model delivers is the run's best number in the shell's two
    listings, the leaderboard and its CSV, the Fine-tuning runs table and its header, and the run's chart (beside
    the 0.5-threshold curve, each labelled); a run folder written by older code (best_metric at 0.5) gives it too."""
    from engine.runs.listing import summary
    from ui import run_view

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "mesh").symlink_to(head_runs / "mesh", target_is_directory=True)
    metrics = _json(head_runs / "mesh" / "metrics.json")
    tuned = metrics["validation"]["f1_micro"]
    evals = [e["eval_f1_micro"] for e in RunDir(head_runs / "mesh").read_events() if e["type"] == "eval"]
    assert max(evals) != tuned  # the two numbers the issue saw really differ in this run
    old = copy_run(head_runs / "mesh", runs / "old-mesh")  # as older code wrote it: best_metric at 0.5 thresholds
    (old / "metrics.json").write_text(json.dumps({**{k: v for k, v in metrics.items() if k != "best_eval_metric"},
                                                  "best_metric": max(evals)}))

    for name in ("mesh", "old-mesh"):
        run = RunDir(runs / name)
        assert (summary(run)["score"], leaderboard.row(run, runs)["best_metric"]) == (tuned, tuned)
    board = list(csv.DictReader(io.StringIO(leaderboard.to_csv(leaderboard.rows(runs)))))
    assert [float(r["best_metric"]) for r in board] == [tuned, tuned]
    shell = subprocess.run([sys.executable, "-m", "engine.runs", str(runs), "--json"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert [json.loads(line)["score"] for line in shell.stdout.splitlines()] == [tuned, tuned], shell.stderr
    printed = subprocess.run([sys.executable, "-m", "engine.leaderboard", str(runs)], cwd=ROOT, capture_output=True,
                             text=True, timeout=60).stdout
    assert printed.count(f"f1_micro {tuned:.4f}") == 2

    info = JobManager(head_runs).info("mesh")  # the Fine-tuning tab's runs table and progress line
    assert (info["metric"], info["best_metric"]) == ("f1_micro", tuned)
    assert f"f1_micro {tuned:.3f}" in run_view.runs_table([info])["best metric"].tolist()
    assert f"micro F1 {tuned:.3f}" in run_view.progress_html(info) and "(tuned thresholds)" in run_view.progress_html(
        info)
    chart = {s["label"]: s for s in run_view.curve_series(runs / "old-mesh")["metrics"]}
    assert chart["micro F1 at 0.5 thresholds"]["y"] == evals  # the evaluations during training, labelled as such
    assert chart["micro F1, tuned thresholds"]["y"] == [tuned]  # the saved model's, marked apart
    assert chart["micro F1, tuned thresholds"]["x"] == [metrics["best_step"]]
    from engine.rundir import best_metric  # the one function all of these read

    assert best_metric(RunDir(runs / "old-mesh"))[:3] == ("f1_micro", tuned, metrics["best_step"])
