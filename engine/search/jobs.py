"""A hyperparameter search as a background process, the way the web app starts, follows and cancels it.

The process runs exactly the command the page shows, `python -m engine.search --config <search>/search.yaml`
(`--resume` to continue), in its own session: closing the browser or restarting the app does not stop it. Its
state is the search folder's files (engine/search/report.py), so any page reattaches. No torch or optuna here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.rundir import FINAL_STATES, read_json
from engine.runs import processes
from engine.search.report import live_rows, read_state, write_state
from engine.training.launch import ROOT, display_command, rel_path

LIVE = ("starting", "running")
CANCEL_WAIT_SECONDS = 25.0  # the search cancels its trial through the job runner (up to its 8 s grace) first
_children: dict[int, subprocess.Popen] = {}  # reaped on every state read, so none lingers as a zombie


def is_search(path: str | os.PathLike) -> bool:
    """A search folder: one holding a search.yaml or a study (and not itself a run)."""
    path = Path(path)
    return path.is_dir() and ((path / "search.yaml").is_file() or (path / "study.db").is_file())


def list_searches(runs_dir: str | os.PathLike) -> list[str]:
    """Names of the search folders directly under `runs_dir`, newest first."""
    root = Path(runs_dir)
    found = [p for p in root.iterdir() if not p.name.startswith(".") and is_search(p)] if root.is_dir() else []
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def command(search_dir: str | os.PathLike, resume: bool = False) -> list[str]:
    """The argv of the search in `search_dir` (paths relative to the repository root when inside it)."""
    argv = [sys.executable, "-m", "engine.search", "--config", rel_path(Path(search_dir) / "search.yaml")]
    return argv + ["--resume"] if resume else argv


def shown_command(search_dir, resume: bool = False) -> str:
    return display_command(command(search_dir, resume), {})


def running_pid(search_dir) -> int | None:
    """The pid of the search process working in `search_dir`, if one is alive (a recycled pid does not count)."""
    for pid in list(_children):
        if _children[pid].poll() is not None:
            _children.pop(pid)
    record = read_state(search_dir)
    pid = record.get("pid")
    if record.get("state") in LIVE and pid and processes.start_time(pid) == record.get("pid_start"):
        return pid
    return None


def start(search_dir, resume: bool = False) -> dict:
    """Start the search process of `search_dir` (search.yaml written); returns its search.json record."""
    search_dir = Path(search_dir)
    argv = command(search_dir, resume)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONUNBUFFERED": "1"}
    with open(search_dir / "search.log", "ab") as log:
        log.write(f"$ {shown_command(search_dir, resume)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _children[proc.pid] = proc
    return write_state(search_dir, "starting", pid=proc.pid, pid_start=processes.start_time(proc.pid),
                       command=shown_command(search_dir, resume), launched_at=time.time(), error=None,
                       finished_at=None)


def state(search_dir) -> dict:
    """search.json with its state made true: a search whose process is gone without a final record is
    'interrupted' (with the last error line of search.log when it has one)."""
    record = read_state(search_dir)
    if record.get("state") in LIVE and running_pid(search_dir) is None:
        error = processes.error_line(Path(search_dir) / "search.log")
        record = {**record, "state": "failed" if error else "interrupted",
                  "error": error or "the search process stopped; Resume continues it"}
    return record


def cancel(search_dir) -> dict:
    """Stop the search: SIGTERM lets it cancel its running trial through the job runner and record 'cancelled';
    a search that does not answer is killed and its running trial cancelled from here."""
    from engine.runs.jobs import JobManager
    from engine.search.trials import ACTIVE, interrupt_run

    search_dir = Path(search_dir)
    pid = running_pid(search_dir)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while running_pid(search_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        if running_pid(search_dir):
            processes.signal_all(processes.alive(processes.process_tree(pid)), signal.SIGKILL)
    mgr = JobManager(search_dir)
    for name in mgr._names():  # trials a killed search left running
        if mgr.info(name)["state"] in ACTIVE:
            interrupt_run(mgr, name)
    record = read_state(search_dir)
    if record.get("state") not in FINAL_STATES:
        record = write_state(search_dir, "cancelled", finished_at=time.time())
    return record


def trials(search_dir) -> dict:
    """trials.json: the rows (params, metric, state, duration, note), metric, direction and the best row; a running
    trial's note is its progress now (engine/search/report.py's live_rows)."""
    data = read_json(Path(search_dir) / "trials.json", {}) or {}
    return {**data, "rows": live_rows(search_dir, data["rows"])} if data.get("rows") else data

