"""Hyperparameter search with Optuna: every trial is a normal run, started through the job runner.

    python -m engine.search --config run.yaml [--search search.yaml] [--output_dir runs/my-search] [--resume]
                            [--n_trials N] [--accelerate_config cpu.yaml] [--key value ...]

The run YAML's `search:` block (or --search; engine/search/config.py) says what varies; the rest of the YAML,
with any `--key value` flags, is every trial's base config. Everything is checked before the first trial (the
block, the base config, the data and model as Start checks them, the metric against the data's head): one line
per problem, exit code 2. The search folder (--output_dir, default the config's output_dir) holds the study
(study.db, SQLite), one run directory per trial (trial-N), and the records of engine/search/report.py. A search
stopped at any moment (Ctrl-C, SIGTERM, SIGKILL) continues with --resume: finished trials stay, the interrupted one
is tried again with the same parameters.
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.config import TrainConfig, flag_parser, parse_args, read_yaml
from engine.errors import CliParser, ConfigError, check_options, cli_logging, report
from engine.search.config import SearchConfig, parse, split_block
from engine.search.report import best_row, table, trial_rows, write_best, write_plots, write_state, write_tables
from engine.training.launch import place, rel_path

log = logging.getLogger("hubtune")
STUDY_NAME = "hubtune-search"


@dataclass
class Plan:
    """A checked search, ready to run: its folder, base config, block, and the metric resolved by the head."""

    search_dir: Path
    base: TrainConfig
    spec: SearchConfig
    metric: str
    direction: str
    accelerate_config: str = "cpu.yaml"
    resume: bool = False
    num_train: int = 0

    def meta(self) -> dict:
        return {"metric": self.metric, "direction": self.direction, "n_trials": self.spec.n_trials,
                "params": list(self.spec.params)}

    def search_yaml(self) -> dict:
        """search.yaml: the base config (output_dir: the search folder) and the block, as `--config` reads it."""
        return {**self.base.to_dict(), "output_dir": rel_path(self.search_dir), "search": self.spec.to_dict()}


def prepare(base: TrainConfig, block, search_dir, resume: bool = False, accelerate_config: str = "cpu.yaml") -> Plan:
    """Every check a search makes before its first trial (the web app's Check and Start call this too);
    ConfigError with one line per problem."""
    from engine.modeling import check_before_launch
    from engine.training.launch import accelerate_configs
    from engine.training.preflight import check_run

    search_dir = Path(search_dir)
    spec = parse(block, base)
    problems = _folder_problems(search_dir, resume)
    if accelerate_config not in accelerate_configs():
        problems.append(f"accelerate_config: unknown '{accelerate_config}'; choose one of "
                        f"{', '.join(accelerate_configs())}")
    try:  # the base config as a trial takes it: a folder of its own under the search (never created)
        place(copy.deepcopy(base), search_dir / ".check").validate(check_paths=True)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems)
    for model in spec.params.get("model_name_or_path").choices if "model_name_or_path" in spec.params else ():
        check_before_launch(model)
    head = check_run(base).splits.head  # data and model as Start checks them; the head the data calls for
    metric = spec.metric or head.metric(base)
    if metric not in head.metrics_names:
        raise ConfigError(f"search.metric: '{metric}' is not a metric of this {head.problem_type} run; use one of "
                          f"{', '.join(head.metrics_names)}")
    direction = "maximize" if head.greater_is_better(metric) else "minimize"
    if spec.direction not in (None, direction):
        raise ConfigError(f"search.direction: {spec.direction} contradicts {metric}, where "
                          f"{'higher' if direction == 'maximize' else 'lower'} is better; use {direction} or remove it")
    return Plan(search_dir, base, spec, metric, direction, accelerate_config, resume)


def _folder_problems(search_dir: Path, resume: bool) -> list[str]:
    from engine.rundir import is_run
    from engine.search.jobs import running_pid

    if is_run(search_dir):
        return [f"output_dir: '{search_dir}' is a run directory; give the search a folder of its own"]
    if (pid := running_pid(search_dir)) not in (None, os.getpid()):  # the web app records our pid as we start
        return [f"output_dir: a search is already running in '{search_dir}' (pid {pid}); wait for it or cancel it"]
    if resume and not (search_dir / "study.db").is_file():
        return [f"resume: no search to resume in '{search_dir}' (no study.db); start it without --resume"]
    if not resume and (search_dir / "study.db").is_file():
        return [f"output_dir: '{search_dir}' already holds a search; continue it with --resume, or choose another "
                "--output_dir"]
    return []


# ------------------------------------------------------------------------------------------------------------
# the command line


def _parser():
    p = CliParser(prog="python -m engine.search", description="Search hyperparameters with Optuna: every trial a "
                  "run in <output_dir>/trial-N. Other --key value flags set the trials' base config.")
    p.add_argument("--config", help="run YAML with a search: block (with --resume: default <output_dir>/search.yaml)")
    p.add_argument("--search", help="YAML with the search block (its params, n_trials, metric, ...), replacing the "
                   "config's")
    p.add_argument("--output_dir", help="the search folder (default: the config's output_dir)")
    p.add_argument("--resume", action="store_true", help="continue the search in output_dir")
    p.add_argument("--n_trials", type=int, help="override search.n_trials (on --resume: run up to this many)")
    p.add_argument("--accelerate_config", default="cpu.yaml", help="the trials' accelerate config "
                   "(accelerate_configs/)")
    return p


def plan_from_argv(argv: list[str] | None) -> Plan:
    """Parse the command line into a checked Plan (ConfigError on any problem)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    # the rest goes to the trials' config: a flag is unknown only when neither parser has it by its whole name
    check_options(argv, parser, flag_parser())
    args, rest = parser.parse_known_args(argv)
    stored = Path(args.output_dir) / "search.yaml" if args.output_dir else None
    config = args.config or (str(stored) if args.resume and stored else None)
    if not config:
        raise ConfigError("config: pass --config run.yaml (with a search: block, or --search search.yaml); to "
                          "continue a search: --output_dir runs/<search> --resume")
    base = parse_args(["--config", config, *rest])  # the search block is engine.search's: the trainer skips it
    block = split_block(read_yaml(config))[1]
    if args.search:
        values = read_yaml(args.search)
        block = values["search"] if "search" in values else values
    if args.n_trials is not None:
        block = {**(block or {}), "n_trials": args.n_trials}
    search_dir = Path(args.output_dir or base.output_dir)
    plan = prepare(base, block, search_dir, args.resume, args.accelerate_config)
    if args.resume and args.config and (search_dir / "search.yaml").is_file():
        _same_search(plan, search_dir / "search.yaml")
    return plan


def _same_search(plan: Plan, stored_path: Path) -> None:
    """A resumed search keeps its base config, space and metric (n_trials, timeout, sampler, pruner may change)."""
    stored = read_yaml(stored_path)
    now = plan.search_yaml()
    keys = [k for k in now if k not in ("output_dir", "search") and stored.get(k) != now[k]]
    keys += [f"search.{k}" for k in ("params", "metric", "direction")
             if (stored.get("search") or {}).get(k) != now["search"][k]]
    if keys:
        raise ConfigError(f"resume: {', '.join(keys)} differ from the search started in '{plan.search_dir}'; resume "
                          f"with --config {rel_path(stored_path)} (or no --config), or start a new --output_dir")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 when a best trial exists, 2 for bad input, 1 when no trial gave a result, 130
    when stopped (resume with --resume)."""
    cli_logging()
    try:
        plan = plan_from_argv(argv)
        lock = _lock(plan.search_dir)
    except ConfigError as e:
        return report(e)
    try:
        return run(plan)
    except Exception as e:
        write_state(plan.search_dir, "failed", error=f"{type(e).__name__}: {e}".splitlines()[0][:300],
                    finished_at=time.time())
        raise
    finally:
        lock.close()


def _lock(search_dir: Path):
    """Held while the search runs (released by the kernel however the process ends): one search per folder."""
    search_dir.mkdir(parents=True, exist_ok=True)
    f = open(search_dir / ".search.lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ConfigError(f"output_dir: a search is already running in '{search_dir}'; wait for it or cancel it")
    return f


# ------------------------------------------------------------------------------------------------------------
# the study


def run(plan: Plan) -> int:
    """Run the trials of a checked plan until n_trials count, the timeout passes or a stop signal comes."""
    import optuna

    from engine.runs import processes
    from engine.search.trials import TrialFailed, TrialRunner, counted, settle_unfinished

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what each trial does
    search_dir, spec, t0 = plan.search_dir, plan.spec, time.time()
    study = optuna.create_study(storage=f"sqlite:///{(search_dir / 'study.db').resolve()}", study_name=STUDY_NAME,
                                direction=plan.direction, sampler=spec.build_sampler(plan.base.seed),
                                pruner=spec.build_pruner(), load_if_exists=plan.resume)
    if plan.resume:
        settle_unfinished(study, search_dir, plan.metric)
    else:
        from engine.rundir import atomic_write_text

        import yaml

        atomic_write_text(search_dir / "search.yaml", yaml.safe_dump(plan.search_yaml(), sort_keys=False))
        for params in spec.enqueue:
            study.enqueue_trial(params)
    write_state(search_dir, "running", pid=os.getpid(), pid_start=processes.start_time(os.getpid()),
                started_at=t0, finished_at=None, error=None, **plan.meta())
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: (log.info("stopping: cancelling the running trial"), stop.set()))
                for s in (signal.SIGTERM, signal.SIGINT)}

    def after_trial(study, trial):
        rows = _write_records(plan, study, plots=True)
        row = rows[trial.number]
        log.info("trial %d %s%s", trial.number, row["state"], f": {plan.metric} {trial.value:.4f}"
                 if row["state"] == "done" else f" ({row['note']})")
        if stop.is_set():
            study.stop()

    runner = TrialRunner(search_dir, plan.base, spec, plan.metric, plan.accelerate_config, stop,
                         lambda: _write_records(plan, study))
    remaining = spec.n_trials - counted(study, search_dir)
    try:
        if remaining > 0:
            study.optimize(runner, n_trials=remaining, timeout=spec.timeout, catch=(TrialFailed,),
                           callbacks=[after_trial])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    _write_records(plan, study, plots=True)
    return _finish(plan, study, stop.is_set(), time.time() - t0)


def _write_records(plan: Plan, study, plots: bool = False) -> list[dict]:
    """trials.json/.csv (cheap: on every reported evaluation), and after a trial best.yaml and the plots."""
    rows = trial_rows(study, plan.search_dir)
    write_tables(plan.search_dir, rows, plan.meta())
    if plots:
        write_best(plan.search_dir, best_row(rows, plan.direction), plan.metric)
        write_plots(study, plan.search_dir)
    return rows


def _finish(plan: Plan, study, stopped: bool, seconds: float) -> int:
    """Print the trials table and the best trial; record the search's end."""
    from engine.runs.listing import print_table

    rows = trial_rows(study, plan.search_dir)
    best = best_row(rows, plan.direction)
    print(f"\ntrials of {rel_path(plan.search_dir)} ({plan.metric}, {plan.direction}; study.db, trials.csv):")
    print_table(*table(rows, plan.metric))
    state = "cancelled" if stopped else "done"
    write_state(plan.search_dir, state, finished_at=time.time(), seconds=round(seconds, 1), best=best)
    if stopped:
        print(f"\nstopped after {seconds:.0f} s; continue with: python -m engine.search --output_dir "
              f"{rel_path(plan.search_dir)} --resume")
        return 130
    if best is None:
        print(f"hubtune: error: search: no trial finished with a {plan.metric}; see the trials' train.log",
              file=sys.stderr)
        return 1
    trained = sum(r["duration_s"] or 0 for r in rows)  # over every invocation: a resumed search counts its past
    print(f"\nbest: {best['run']}, {plan.metric} {best['value']:.4f} ({len(rows)} trials, {trained:.0f} s of "
          f"training in all; {seconds:.0f} s this time)\n"
          f"  train it on all the data: python -m engine.train --config {rel_path(plan.search_dir / 'best.yaml')}\n"
          f"  push it: python -m engine.hub push {rel_path(plan.search_dir / best['run'])} --repo user/name")
    return 0
