"""Read-only views of a run directory for the Fine-tuning tab: progress, curves, log tail, final results.

Everything is derived from files (status.json, events.jsonl, train.log, metrics.json, eval_predictions.jsonl),
so any page, reloaded or opened in another tab, shows the same run.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from engine.events import RunDir, read_json

STATE_COLORS = {"queued": "#6b7280", "starting": "#2563eb", "running": "#2563eb", "done": "#16a34a",
                "failed": "#dc2626", "cancelled": "#d97706"}


def progress_html(info: dict | None) -> str:
    """A progress bar with step, ETA and state; failed runs show their error line."""
    if not info:
        return "<div id='run-progress'>No run selected.</div>"
    state, step, total = info["state"], info.get("step") or 0, info.get("total_steps")
    color = STATE_COLORS.get(state, "#6b7280")
    frac = 1.0 if state == "done" else (step / total if total else 0.0)
    parts = [f"<b id='run-state' data-state='{state}' style='color:{color}'>{state}</b>",
             f"run <code>{html.escape(info['name'])}</code>"]
    if total:
        parts.append(f"step {step}/{total}")
    if state == "running" and info.get("eta_seconds") is not None:
        parts.append(f"ETA {_fmt_seconds(info['eta_seconds'])}")
    if state == "queued" and info.get("queue_position"):
        parts.append(f"position {info['queue_position']} in the queue")
    if state == "starting":
        parts.append("loading model and data")
    if state == "done" and info.get("hub_push"):
        push = info["hub_push"]
        parts.append({"pushing": "<span id='run-push'>pushing to the Hub…</span>",
                      "pushed": f"<span id='run-push'>on the Hub: {html.escape(info.get('hub_url') or '')}</span>",
                      }.get(push, f"<span id='run-push' style='color:#dc2626'>Hub push failed: "
                                  f"{html.escape(info.get('hub_error') or '')}</span>"))
    bar = (f"<div style='background:#e5e7eb;border-radius:4px;height:14px;margin:6px 0'>"
           f"<div style='width:{frac:.1%};background:{color};height:14px;border-radius:4px'></div></div>")
    error = ""
    if info.get("error") and state == "failed":
        error = f"<div id='run-error' style='color:#dc2626'>error: {html.escape(info['error'])}</div>"
    return f"<div id='run-progress'>{' · '.join(parts)}{bar}{error}</div>"


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def curves(run_dir: Path) -> dict[str, pd.DataFrame]:
    """DataFrames for the loss, evaluation-metric, learning-rate and throughput plots."""
    events = RunDir(run_dir).read_events()
    train = [e for e in events if e.get("type") == "train"]
    evals = [e for e in events if e.get("type") == "eval"]
    loss = pd.DataFrame({"step": [e["step"] for e in train], "loss": [e["loss"] for e in train],
                         "series": ["train loss"] * len(train)})
    if evals:
        loss = pd.concat([loss, pd.DataFrame({"step": [e["step"] for e in evals],
                                              "loss": [e.get("eval_loss") for e in evals],
                                              "series": ["eval loss"] * len(evals)})], ignore_index=True)
    metric_rows = [{"step": e["step"], "value": e[k], "metric": k.removeprefix("eval_")}
                   for e in evals for k in ("eval_accuracy", "eval_f1") if k in e]
    return {
        "loss": loss,
        "metrics": pd.DataFrame(metric_rows, columns=["step", "value", "metric"]),
        "lr": pd.DataFrame({"step": [e["step"] for e in train], "learning_rate": [e["learning_rate"] for e in train]}),
        "speed": pd.DataFrame({"step": [e["step"] for e in train],
                               "samples_per_second": [e["samples_per_second"] for e in train]}),
    }


def log_tail(run_dir: Path, lines: int = 30) -> str:
    """The last lines of train.log; tqdm's carriage-return updates are collapsed to their latest state."""
    path = RunDir(run_dir).log
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 64_000))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    out = [line.split("\r")[-1] for line in text.splitlines()]
    return "\n".join([line for line in out if line.strip()][-lines:])


def results(run_dir: Path) -> dict | None:
    """Final tables of a finished run: headline metrics, per-class report, misclassified validation examples."""
    metrics = read_json(RunDir(run_dir).metrics)
    if not metrics:
        return None
    val = metrics.get("validation", {})
    headline = pd.DataFrame([{
        "accuracy": val.get("accuracy"), "macro F1": val.get("f1"), "precision": val.get("precision"),
        "recall": val.get("recall"), "loss": val.get("loss"), "best step": metrics.get("best_step"),
        "steps": metrics.get("steps"), "train samples/s": metrics.get("train_samples_per_second"),
    }]).round(4)
    per_class = pd.DataFrame([{"label": k, **{m: v for m, v in row.items() if not isinstance(v, dict)}}
                              for k, row in (val.get("per_class") or {}).items()]).round(4)
    wrong = []
    try:
        for line in RunDir(run_dir).predictions.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["label"] != row["prediction"]:
                wrong.append({"text": row["text"][:500], "label": row["label"], "prediction": row["prediction"],
                              "score": round(row["score"], 3)})
    except (OSError, json.JSONDecodeError):
        pass
    return {"headline": headline, "per_class": per_class,
            "misclassified": pd.DataFrame(wrong, columns=["text", "label", "prediction", "score"])}


def confusion_png(run_dir: Path) -> str | None:
    """The confusion-matrix image of a finished run, drawn once and cached in the run directory."""
    from engine.plots import confusion_matrix_png

    cached = Path(run_dir) / "plots" / "confusion_matrix.png"
    if cached.exists():
        return str(cached)
    try:
        return str(confusion_matrix_png(run_dir, Path(run_dir) / "plots"))
    except FileNotFoundError:
        return None


def runs_table(runs: list[dict]) -> pd.DataFrame:
    """The runs list: one row per run with status, base model, dataset and best metric."""
    rows = []
    for r in runs:
        best = r.get("best_metric")
        rows.append({"run": r["name"], "status": r["state"] + (f" (#{r['queue_position']})" if r.get("queue_position")
                                                              else ""),
                     "base model": Path(str(r.get("base_model") or "")).name if "/" in str(r.get("base_model"))
                     and Path(str(r.get("base_model"))).is_absolute() else r.get("base_model"),
                     "dataset": r.get("dataset"),
                     "best metric": f"{r.get('metric')} {best:.4f}" if isinstance(best, (int, float)) else "",
                     "step": f"{r.get('step') or 0}/{r.get('total_steps') or '?'}"})
    return pd.DataFrame(rows, columns=["run", "status", "base model", "dataset", "best metric", "step"])
