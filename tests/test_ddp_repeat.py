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

from engine.events import FINAL_STATES, RunDir
from engine.jobs import JobManager

# the issue asks for 20; each costs ~16 s on 2 quiet cores (~28 CPU-s: launcher + 2 ranks' start-up dominate)
RUNS = int(os.environ.get("HUBTUNE_DDP_RUNS", "20"))
VAL = 21  # odd on purpose: split over 2 ranks, a dropped or duplicated sample would show in the count
# as small as a real run gets: start-up (imports, model load, gloo rendezvous) is most of each run's time
TINY_DDP = {"dataset_name": "bundled:bbc_news", "max_train_samples": 32, "max_eval_samples": VAL,
            "max_seq_length": 16, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 32,
            "max_steps": 2, "warmup_steps": 1, "learning_rate": 2e-4, "logging_steps": 1, "eval_strategy": "steps",
            "eval_steps": 1000, "save_steps": 1000, "seed": 7}  # evaluated once, at the end; no checkpoint


def _wait_all(mgr: JobManager, names: list[str], timeout: float) -> dict:
    """Poll like the UI until every run has a final state and its launcher's exit code is collected (a gloo abort
    at exit shows there). Runs start in FIFO order, so only the oldest unfinished one is looked at: polling all
    of them every time would take CPU from the runs on this 2-core machine."""
    infos, pending = {}, list(names)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        mgr.poll()  # the UI's refresh: marks ended runs and starts the next queued one
        while pending:
            info = mgr.info(pending[0])
            if info["state"] not in FINAL_STATES or mgr._job(pending[0]).get("exit_code") is None:
                break
            infos[pending.pop(0)] = info
        time.sleep(0.3)
    assert not pending, f"not all runs ended in {timeout}s: {[(n, mgr.info(n)['state']) for n in pending]}"
    return infos


def test_twenty_consecutive_ddp_runs_all_done(tmp_path, monkeypatch):
    mgr = JobManager(tmp_path / "runs")
    t0 = time.monotonic()
    monkeypatch.setenv("HUBTUNE_FAULT", "after_done:2:1")  # inherited by the first launch only
    names = [mgr.submit(TINY_DDP, "cpu_ddp.yaml", name="ddp-01")["name"]]
    _wait_all(mgr, names, timeout=120)
    monkeypatch.delenv("HUBTUNE_FAULT")
    names += [mgr.submit(TINY_DDP, "cpu_ddp.yaml", name=f"ddp-{i:02d}")["name"] for i in range(2, RUNS + 1)]
    infos = _wait_all(mgr, names, timeout=RUNS * 60)
    elapsed = time.monotonic() - t0

    failed = {n: (i["state"], i["error"]) for n, i in infos.items() if i["state"] != "done"}
    assert not failed, failed
    runs = {n: RunDir(mgr.run_dir(n)) for n in names}
    first = None
    for name, run in runs.items():
        status, m = run.read_status(), json.loads(run.metrics.read_text())
        assert status["world_size"] == 2 and run.is_finished(), name
        assert m["validation"]["num_samples"] == VAL and m["steps"] == 2, name
        assert len(run.predictions.read_text().splitlines()) == VAL, name
        first = first or m["validation"]
        assert m["validation"] == first, f"{name}: same seed, same data, different metrics"

    exit_codes = {n: mgr._job(n)["exit_code"] for n in names}
    # the injected abort: the launcher failed, the completion record says done, and done it is
    assert exit_codes["ddp-01"] not in (0, None) and infos["ddp-01"]["state"] == "done"
    natural = [n for n in names[1:] if exit_codes[n] != 0]
    print(f"\n{RUNS} two-process CPU runs in {elapsed:.0f} s ({elapsed / RUNS:.1f} s each): all done; "
          f"launcher exit code non-zero after the completion record: ddp-01 (injected) + {len(natural)} "
          f"natural gloo abort(s) {natural}")
