"""Crash-proof runs (issue 8, items 1 and 7): SIGKILL at exact points (the HUBTUNE_FAULT test hook in
engine/training/checkpoint.py), one after another on the same run, each observed through the job runner as `failed` with
an error line and resumed with `resume_from_checkpoint: latest`; the run ends with weights and metrics identical to an
uninterrupted one. A half-written checkpoint is never picked as the latest and no reader ever sees a torn file."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import ROOT, train_args, wait_final
from engine.config import parse_args
from engine.rundir import RunDir, atomic_write_json
from engine.runs.jobs import JobManager
from engine.training.run import main

# 8 steps of 8 BBC News articles, a checkpoint and an evaluation every 4 steps: a few seconds of training
EXTRA = ["--max_train_samples", "96", "--max_eval_samples", "40", "--max_seq_length", "24",
         "--per_device_train_batch_size", "8", "--max_steps", "8", "--save_steps", "4", "--eval_steps", "4",
         "--logging_steps", "1"]
# differ between an uninterrupted run and a resumed one by nature
SESSION_KEYS = {"train_seconds", "train_samples_per_second", "train_steps_this_session"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every crashed run must end identical to."""
    out = tmp_path_factory.mktemp("crash") / "ref"
    assert main(train_args(out, *EXTRA)) == 0
    return out


def assert_identical(ref: Path, out: Path, eval_steps=(4, 8), total=8) -> None:
    """Same tensors bit for bit, same metrics (timings aside), every step and evaluation logged exactly once."""
    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (ref, out))
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert {k: v for k, v in ma.items() if k not in SESSION_KEYS} == \
           {k: v for k, v in mb.items() if k not in SESSION_KEYS}
    events = RunDir(out).read_events()
    assert [e["step"] for e in events if e["type"] == "train"] == list(range(1, total + 1))
    assert [e["step"] for e in events if e["type"] == "eval"] == list(eval_steps)
    assert (ref / "eval_predictions.jsonl").read_text() == (out / "eval_predictions.jsonl").read_text()


