"""The job runner without the UI: real subprocess runs on real BBC News data, queueing, cancel of a 2-process
DDP run (no orphans), resume to done, and the shown command reproducing the run from a shell."""

import json
import os
import shlex
import sys
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, wait_final
from engine.config import ConfigError
from engine.rundir import RunDir
from engine.runs import jobs
from engine.runs.jobs import JobError, JobManager
from engine.training import launch

# even tinier than conftest's TINY_ARGS: start-up dominates, a few real steps are enough to see the machinery
TINY = {"dataset_name": "bundled:bbc_news", "max_train_samples": 96, "max_eval_samples": 48, "max_seq_length": 32,
        "per_device_train_batch_size": 16, "per_device_eval_batch_size": 48, "max_steps": 6, "learning_rate": 2e-4,
        "logging_steps": 2, "eval_strategy": "steps", "eval_steps": 3, "save_steps": 3, "seed": 7}


@pytest.fixture
def manager(tmp_path):
    """A JobManager whose runs are all ended at teardown, so a failing test never leaves training behind."""
    made = []

    def make():
        made.append(JobManager(tmp_path / "runs"))
        return made[-1]

    yield make
    for mgr in made[:1]:
        for info in mgr.list_runs():
            if info["state"] in ("starting", "running", "queued"):
                mgr.cancel(info["name"], grace=2)


