"""What a hyperparameter search leaves in its folder, besides the study and the trials' run directories:

    search.yaml          the base config and its search block, as started (`--resume` reads it)
    search.json          the search's own record: state (starting, running, done, cancelled, failed), pid, progress
    trials.json/.csv     one row per trial: params, metric, state (done, pruned, failed, interrupted), duration, note
    best.yaml            the best trial's config, made to train on all the data
    optimization_history.png, param_importances.png   Optuna's own matplotlib plots

Rows are built from the Optuna study and each trial's status.json (pruning and interruption reasons live there);
readers (the web app) take the JSON files and never open the study.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from pathlib import Path

from engine.rundir import RunDir, atomic_write_json, atomic_write_text, read_json

log = logging.getLogger("hubtune")
STATE_WORDS = {"COMPLETE": "done", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
PLOTS = ("optimization_history.png", "param_importances.png")
SUBSET_KEYS = ("max_train_samples", "max_eval_samples")  # what best.yaml drops to train on all the data


def trial_dir(search_dir: str | os.PathLike, number: int) -> Path:
    """A trial's run directory: <search>/trial-<Optuna's trial number>."""
    return Path(search_dir) / f"trial-{number}"


def interrupted(trial, search_dir) -> bool:
    """Whether a failed trial failed because its search stopped (cancelled or killed), not by itself: such a
    trial does not count towards n_trials and `--resume` tries its parameters again."""
    if STATE_WORDS.get(trial.state.name) != "failed":
        return False
    run = trial_dir(search_dir, trial.number)
    if trial.user_attrs.get("interrupted") or RunDir(run).read_status().get("search_state") == "interrupted":
        return True
    return not (run / "job.json").is_file() and "note" not in trial.user_attrs  # stopped before its run existed


def trial_rows(study, search_dir) -> list[dict]:
    """One dict per trial, in trial order: what the table, trials.json and the web app show."""
    now = time.time()
    rows = []
    for t in study.trials:
        status = RunDir(trial_dir(search_dir, t.number)).read_status()
        state = "interrupted" if interrupted(t, search_dir) else STATE_WORDS.get(t.state.name, t.state.name.lower())
        start = t.datetime_start.timestamp() if t.datetime_start else None
        end = t.datetime_complete.timestamp() if t.datetime_complete else (now if state == "running" else None)
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        note = t.user_attrs.get("note") or status.get("search_note") or (status.get("error") or "")
        row = {"trial": t.number, "run": trial_dir(search_dir, t.number).name, "state": state,
               "params": dict(t.params), "value": t.value if t.value is not None else
               (last if state == "running" else None),
               "duration_s": round(end - start, 1) if start and end else None, "note": note,
               "started_at": start, "retry_of": t.user_attrs.get("retry_of")}
        rows.append(_noted(row, status))
    return rows


def _noted(row: dict, status: dict) -> dict:
    """The row with its note: a running trial's progress read from its run's status.json, after the trial it
    retries (if any)."""
    note = row["note"]
    if row["state"] == "running":
        note = f"step {status.get('step') or 0}/{status['total_steps']}" if status.get("total_steps") else "starting"
    if row.get("retry_of") is not None:
        note = f"retry of trial {row['retry_of']}" + (f"; {note}" if note else "")
    return {**row, "note": note}


def live_rows(search_dir, rows: list[dict]) -> list[dict]:
    """trials.json's rows with each running trial's progress as its run says now: the search rewrites trials.json
    only when a trial starts or reports an evaluation, and its note would say "starting" until then."""
    return [_noted({**r, "note": ""}, RunDir(trial_dir(search_dir, r["trial"])).read_status())
            if r.get("state") == "running" else r for r in rows]


def best_row(rows: list[dict], direction: str) -> dict | None:
    """The done trial with the best value (the earliest among equals), or None."""
    done = [r for r in rows if r["state"] == "done" and r["value"] is not None]
    if not done:
        return None
    sign = -1 if direction == "maximize" else 1
    return min(done, key=lambda r: (sign * r["value"], r["trial"]))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def table(rows: list[dict], metric: str) -> tuple[list[str], list[list[str]]]:
    """(header, lines) of the trials table: trial, state, each param, the metric, duration, note."""
    names = list(dict.fromkeys(k for r in rows for k in r["params"]))
    head = ["trial", "state", *names, metric, "duration_s", "note"]
    lines = [[r["run"], r["state"], *(_cell(r["params"].get(n)) for n in names), _cell(r["value"]),
              _cell(r["duration_s"]), r["note"]] for r in rows]
    return head, lines


def write_tables(search_dir, rows: list[dict], meta: dict) -> None:
    """trials.json (rows plus the search's metric, direction and best row) and trials.csv."""
    search_dir = Path(search_dir)
    best = best_row(rows, meta["direction"])
    atomic_write_json(search_dir / "trials.json", {**meta, "best": best, "rows": rows, "updated_at": time.time()})
    head, lines = table(rows, meta["metric"])
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(head)
    writer.writerows([[*line[:-3], r["value"], r["duration_s"], r["note"]] for line, r in zip(lines, rows)])
    atomic_write_text(search_dir / "trials.csv", buf.getvalue())


def write_best(search_dir, best: dict | None, metric: str) -> Path | None:
    """best.yaml: the best trial's own config.yaml with its output_dir moved to <search>/best and the data subset
    keys removed, so `python -m engine.train --config <search>/best.yaml` trains it on all the data."""
    from engine.config import TrainConfig
    from engine.training.launch import rel_path

    if best is None:
        return None
    search_dir = Path(search_dir)
    cfg = TrainConfig.load(search_dir / best["run"] / "config.yaml")
    dropped = [k for k in SUBSET_KEYS if getattr(cfg, k) is not None]
    for key in (*SUBSET_KEYS, "resume_from_checkpoint"):
        setattr(cfg, key, None)
    cfg.overwrite_output_dir = False
    cfg.output_dir = rel_path(search_dir / "best")
    params = ", ".join(f"{k}={_cell(v)}" for k, v in best["params"].items())
    header = [f"# The best trial of the search in {rel_path(search_dir)}: {best['run']}, {metric} {best['value']:.4f} "
              f"({params}).", f"# Its exact config is {rel_path(search_dir / best['run'] / 'config.yaml')}."]
    if dropped:
        header.append(f"# {' and '.join(dropped)} removed here, so it trains on all the data.")
    header.append(f"#   python -m engine.train --config {rel_path(search_dir / 'best.yaml')}")
    path = search_dir / "best.yaml"
    atomic_write_text(path, "\n".join(header) + "\n" + cfg.to_yaml())
    return path


def write_plots(study, search_dir) -> list[str]:
    """Optuna's optimization history and parameter importances as PNGs (each once the study has enough done
    trials: one, two); returns why a plot is missing, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    missing = []
    for name, draw, needs in zip(PLOTS, (plots.plot_optimization_history, plots.plot_param_importances), (1, 2)):
        if done < needs:
            missing.append(f"{name}: drawn once {needs} trial{'s' if needs > 1 else ''} completed")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                fig = draw(study).figure
        except (ValueError, RuntimeError) as e:  # e.g. importances of parameters that never varied
            missing.append(f"{name}: {str(e).splitlines()[0]}")
            log.warning("search: %s not drawn: %s", name, missing[-1])
            continue
        fig.set_size_inches(7.5, 4.2)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        tmp = Path(search_dir) / f".{name}.tmp"
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, Path(search_dir) / name)
    return missing


def write_state(search_dir, state: str, **fields) -> dict:
    """Merge `fields` into search.json and set its state."""
    path = Path(search_dir) / "search.json"
    record = {**(read_json(path, {}) or {}), **fields, "state": state, "updated_at": time.time()}
    atomic_write_json(path, record)
    return record


def read_state(search_dir) -> dict:
    return read_json(Path(search_dir) / "search.json", {}) or {}
