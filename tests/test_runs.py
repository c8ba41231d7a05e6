"""engine.rundir.list_runs and `python -m engine.runs`: one listing of runs for the app, the job runner, the benches
and the shell, which skips whatever else a runs folder holds (the job runner's lock file, uploads/, hidden and stray
entries)."""

import json
import shutil
import subprocess
import sys

from conftest import ROOT


def _runs_folder(tmp_path, tiny_run):
    """A runs folder as the web app leaves it: a finished run, a failed one, a group holding a run, the job
    runner's lock file, stored uploads and stray entries."""
    from engine.rundir import RunDir

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "bbc").symlink_to(tiny_run, target_is_directory=True)
    failed = RunDir(runs / "broken")
    failed.path.mkdir()
    shutil.copy(tiny_run / "config.yaml", failed.config)
    failed.write_status("failed", error="KeyError: 'text'")
    (runs / "search").mkdir()
    (runs / "search" / "trial-1").symlink_to(tiny_run, target_is_directory=True)
    (runs / ".jobs.lock").write_text("")
    (runs / "uploads").mkdir()
    shutil.copy(tiny_run / "config.yaml", runs / "uploads" / "config.yaml")  # a run marker inside uploads/
    (runs / "notes.txt").write_text("not a run")
    (runs / "empty").mkdir()
    return runs


def test_list_runs_finds_runs_only(tmp_path, tiny_run):
    from engine.rundir import list_runs
    from engine.runs.jobs import JobManager
    from ui.common import finished_runs

    runs = _runs_folder(tmp_path, tiny_run)
    assert sorted(str(r.path.relative_to(runs)) for r in list_runs(runs)) == ["bbc", "broken", "search/trial-1"]
    assert sorted(r.path.name for r in list_runs(runs, depth=1)) == ["bbc", "broken"]
    assert sorted(r.path.name for r in list_runs(runs, finished=True)) == ["bbc", "trial-1"]
    assert [p for _, p in finished_runs(runs)] == [str(r.path) for r in list_runs(runs, finished=True)]
    assert JobManager(runs).list_runs() == []  # none of these was started by the job runner (no job.json)


def test_bench_and_cli_list_the_same_runs(tmp_path, tiny_run):
    """`bench/predict_vs_pipeline.py` picked every entry of runs/ as a run and crashed on runs/.jobs.lock."""
    runs = _runs_folder(tmp_path, tiny_run)
    env = {"HUBTUNE_RUNS_DIR": str(runs), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    code = ("import sys; sys.path.insert(0, 'bench'); import predict_vs_pipeline as b; print(b.default_model())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in (str(runs / "bbc"), str(runs / "search" / "trial-1"))

    cli = subprocess.run([sys.executable, "-m", "engine.runs", str(runs), "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    rows = {r["name"]: r for r in map(json.loads, cli.stdout.splitlines())}
    assert set(rows) == {"bbc", "broken", "search/trial-1"}
    assert rows["broken"]["state"] == "failed" and rows["broken"]["error"] == "KeyError: 'text'"
    assert rows["bbc"]["state"] == "done" and 0 < rows["bbc"]["accuracy"] <= 1
    # the column is the run's own best-model metric: accuracy here, f1_micro or r2 for other heads
    assert rows["bbc"]["metric"] == "accuracy" and rows["bbc"]["score"] == rows["bbc"]["accuracy"]
    table = subprocess.run([sys.executable, "-m", "engine.runs", str(runs)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert table.stdout.splitlines()[0].split() == ["name", "state", "model", "data", "validation", "step"]
    assert f"accuracy {rows['bbc']['accuracy']:.4f}" in table.stdout
    bad = subprocess.run([sys.executable, "-m", "engine.runs", str(runs / "nope")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("hubtune: error: runs_dir:")


def test_every_run_of_the_folder_for_the_fine_tuning_tab(tmp_path, tiny_run):
    """Issue 25 #8: the Fine-tuning tab's listing holds every run of the folder, none of these started by the job
    runner, a shell run's folder under any name included ("my run"), and refuses names that leave the folder."""
    import pytest

    from engine.runs.jobs import JobError, JobManager

    runs = _runs_folder(tmp_path, tiny_run)
    (runs / "my run").symlink_to(tiny_run, target_is_directory=True)
    mgr = JobManager(runs)
    listed = {r["name"]: r for r in mgr.every_run()}
    assert set(listed) == {"bbc", "broken", "search/trial-1", "my run"}
    assert {n: (r["origin"], r["state"]) for n, r in listed.items()} == {
        "bbc": ("shell", "done"), "my run": ("shell", "done"), "broken": ("shell", "failed"),
        "search/trial-1": ("search", "done")}
    assert mgr.record("my run")["best_metric"] == listed["bbc"]["best_metric"] is not None
    for bad in ("", "..", "../runs", "/etc", ".jobs.lock", "uploads", "empty", "notes.txt", "search", "a/b/c"):
        with pytest.raises(JobError, match="no run named"):
            mgr.record(bad)
