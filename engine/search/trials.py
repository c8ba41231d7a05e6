"""One trial of a hyperparameter search, run through the job runner exactly like a web-app run.

The trial's config (the base config with the sampled values) is prepared by `engine.runs.jobs.JobManager` rooted at the
search folder, so it becomes `<search>/trial-N/` with config.yaml, job.json and the same
`python -m accelerate.commands.launch ... -m engine.train --config <search>/trial-N/config.yaml` command. While it
trains, its eval events (events.jsonl) are reported to Optuna; when the pruner says stop, the run is cancelled
through the job runner and its status.json says why (`search_state: pruned`, `search_note`).

A search stopped mid-trial (cancelled, or killed and resumed) does not keep that trial: it is cancelled, marked
`search_state: interrupted` and failed in the study, and `--resume` enqueues its parameters again.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time

from engine.config import TrainConfig
from engine.rundir import FINAL_STATES, RunDir, read_json
from engine.runs.jobs import JobError, JobManager
from engine.search.report import interrupted, trial_dir

log = logging.getLogger("hubtune")
POLL_SECONDS = 1.0
ACTIVE = ("queued", "starting", "running")
INTERRUPTED = "interrupted: the search stopped while this trial ran; --resume tries its parameters again"


class TrialFailed(Exception):
    """A trial that ended without a result (its run failed, or the search was stopped): failed in the study."""


class TrialRunner:
    """The Optuna objective: prepare and start the trial's run, follow its eval events, prune, return its metric."""

    def __init__(self, search_dir, base: TrainConfig, spec, metric: str, accelerate_config: str,
                 stop: threading.Event, on_change=lambda: None):
        self.search_dir, self.base, self.spec, self.metric = search_dir, base, spec, metric
        self.accelerate_config, self.stop, self.on_change = accelerate_config, stop, on_change
        self.mgr = JobManager(search_dir)

    def __call__(self, trial) -> float:
        if self.stop.is_set():
            trial.set_user_attr("interrupted", True)
            trial.study.stop()
            raise TrialFailed("the search was stopped before this trial started")
        params = {name: p.suggest(trial) for name, p in self.spec.params.items()}
        name = trial_dir(self.search_dir, trial.number).name
        try:
            cfg = TrainConfig.from_dict({**{k: v for k, v in self.base.to_dict().items() if v is not None}, **params,
                                         "metric_for_best_model": self.metric}, source=name)
            job = self.mgr.submit(cfg, self.accelerate_config, name=name, exact=True)
        except (ValueError, JobError) as e:  # ConfigError is a ValueError: a combination the trainer refuses
            note = "; ".join(getattr(e, "problems", None) or [str(e)])
            trial.set_user_attr("note", note)
            raise TrialFailed(note) from None
        trial.set_user_attr("command", job["command"])
        log.info("trial %d: %s\n  $ %s", trial.number, ", ".join(f"{k}={v}" for k, v in params.items()),
                 job["command"])
        self.on_change()
        return self._follow(trial, name)

    def _follow(self, trial, name: str) -> float:
        run, key, reported = RunDir(self.mgr.run_dir(name)), f"eval_{self.metric}", set()
        while True:
            if self.stop.is_set():
                self._interrupt(trial, name)
            self.mgr.poll()
            info = self.mgr.info(name)
            for event in run.iter_events():
                step = event.get("step")
                if event.get("type") != "eval" or key not in event or step in reported:
                    continue
                trial.report(float(event[key]), int(step))
                reported.add(step)
                self.on_change()
                if info["state"] in ACTIVE and trial.should_prune():
                    return self._prune(trial, name, int(step), float(event[key]))
            if info["state"] == "done":
                return self._result(trial, name)
            if info["state"] in FINAL_STATES:
                note = info.get("error") or f"the run ended {info['state']}"
                trial.set_user_attr("note", note)
                raise TrialFailed(note)
            time.sleep(POLL_SECONDS)

    def _result(self, trial, name: str) -> float:
        metrics = read_json(self.mgr.run_dir(name) / "metrics.json", {}) or {}
        value = (metrics.get("validation") or {}).get(self.metric)
        if value is None:
            note = f"the finished run has no validation {self.metric} in metrics.json"
            trial.set_user_attr("note", note)
            raise TrialFailed(note)
        return float(value)

    def _prune(self, trial, name: str, step: int, value: float) -> float:
        """Cancel the run through the job runner and mark it pruned; a run that finished meanwhile counts whole."""
        import optuna

        reason = f"pruned at step {step}: {self.metric} {value:.4g}{self._median(trial, step)}"
        try:
            self.mgr.cancel(name)
        except JobError:  # it ended meanwhile: done counts whole, a failure is a failure
            info = self.mgr.info(name)
            if info["state"] == "done":
                return self._result(trial, name)
            note = info.get("error") or f"the run ended {info['state']}"
            trial.set_user_attr("note", note)
            raise TrialFailed(note) from None
        RunDir(self.mgr.run_dir(name)).write_status("cancelled", cancelled_by="search", search_state="pruned",
                                                    search_note=reason)
        trial.set_user_attr("note", reason)
        log.info("trial %d %s", trial.number, reason)
        raise optuna.TrialPruned(reason)

    def _median(self, trial, step: int) -> str:
        """What the median pruner compared with: the completed trials' median at that step (others: nothing)."""
        from optuna.trial import TrialState

        if self.spec.pruner != "median":
            return f" ({self.spec.pruner} pruner)"
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        values = [t.intermediate_values[step] for t in done if step in t.intermediate_values]
        return f", worse than the median {statistics.median(values):.4g} of completed trials there" if values else ""

    def _interrupt(self, trial, name: str) -> None:
        interrupt_run(self.mgr, name)
        trial.set_user_attr("interrupted", True)
        trial.study.stop()
        raise TrialFailed(INTERRUPTED)