class TornReadWatcher:
    """Reads the run's JSON/YAML files as fast as it can while the run is written and killed; collects every read
    that does not parse (a torn or half-written file)."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.bad, self.reads = run_dir, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        parsers = {"status.json": json.loads, "metrics.json": json.loads, "job.json": json.loads,
                   "config.yaml": yaml.safe_load}
        while not self._stop.is_set():
            for name, parse in parsers.items():
                try:
                    text = (self.run_dir / name).read_text()
                except FileNotFoundError:
                    continue
                self.reads += 1
                try:
                    assert parse(text) is not None
                except Exception as e:  # noqa: BLE001 - any failure to parse is what this watcher records
                    self.bad.append(f"{name}: {type(e).__name__} on {len(text)} chars")
            for ckpt in (self.run_dir / "checkpoints").glob("step-*"):
                state = ckpt / "trainer_state.json"
                if not ckpt.name.endswith((".tmp", ".deleting")) and ckpt.is_dir() and not state.exists():
                    # a directory under its final name must already be complete (the rename is the commit)
                    if ckpt.exists():
                        self.bad.append(f"{ckpt.name} visible without trainer_state.json")
            time.sleep(0.02)  # ~50 rounds a second; faster only takes CPU from the run it watches


# (fault, the checkpoint `latest` must pick afterwards); each resumes the run the previous one killed
CHAIN = [
    ("after_step:6", "step-4"),        # between checkpoints: steps 5-6 are lost and replayed
    ("mid_checkpoint:8", "step-4"),    # step-8.tmp holds every file (trainer_state.json too), not yet renamed
    ("after_checkpoint:8", "step-8"),  # the last checkpoint is in place; the resumed run has no step left to do
    ("mid_final_save:8", "step-8"),    # model.tmp has weights but no tokenizer; model/ must not exist
]


def test_killed_at_four_points_fails_clearly_then_resumes_identical(reference, tmp_path, monkeypatch):
    mgr = JobManager(tmp_path / "runs")
    cfg = parse_args(train_args(tmp_path / "unused", *EXTRA))
    name, seen = None, []
    run_dir = mgr.runs_dir / "crash"
    with TornReadWatcher(run_dir) as watcher:
        for fault, latest in CHAIN:
            monkeypatch.setenv("HUBTUNE_FAULT", fault)  # the launched process inherits it
            name = (mgr.submit(cfg, "cpu.yaml", name="crash") if name is None else mgr.resume(name))["name"]
            info = wait_final(mgr, name)
            run, log = RunDir(mgr.run_dir(name)), (run_dir / "train.log").read_text()
            assert f"HUBTUNE_FAULT: killing rank 0 at {fault.replace(':', ', step ')}" in log, log[-2000:]
            # observed through the runner: a dead process without a completion record is failed, with a reason
            assert info["state"] == "failed" and "SIGKILL" in info["error"], (fault, info["error"])
            assert run.latest_checkpoint().name == latest, (fault, run.list_checkpoints())
            assert not run.is_finished() and not run.model.exists() and not run.metrics.exists()
            seen.append(fault)
            if fault.startswith("mid_checkpoint"):
                half = run.checkpoints / "step-8.tmp"
                assert (half / "trainer_state.json").exists() and (half / "model.safetensors").exists()
            if fault.startswith("mid_final_save"):
                assert (run.path / "model.tmp" / "model.safetensors").exists()
                assert not (run.path / "model.tmp" / "tokenizer.json").exists()
        monkeypatch.delenv("HUBTUNE_FAULT")
        info = wait_final(mgr, mgr.resume(name)["name"])
    assert info["state"] == "done", (run_dir / "train.log").read_text()[-3000:]
    assert seen == [f for f, _ in CHAIN]
    assert_identical(reference, run_dir)
    assert watcher.reads > 100 and not watcher.bad, watcher.bad[:5]
    # what a crash left behind is cleaned up by the runs that followed
    assert not list(run_dir.glob("*.tmp")) and not list((run_dir / "checkpoints").glob("*.tmp"))


def test_atomic_writes_are_never_seen_torn(tmp_path):
    """A reader racing a writer that is SIGKILLed mid-stream: atomic_write_json (status, metrics, config, job) is
    only ever read whole, during the writes and after the kill. The same harness catches torn reads of a plain
    write, so it would catch a regression."""
    writer = (
        "import json, sys, pathlib\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from engine.rundir import atomic_write_json\n"
        "path, atomic = pathlib.Path(sys.argv[1]), sys.argv[2] == 'atomic'\n"
        "blob = {'rows': [[i] * 20 for i in range(5000)], 'n': 0}\n"
        "while True:\n"
        "    blob['n'] += 1\n"
        "    atomic_write_json(path, blob) if atomic else path.write_text(json.dumps(blob))\n"
    )

    def race(mode: str, seconds: float, stop_at_first: bool) -> tuple[list, int]:
        path = tmp_path / f"{mode}.json"
        atomic_write_json(path, {"n": 0})
        torn, reads = [], 0
        proc = subprocess.Popen([sys.executable, "-c", writer, str(path), mode])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (stop_at_first and torn):
            reads += 1
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError as e:
                torn.append(str(e))
        proc.kill()  # SIGKILL, wherever the writer is
        proc.wait()
        try:
            assert json.loads(path.read_text())["n"] >= 0
        except json.JSONDecodeError as e:
            torn.append(f"after the kill: {e}")
        return torn, reads

    plain, _ = race("plain", 10, stop_at_first=True)
    assert plain, "no torn read of a plain write seen in 10 s: the harness would not catch a regression"
    for _ in range(3):
        torn, reads = race("atomic", 1.0, stop_at_first=False)
        assert reads > 20 and not torn, torn[:3]


DDP_EXTRA = ["--max_train_samples", "64", "--max_eval_samples", "21", "--max_seq_length", "16",
             "--per_device_train_batch_size", "8", "--max_steps", "4", "--save_steps", "2", "--eval_steps", "2",
             "--logging_steps", "1"]


def test_ddp_rank_killed_is_failed_then_resumes_identical(tmp_path, monkeypatch):
    """2-process gloo DDP: rank 1 SIGKILLed after step 3. The run is failed (never done, never just
    'cancelled'), and resuming it with 2 processes ends identical to an uninterrupted 2-process run."""
    mgr = JobManager(tmp_path / "runs")
    cfg = parse_args(train_args(tmp_path / "unused", *DDP_EXTRA))
    ref = wait_final(mgr, mgr.submit(cfg, "cpu_ddp.yaml", name="ref")["name"])
    assert ref["state"] == "done", (mgr.run_dir("ref") / "train.log").read_text()[-3000:]

    monkeypatch.setenv("HUBTUNE_FAULT", "after_step:3:1")
    info = wait_final(mgr, mgr.submit(cfg, "cpu_ddp.yaml", name="killed")["name"])
    run = RunDir(mgr.run_dir("killed"))
    log = (run.path / "train.log").read_text()
    assert "HUBTUNE_FAULT: killing rank 1 at after_step, step 3" in log, log[-3000:]
    assert mgr._job("killed")["exit_code"] not in (0, None)
    # rank 0's own error is only gloo's lost connection: the line shown names the rank that died and how
    assert info["state"] == "failed" and info["error"].startswith("rank 1 exited with code -9 (SIGKILL)"), info
    assert run.latest_checkpoint().name == "step-2" and not run.model.exists()
    # the other order of the same race: rank 0 gets the launcher's SIGTERM before gloo's error and writes
    # "cancelled". Nobody asked the runner to cancel, so it reports a failure, naming the rank that died first.
    run.write_status("cancelled", error=None)
    info = mgr.info("killed")
    assert info["state"] == "failed", info
    assert info["error"].startswith("rank 1 exited with code -9 (SIGKILL)"), info["error"]

    monkeypatch.delenv("HUBTUNE_FAULT")
    info = wait_final(mgr, mgr.resume("killed")["name"])
    assert info["state"] == "done", log[-3000:]
    assert run.read_status()["world_size"] == 2
    assert_identical(mgr.run_dir("ref"), run.path, eval_steps=(2, 4), total=4)