def wait_for(mgr: JobManager, name: str, states, timeout: float = 180, step: int | None = None) -> dict:
    """Poll like the UI does until the run reaches one of `states` (and at least `step`, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mgr.poll()
        info = mgr.info(name)
        if info["state"] in states and (step is None or (info["step"] or 0) >= step):
            return info
        assert info["state"] not in ("failed",) or "failed" in states, (info, _log(mgr, name))
        time.sleep(0.3)
    raise AssertionError(f"{name} did not reach {states} in {timeout}s: {mgr.info(name)}\n{_log(mgr, name)}")


def _log(mgr, name, tail=3000):
    text = (mgr.run_dir(name) / "train.log").read_text()
    return text if tail is None else text[-tail:]


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_prepare_writes_config_and_exact_command(tmp_path):
    mgr = JobManager(tmp_path / "runs")
    job = mgr.prepare(TINY, "cpu_ddp.yaml", name="my run/../x")
    assert job["name"] == "my-run-x"
    run_dir = mgr.run_dir(job["name"])
    assert run_dir.parent == mgr.runs_dir
    cfg_path = run_dir / "config.yaml"
    # `accelerate launch`'s own module, run by this interpreter (shown as `python` when that is the one on PATH)
    assert job["argv"] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           "accelerate_configs/cpu_ddp.yaml", "-m", "engine.train", "--config", str(cfg_path)]
    python = "python" if launch._is_python_on_path(sys.executable) else sys.executable
    assert job["command"] == f"ACCELERATE_USE_CPU=1 {python} -m accelerate.commands.launch --config_file " \
                             f"accelerate_configs/cpu_ddp.yaml -m engine.train --config {cfg_path}"
    from engine.config import TrainConfig

    cfg = TrainConfig.load(cfg_path)
    assert cfg.max_steps == 6 and Path(cfg.output_dir).resolve() == run_dir
    # runs inside the repo get the short relative form the issue shows
    assert launch.command_for(ROOT / "runs" / "r1", "cpu.yaml")[0][-1] == "runs/r1/config.yaml"


def test_bad_input_is_refused_before_launch(tmp_path):
    mgr = JobManager(tmp_path / "runs")
    with pytest.raises(ConfigError) as e:
        mgr.prepare({**TINY, "learning_rate": -1, "per_device_train_batch_size": 0, "dataset_name": None,
                     "train_file": str(tmp_path / "missing.csv")})
    text = "\n".join(e.value.problems)
    assert "learning_rate: must be >=" in text and "per_device_train_batch_size" in text
    assert "train_file: file" in text
    assert list(mgr.runs_dir.iterdir()) == [mgr.runs_dir / ".jobs.lock"], "nothing written for a refused run"
    with pytest.raises(JobError):
        mgr.prepare(TINY, "no_such.yaml")
    for bad in ("..", "../x", "a/b", ""):
        with pytest.raises(JobError):
            mgr.run_dir(bad)


def test_upload_checks(tmp_path, monkeypatch):
    src = tmp_path / "data.csv"
    src.write_text("text,label\nhello,a\nbye,b\n")
    saved = jobs.save_upload(src, tmp_path / "runs", "my data.csv")
    assert saved.parent == tmp_path / "runs" / "uploads" and saved.read_text() == src.read_text()
    assert " " not in saved.name and saved.suffix == ".csv"
    for name in ("../../etc/passwd.csv", "a/b.csv", "..\\x.csv", ".hidden.csv", "~x.csv"):
        with pytest.raises(JobError, match="looks like a path"):
            jobs.save_upload(src, tmp_path / "runs", name)
    with pytest.raises(JobError, match="unsupported extension"):
        jobs.save_upload(src, tmp_path / "runs", "data.xlsx")
    monkeypatch.setattr(jobs, "MAX_UPLOAD_MB", 0.00001)
    with pytest.raises(JobError, match="over the .* MB cap"):
        jobs.save_upload(src, tmp_path / "runs", "data.csv")


def test_accelerate_configs_follow_the_hardware():
    # without GPUs: one process, two (DDP), or two sharding the model (FSDP2 over gloo, tests/test_scaleout.py)
    assert launch.usable_accelerate_configs(gpus=0) == ["cpu.yaml", "cpu_ddp.yaml", "fsdp.yaml"]
    with_gpus = launch.usable_accelerate_configs(gpus=4)
    assert {"single_gpu.yaml", "multi_gpu.yaml", "fsdp.yaml"} <= set(with_gpus)
    assert "multi_node.yaml" not in with_gpus  # a template needing edits, never launched as-is


def test_a_config_this_machine_cannot_run_is_refused_before_any_process(tmp_path, manager):
    mgr = manager()
    refused = {n: why for n, why in launch.accelerate_configs().items() if not why.startswith("ok")}
    assert "multi_node.yaml" in refused  # everywhere; and here the GPU configs, where there is no GPU
    for name, why in refused.items():
        with pytest.raises(JobError) as e:
            mgr.submit(TINY, name, name=f"refused-{name[:-5]}")
        assert str(e.value) == (f"accelerate_config: {name} {why}; choose one of "
                                f"{', '.join(launch.usable_accelerate_configs())}")
    assert not list((tmp_path / "runs").glob("refused-*"))  # no run folder, no process


def test_queue_reattach_and_shell_reproduces(tmp_path, manager):
    runs = tmp_path / "runs"
    mgr = manager()
    a = mgr.submit(TINY, "cpu.yaml", name="first")
    b = mgr.submit({**TINY, "seed": 8}, "cpu.yaml", name="second")
    assert a["state"] in ("starting", "running") and b["state"] == "queued" and b["queue_position"] == 1
    # the process runs exactly the command shown (argv read back from the kernel)
    pid = mgr._job("first")["pid"]
    argv = _cmdline(pid)
    assert argv == mgr._job("first")["argv"] and argv[1:] == shlex.split(a["command"])[2:]
    assert "ACCELERATE_USE_CPU=1 python -m accelerate.commands.launch --config_file accelerate_configs/cpu.yaml" \
        in a["command"].replace(sys.executable, "python")

    # a new manager (a reloaded page, a restarted UI process) sees the same state from disk and drives the queue
    mgr2 = JobManager(runs)
    assert mgr2.info("first")["state"] in ("starting", "running")
    assert mgr2.info("second")["queue_position"] == 1
    info = wait_for(mgr2, "first", ("done",))
    # the queued run starts by itself when the first ends; cancelling it (1 process) ends it at once
    wait_for(mgr2, "second", ("running", "starting"))
    assert mgr2.cancel("second", grace=5)["state"] == "cancelled"
    listed = {r["name"]: r for r in mgr2.list_runs()}
    assert listed["first"]["state"] == "done" and listed["first"]["dataset"] == "bbc_news"
    assert listed["first"]["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert 0 <= listed["first"]["best_metric"] <= 1 and info["accuracy"] is not None
    assert listed["second"]["state"] == "cancelled"

    # the same command typed in a shell reproduces the run (same YAML, same seed -> same metrics)
    first = RunDir(mgr.run_dir("first"))
    before = json.loads(first.metrics.read_text())
    proc = subprocess.run(["bash", "-c", a["command"]], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert first.read_status()["state"] == "done", proc.stderr[-2000:]
    after = json.loads(first.metrics.read_text())
    assert after["validation"]["confusion_matrix"] == before["validation"]["confusion_matrix"]
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-4)


def test_cancel_ddp_kills_every_rank_then_resume_reaches_done(manager):
    import psutil

    mgr = manager()
    cfg = {**TINY, "max_steps": 8, "save_steps": 3, "logging_steps": 1, "per_device_train_batch_size": 8,
           "eval_strategy": "epoch"}
    name = mgr.submit(cfg, "cpu_ddp.yaml", name="ddp")["name"]
    run = RunDir(mgr.run_dir(name))
    deadline = time.monotonic() + 180
    while not run.list_checkpoints():
        assert time.monotonic() < deadline, _log(mgr, name)
        mgr.poll()
        assert mgr.info(name)["state"] in ("starting", "running"), _log(mgr, name)
        time.sleep(0.2)
    launcher = mgr._job(name)["pid"]
    tree = [psutil.Process(launcher)] + psutil.Process(launcher).children(recursive=True)
    ranks = [p for p in tree if "engine.train" in " ".join(p.cmdline()) and p.pid != launcher]
    assert len([p for p in ranks if "accelerate.commands.launch" not in p.cmdline()]) >= 2, [p.cmdline() for p in tree]

    t0 = time.monotonic()
    info = mgr.cancel(name)
    elapsed = time.monotonic() - t0
    gone, alive = psutil.wait_procs(tree, timeout=2)
    assert not alive, f"orphans left: {[p.pid for p in alive]}"
    assert elapsed < 10, elapsed
    assert info["state"] == "cancelled" and run.read_status()["state"] == "cancelled"
    kept = run.list_checkpoints()
    assert kept, "checkpoints are kept"
    cancelled_at = int(kept[-1].name[5:])
    assert cancelled_at < 8

    info = mgr.resume(name)
    assert info["state"] in ("starting", "running")
    wait_for(mgr, name, ("done",), timeout=240)
    steps = [e["step"] for e in run.read_events() if e["type"] == "train"]
    assert steps == list(range(1, 9)), "resumed from the checkpoint, each step logged once"
    assert "resumed from" in _log(mgr, name, tail=None)
    with pytest.raises(JobError, match="only cancelled or failed"):
        mgr.resume(name)


def test_crash_without_final_status_is_marked_failed(manager):
    mgr = manager()
    name = mgr.submit({**TINY, "text_column": "body"}, "cpu.yaml", name="bad")["name"]
    info = wait_for(mgr, name, ("failed",), timeout=120)
    # bad input found by the trainer (a column the data does not have): its one-line error surfaces
    assert "text_column: column 'body' not in" in info["error"], info


def test_a_failed_run_names_its_cause_not_the_launcher(manager, tmp_path, tiny_run):
    """A half-copied model folder (its tokenizer.json cut off) fails inside the training process; the launcher
    then ends with `subprocess.CalledProcessError: ... returned non-zero exit status 1`, which says nothing. The
    run's error is the training process's own exception line, in status.json and as read from train.log."""
    import shutil

    from engine.runs.processes import error_line

    model = tmp_path / "half-copied"
    shutil.copytree(tiny_run / "model", model)
    tokenizer = model / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[: tokenizer.stat().st_size // 2])
    mgr = manager()
    name = mgr.submit({**TINY, "model_name_or_path": str(model)}, "cpu.yaml", name="half")["name"]
    info = wait_final(mgr, name, timeout=120)  # the launcher has exited: its own lines are in the log too
    assert info["state"] == "failed", info
    log = _log(mgr, name, tail=None)
    assert "subprocess.CalledProcessError" in log  # the launcher's line is there, and it is not the one shown
    assert info["error"].startswith("JSONDecodeError: Unterminated string"), info
    assert error_line(mgr.run_dir(name) / "train.log").startswith("json.decoder.JSONDecodeError: Unterminated")
