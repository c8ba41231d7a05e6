"""The job runner: prepare, start, queue, cancel, resume and list training runs as subprocesses.

Every run is a directory `runs_dir/<name>/`. All state lives on disk, so a new JobManager (a reloaded page, a
restarted UI process) sees exactly what the old one saw:

    config.yaml   written here before launch; the command is always
                  `python -m accelerate.commands.launch --config_file accelerate_configs/X.yaml -m engine.train
                  --config <dir>/config.yaml` (the launcher `accelerate launch` runs, started with this interpreter)
    job.json      the runner's record: command, accelerate config, launcher pid and its start time
    status.json   the engine's record (engine/rundir.py); `queued` is written here, the rest by engine.train
    train.log     stdout and stderr of every rank

One run is active at a time; queued runs start in FIFO order (by `queued_at`) when `poll()` sees the active one
end. `poll()` runs on every UI refresh and in an optional scheduler thread, under a file lock, so two pollers
never start the same run twice.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from engine.config import DATA_EXTENSIONS, TrainConfig
from engine.rundir import FINAL_STATES, RunDir, atomic_write_json, read_config, read_json
from engine.runs.listing import data_label, describe, file_record
from engine.runs import processes
from engine.training.launch import (ROOT, accelerate_configs, command_for, display_command, place, rel_path,
                                    usable_accelerate_configs)

MAX_UPLOAD_MB = float(os.environ.get("HUBTUNE_MAX_UPLOAD_MB", "200"))
CANCEL_GRACE_SECONDS = 8.0
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


class JobError(ValueError):
    """A request the runner refuses (unknown run, wrong state, bad upload), explained in one line."""


# ------------------------------------------------------------------------------------------------------------
# names and uploads


def slug(text: str, max_len: int = 60) -> str:
    """A safe file/run name: letters, digits, '.', '_' and '-' only, never starting with a dot."""
    s = re.sub(r"\.{2,}", "-", _SLUG.sub("-", text.strip()))
    s = re.sub(r"-{2,}", "-", s).strip(".-_")
    return s[:max_len].strip(".-_") or "run"


def save_upload(src: str | os.PathLike, runs_dir: str | os.PathLike, name: str | None = None) -> Path:
    """Copy an uploaded data file into runs_dir/uploads/ after checking its name, extension and size."""
    src = Path(src)
    name = src.name if name is None else name
    if (not name or "/" in name or "\\" in name or ".." in name or name.startswith((".", "~"))
            or any(ord(c) < 32 for c in name)):
        raise JobError(f"upload: refused file name {name!r}; it looks like a path, use a plain file name")
    ext = Path(name).suffix.lower()
    if ext not in DATA_EXTENSIONS and ext != ".zip":  # .zip: an imagefolder, one subfolder per class
        raise JobError(f"upload: unsupported extension '{ext or '(none)'}' of '{name}'; use "
                       f"{', '.join(DATA_EXTENSIONS)}, or .zip for images")
    size_mb = src.stat().st_size / 2**20
    if size_mb > MAX_UPLOAD_MB:
        raise JobError(f"upload: '{name}' is {size_mb:.1f} MB, over the {MAX_UPLOAD_MB:g} MB cap "
                       "(HUBTUNE_MAX_UPLOAD_MB); use a Hub dataset id or a smaller file")
    dest_dir = Path(runs_dir) / "uploads"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(Path(name).stem)}{ext}"
    n = 1
    while dest.exists():
        dest, n = dest.with_name(f"{dest.stem.rsplit('~', 1)[0]}~{n}{ext}"), n + 1
    shutil.copyfile(src, dest)
    return dest


# ------------------------------------------------------------------------------------------------------------


class JobManager:
    """Start, queue, cancel, resume and list the runs under `runs_dir` (default: ./runs)."""

    def __init__(self, runs_dir: str | os.PathLike | None = None):
        self.runs_dir = Path(runs_dir or os.environ.get("HUBTUNE_RUNS_DIR", ROOT / "runs")).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[int, subprocess.Popen] = {}  # reaped by poll() so they never linger as zombies
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # paths ---------------------------------------------------------------------------------------------------
    def run_dir(self, name: str) -> Path:
        """The directory of run `name`; refuses names that would leave runs_dir."""
        if not name or slug(name) != name:
            raise JobError(f"run: invalid run name {name!r}")
        path = (self.runs_dir / name).resolve()
        if path.parent != self.runs_dir:
            raise JobError(f"run: invalid run name {name!r}")
        return path

    def _job(self, name: str) -> dict:
        return read_json(self.run_dir(name) / "job.json", default={}) or {}

    @contextmanager
    def _lock(self):
        with open(self.runs_dir / ".jobs.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # prepare / submit ------------------------------------------------------------------------------------------
    def propose_name(self, cfg: TrainConfig | dict, name: str | None = None) -> str:
        """The name a run of `cfg` gets if it starts now: `name` made safe (a JobError when another run has it),
        else '<data>-<n>' with the first free n, the same every time until such a run exists."""
        if name and name.strip():
            run_name = slug(name)
            if (self.runs_dir / run_name).exists():
                raise JobError(f"run name: '{run_name}' is already taken by another run; choose another name, or "
                               "leave the box empty for an automatic one")
            return run_name
        base, n = slug(data_label(cfg)), 1
        while (self.runs_dir / f"{base}-{n}").exists():
            n += 1
        return f"{base}-{n}"

    def prepare(self, cfg: TrainConfig | dict, accelerate_config: str = "cpu.yaml", name: str | None = None,
                exact: bool = False) -> dict:
        """Validate `cfg`, create runs_dir/<name>/ with config.yaml and job.json; return the job record.

        A taken `name` gets a '-2' (or later) suffix, unless `exact`: then it is refused (the web app shows the
        name before Start, so it starts under that name or not at all). No name: `propose_name`'s.
        Raises ConfigError (every problem at once, same `validate()` as the trainer) or JobError.
        """
        if isinstance(cfg, dict):
            cfg = TrainConfig.from_dict(cfg)
        from engine.modeling import check_before_launch
        from engine.tasks.image_classification.models import refuse_in_web_app

        # a local folder that is no model, holds pickle weights only or needs custom code: refused, no run created
        check_before_launch(cfg.model_name_or_path)
        refuse_in_web_app(cfg.model_name_or_path)  # pkg.mod:Class runs the user's code: command line only
        configs = accelerate_configs()
        if accelerate_config not in configs:
            raise JobError(f"accelerate_config: unknown '{accelerate_config}'; choose one of {', '.join(configs)}")
        if not configs[accelerate_config].startswith("ok"):  # refused before any process starts
            raise JobError(f"accelerate_config: {accelerate_config} {configs[accelerate_config]}; choose one of "
                           f"{', '.join(usable_accelerate_configs())}")
        with self._lock():
            if exact or not name:
                run_name = self.propose_name(cfg, name)
            else:
                base, run_name, n = slug(name), slug(name), 2
                while (self.runs_dir / run_name).exists():
                    run_name, n = f"{base}-{n}", n + 1
            run_dir = self.run_dir(run_name)
            place(cfg, run_dir)
            cfg.validate(check_paths=True)
            run_dir.mkdir(parents=True)
            cfg.save(run_dir / "config.yaml")
            argv, env = command_for(run_dir, accelerate_config)
            job = {"name": run_name, "argv": argv, "env": env, "command": display_command(argv, env),
                   "accelerate_config": accelerate_config, "created_at": time.time(), "pid": None}
            atomic_write_json(run_dir / "job.json", job)
        return job

    def submit(self, cfg: TrainConfig | dict, accelerate_config: str = "cpu.yaml", name: str | None = None,
               exact: bool = False) -> dict:
        """prepare() then queue the run; it starts at once when nothing else is active. Returns its info."""
        job = self.prepare(cfg, accelerate_config, name, exact)
        self._enqueue(job["name"])
        return self.info(job["name"])

    def _enqueue(self, name: str) -> None:
        RunDir(self.run_dir(name)).write_status("queued", queued_at=time.time(), error=None, cancelled_by=None,
                                                   finished_at=None)
        self.poll()

    # scheduling ------------------------------------------------------------------------------------------------
    def poll(self) -> None:
        """Reconcile disk with reality: mark dead runs failed, start the next queued run when none is active."""
        with self._lock():
            active = False
            for name in self._names():
                info = self._reconcile(name)
                active = active or info["state"] in ("running", "starting")
            if not active:
                queue = self.queue()
                if queue:
                    self._launch(queue[0])

    def _reconcile(self, name: str) -> dict:
        run, job = RunDir(self.run_dir(name)), self._job(name)
        status = run.read_status()
        state = status.get("state")
        pid = job.get("pid")
        if pid in self._children and self._children[pid].poll() is not None:
            job["exit_code"] = self._children.pop(pid).returncode
            atomic_write_json(run.path / "job.json", job)
            if state == "failed" and job["exit_code"]:
                status = processes.name_the_rank_that_died(run, status)
        alive = bool(pid) and processes.start_time(pid) == job.get("pid_start")
        if (state == "cancelled" and pid and not alive and not job.get("cancel_requested_at")
                and status.get("cancelled_by") != "user"):
            # nobody here asked: a rank got SIGTERM because the launcher saw another rank die (or the machine
            # stopped it). That is a failure; "cancelled" would hide it.
            state = None
        if pid and not alive and state not in FINAL_STATES and state != "queued":
            # the process is gone without a final record (crash, OOM kill, bad input before training started)
            code = job.get("exit_code")
            error = processes.error_line(run.log) or (
                f"training process exited with code {code} without a final status" if code is not None
                else "training process died without a final status")
            status = run.write_status("failed", error=error, finished_at=time.time())
            state = "failed"
        if state == "running" and alive and status.get("total_steps") is None:
            state = "starting"
        elif state is None and alive:
            state = "starting"
        return {"state": state, "status": status, "job": job, "alive": alive}

    def _launch(self, name: str) -> None:
        run_dir, job = self.run_dir(name), self._job(name)
        run = RunDir(run_dir)
        env = {**os.environ, **job["env"], "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), "PYTHONUNBUFFERED": "1"}
        with open(run.log, "ab") as log:
            log.write(f"$ {job['command']}\n".encode())
            log.flush()
            # a new session: the launcher and its ranks survive the UI process and can be signalled as a group
            proc = subprocess.Popen(job["argv"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self._children[proc.pid] = proc
        job.update(pid=proc.pid, pid_start=processes.start_time(proc.pid), started_at=time.time(), exit_code=None,
                   cancel_requested_at=None)
        atomic_write_json(run_dir / "job.json", job)
        run.write_status("running", launcher_pid=proc.pid, step=0, total_steps=None, error=None,
                         launched_at=time.time())

    def start_scheduler(self, interval: float = 2.0) -> None:
        """Poll in a daemon thread so queued runs start even when no browser is watching."""
        if self._thread and self._thread.is_alive():
            return

        def loop():
            while not self._stop.wait(interval):
                try:
                    self.poll()
                except Exception:  # noqa: BLE001 - the scheduler must outlive a bad run directory
                    pass

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="hubtune-jobs", daemon=True)
        self._thread.start()

    def stop_scheduler(self) -> None:
        self._stop.set()

    # cancel / resume -------------------------------------------------------------------------------------------
    def cancel(self, name: str, grace: float = CANCEL_GRACE_SECONDS) -> dict:
        """End every process of the run (SIGTERM, then SIGKILL after `grace` s); mark it cancelled, keep files."""
        with self._lock():
            info = self._reconcile(name)
            run = RunDir(self.run_dir(name))
            if info["state"] in FINAL_STATES:
                raise JobError(f"cancel: run '{name}' is already {info['state']}")
            pids = processes.process_tree(info["job"]["pid"]) if info["alive"] else []
            # recorded before the signal: the "cancelled" the trainer writes on SIGTERM is then known to be asked for
            atomic_write_json(run.path / "job.json", {**info["job"], "cancel_requested_at": time.time()})
            processes.signal_all(pids, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self._reap()
                # re-walk: a rank spawned during the grace period is caught too
                tree = processes.process_tree(info["job"]["pid"]) if info["alive"] else []
                pids = sorted(set(processes.alive(pids)) | set(tree))
                if not processes.alive(pids):
                    break
                time.sleep(0.1)
            processes.signal_all(processes.alive(pids), signal.SIGKILL)
            self._reap()
            if run.read_status().get("state") != "done":  # finishing in the same instant wins over cancel
                run.write_status("cancelled", error=None, finished_at=time.time(), cancelled_by="user")
        self.poll()
        return self.info(name)

    def _reap(self) -> None:
        """Collect exited children (no zombies); _reconcile() records their exit codes."""
        for proc in self._children.values():
            proc.poll()

    def resume(self, name: str) -> dict:
        """Queue a cancelled or failed run again with resume_from_checkpoint: latest (same command)."""
        info = self.info(name)
        if info["state"] not in ("cancelled", "failed"):
            raise JobError(f"resume: run '{name}' is {info['state']}; only cancelled or failed runs can resume")
        run_dir = self.run_dir(name)
        cfg = TrainConfig.load(run_dir / "config.yaml")
        cfg.resume_from_checkpoint = "latest"
        cfg.output_dir = rel_path(run_dir)  # an edited config.yaml cannot send the run outside the runs folder
        cfg.validate(check_paths=True)
        cfg.save(run_dir / "config.yaml")
        self._enqueue(name)
        return self.info(name)

    def delete(self, name: str, check_only: bool = False) -> None:
        """Remove run `name` (`x`, or `group/x` such as a search trial): its folder and nothing else (a linked run:
        the link only). A queued or running run, or one whose process is still alive, is refused: cancel it first.
        Under the runner's lock, so no poll starts a run while it goes; `check_only`: refuse or pass, remove nothing."""
        from engine.rundir import is_run

        path = self.runs_dir / name
        if not name or len(name.split("/")) > 2 or any(slug(p) != p for p in name.split("/")) or not is_run(path):
            raise JobError(f"delete: no run named '{name}' in the runs folder")
        with self._lock():
            job, status = read_json(path / "job.json", default={}) or {}, RunDir(path).read_status()
            if path.parent == self.runs_dir and job and not path.is_symlink():  # this runner's: reconciled first
                rec = self._reconcile(name)
                state, alive = rec["state"], rec["alive"]
            else:  # a search trial or a shell run: its own records, and the process it wrote down
                state = status.get("state")  # a shell run's own pid counts while it says running (pids are reused)
                pid = job.get("pid") or (status.get("pid") if state == "running" else None)
                started = processes.start_time(pid) if pid else None  # None: no such process (any more)
                alive = started is not None and job.get("pid_start") in (None, started)  # not a recycled pid
                state = "failed" if state == "running" and pid and not alive else state  # died without a record
            if state in ("queued", "starting", "running") or alive:
                raise JobError(f"delete: run '{name}' is {'still exiting' if state == 'done' else state}; cancel it "
                               "first, then delete it")
            if not check_only:
                path.unlink() if path.is_symlink() else shutil.rmtree(path)

    # queries ---------------------------------------------------------------------------------------------------
    def _names(self) -> list[str]:
        """The runs this runner started (a job.json beside the run's files), by name."""
        from engine.rundir import list_runs

        # a linked run is not this runner's, even with a job.json (it lives, and was started, elsewhere)
        return sorted(r.path.name for r in list_runs(self.runs_dir, depth=1)
                      if (r.path / "job.json").is_file() and slug(r.path.name) == r.path.name
                      and not r.path.is_symlink())

    def queue(self) -> list[str]:
        """Queued run names, first to start first."""
        queued = [(RunDir(self.runs_dir / n).read_status(), n) for n in self._names()]
        return [n for s, n in sorted(((s, n) for s, n in queued if s.get("state") == "queued"),
                                     key=lambda t: (t[0].get("queued_at", 0), t[1]))]

    def info(self, name: str) -> dict:
        """Everything the UI shows about one run: state, progress, command, queue position, best metric."""
        run_dir = self.run_dir(name)
        if not (run_dir / "job.json").exists():
            raise JobError(f"run: no run named '{name}' in {self.runs_dir}")
        rec = self._reconcile(name)
        queue = self.queue()
        return describe(RunDir(run_dir), rec["state"], rec["status"], rec["job"], read_config(RunDir(run_dir)),
                        queue_position=queue.index(name) + 1 if name in queue else None)

    def record(self, name: str) -> dict:
        """info() of any run of the folder by name: this runner's (`x`), a search's trial (`group/x`) or a run
        trained from the shell, the last two read from their files (engine/runs/listing.py's file_record)."""
        from engine.rundir import is_run

        # a run from the shell may have any folder name ("my run"): refused are only names that leave the folder
        parts = (name or "").split("/")
        path = self.runs_dir / (name or "")
        if not name or len(parts) > 2 or any(not p or p.startswith(".") for p in parts) or not is_run(path):
            raise JobError(f"run: no run named '{name}' in the runs folder")
        if "/" not in name and (path / "job.json").is_file() and not path.is_symlink():
            return self.info(name)
        return file_record(RunDir(path), name, "search" if "/" in name else "shell")

    def every_run(self) -> list[dict]:
        """Every run of the folder, newest first, as record() dicts: this runner's (origin 'app'), searches'
        trials ('search') and runs trained from the shell into it ('shell'), which this runner cannot cancel."""
        from engine.rundir import list_runs

        runs = [self.record(str(r.path.relative_to(self.runs_dir))) for r in list_runs(self.runs_dir, depth=2)]
        return sorted(runs, key=lambda r: r["created_at"] or 0, reverse=True)

    def list_runs(self) -> list[dict]:
        """Every run, newest first, as info() dicts."""
        runs = [self.info(n) for n in self._names()]
        return sorted(runs, key=lambda r: r["created_at"] or 0, reverse=True)

    def active(self) -> str | None:
        """The name of the run that is starting or running, if any."""
        return next((r["name"] for r in self.list_runs() if r["state"] in ("starting", "running")), None)
