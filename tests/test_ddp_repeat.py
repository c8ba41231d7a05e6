"""DDP robustness (issue 8, item 4): 20 consecutive 2-process CPU (gloo) runs through the job runner all end `done`
with the same, right metrics.

gloo now and then aborts a rank at interpreter exit after the run has finished (DESIGN.md), so the launcher exits
non-zero. Such a run is judged by its completion record (status.json `done`, written last by the main process):
it stays done. The first run here makes that case certain instead of rare (HUBTUNE_FAULT kills rank 1 right after
the record); a rank lost before the record makes the run failed (tests/test_crash_resume.py).
"""

import json
import os
import time

import pytest

from conftest import wait_final
from engine.rundir import RunDir
from engine.runs.jobs import JobManager

# the issue asks for 20; each costs 12-17 s on 2 quiet cores (~21 CPU-s: the launcher's and 2 ranks' imports dominate)
RUNS = int(os.environ.get("HUBTUNE_DDP_RUNS", "20"))
VAL = 21  # odd on purpose: split over 2 ranks, a dropped or duplicated sample would show in the count
# as small as a real run gets: start-up (imports, model load, gloo rendezvous) is most of each run's time
TINY_DDP = {"dataset_name": "bundled:bbc_news", "max_train_samples": 32, "max_eval_samples": VAL,
            "max_seq_length": 16, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 32,
            "max_steps": 2, "warmup_steps": 1, "learning_rate": 2e-4, "logging_steps": 1, "eval_strategy": "steps",
            "eval_steps": 1000, "save_steps": 1000, "seed": 7}  # evaluated once, at the end; no checkpoint


def _check_run(mgr: JobManager, name: str) -> dict:
    """A finished 2-process run with every validation sample predicted exactly once; returns its metrics."""
    info = mgr.info(name)
    assert info["state"] == "done", (name, info["error"], (mgr.run_dir(name) / "train.log").read_text()[-3000:])
    run = RunDir(mgr.run_dir(name))
    status, m = run.read_status(), json.loads(run.metrics.read_text())
    assert status["world_size"] == 2 and run.is_finished(), name
    assert m["validation"]["num_samples"] == VAL and m["steps"] == 2, name
    assert len(run.predictions.read_text().splitlines()) == VAL, name
    return m["validation"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """Run 1 of 20, with rank 1 killed right after the completion record (HUBTUNE_FAULT, inherited by this
    launch only): the launcher fails, the record says done, and done it is."""
    mgr = JobManager(tmp_path_factory.mktemp("ddp") / "runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HUBTUNE_FAULT", "after_done:2:1")
        name = mgr.submit(TINY_DDP, "cpu_ddp.yaml", name="ddp-01")["name"]
        wait_final(mgr, name, timeout=120, interval=0.5)
    assert mgr._job(name)["exit_code"] not in (0, None), "the injected abort did not reach the launcher"
    return mgr, _check_run(mgr, name)


def test_run_01_aborted_at_exit_after_its_completion_record_is_done(first):
    mgr, metrics = first
    assert "HUBTUNE_FAULT: killing rank 1 at after_done" in (mgr.run_dir("ddp-01") / "train.log").read_text()
    assert metrics["num_samples"] == VAL


# one test per run, in order on one worker (pytest-xdist keeps a file together): each is reported on its own
@pytest.mark.parametrize("index", range(2, RUNS + 1), ids=lambda i: f"run-{i:02d}")
def test_consecutive_ddp_run_is_done_with_the_same_metrics(first, index):
    mgr, metrics = first
    t0 = time.monotonic()
    name = mgr.submit(TINY_DDP, "cpu_ddp.yaml", name=f"ddp-{index:02d}")["name"]
    wait_final(mgr, name, timeout=120, interval=0.5)
    assert _check_run(mgr, name) == metrics, f"{name}: same seed, same data, different metrics"
    code = mgr._job(name)["exit_code"]
    print(f"\n{name}: done in {time.monotonic() - t0:.1f} s, launcher exit code {code}"
          + (" (a natural gloo abort after the completion record: still done)" if code else ""))