def interrupt_run(mgr: JobManager, name: str) -> None:
    """Cancel a trial's run if it is still going and mark it interrupted (kept on disk, not counted)."""
    try:
        if mgr.info(name)["state"] in ACTIVE:
            mgr.cancel(name)
    except JobError:
        pass  # ended by itself meanwhile: its own final state stays, marked interrupted below
    run = RunDir(mgr.run_dir(name))
    status = run.read_status()
    state = status.get("state") if status.get("state") in FINAL_STATES else "failed"
    run.write_status(state, search_state="interrupted", search_note=INTERRUPTED,
                     error=status.get("error") if state == "failed" else None)


def settle_unfinished(study, search_dir, metric: str) -> None:
    """On --resume, before any new trial: each trial the killed search left running is told what became of it
    (its run finished while the search was down: done, with its metric; otherwise cancelled through the job runner
    and failed as interrupted), then every interrupted trial's parameters are enqueued once to be tried again."""
    from optuna.trial import TrialState

    mgr = JobManager(search_dir)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name = trial_dir(search_dir, t.number).name
        value = None
        if (mgr.runs_dir / name / "job.json").is_file():
            if mgr.info(name)["state"] == "done":
                value = (read_json(mgr.run_dir(name) / "metrics.json", {}) or {}).get("validation", {}).get(metric)
            if value is None:
                interrupt_run(mgr, name)
        if value is not None:
            study.tell(t.number, float(value))
            log.info("trial %d finished while the search was stopped: %s %.4f", t.number, metric, value)
        else:
            study.tell(t.number, state=TrialState.FAIL)
            log.info("trial %d was interrupted; its parameters are tried again", t.number)
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.number not in retried and t.params and interrupted(t, search_dir):
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def counted(study, search_dir) -> int:
    """Trials that count towards n_trials: done, pruned, or failed by themselves (not interrupted)."""
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sum(1 for t in finished if not interrupted(t, search_dir))
