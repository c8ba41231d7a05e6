"""Read-only views of a run directory for the Fine-tuning tab: progress, failure panel, curves, log, final results.

Everything is derived from files (status.json, events.jsonl, train.log, metrics.json, eval_predictions.jsonl,
samples/index.jsonl), so any page, reloaded or opened in another tab, shows the same run. No torch here; matplotlib
is imported only when a chart is drawn.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from engine.rundir import RunDir, best_metric, read_json
from ui import heads_view
from ui.common import hide_server_paths

STATE_COLORS = {"queued": "#6b7280", "starting": "#2563eb", "running": "#2563eb", "done": "#16a34a",
                "failed": "#dc2626", "cancelled": "#d97706"}
# what a busy run is doing when its step count says nothing new (the ETA only measures training steps)
PHASES = {"evaluating": "evaluating on the validation set", "checkpointing": "saving a checkpoint",
          "saving": "saving the model", "pushing": "pushing to the Hub"}
# runs the job runner did not start, as the run view names them (they have no Cancel or Resume here)
ORIGINS = {"shell": "trained from the shell", "search": "a search's trial"}
# the bar of a phase without a measurable end: stripes moving left to right
_INDETERMINATE_CSS = ("<style>@keyframes hubtune-busy{from{background-position:0 0}to{background-position:40px 0}}"
                      "</style>")


def progress_html(info: dict | None) -> str:
    """One line with state, run, step and ETA or what the run is doing now, above a progress bar."""
    if not info:
        return "<div id='run-progress'>No run selected.</div>"
    state, step, total = info["state"], info.get("step") or 0, info.get("total_steps")
    color = STATE_COLORS.get(state, "#6b7280")
    parts = [f"<b id='run-state' data-state='{state}' style='color:{color}'>{state}</b>",
             f"run <code>{html.escape(info['name'])}</code>"]
    if info.get("origin") in ORIGINS:
        parts.append(f"<span id='run-origin'>{ORIGINS[info['origin']]}</span>")
    if total:
        parts.append(f"step {step}/{total}")
    busy = _busy(info)
    if busy:
        parts.append(f"<span id='run-phase' data-phase='{busy[0]}'>{busy[1]}…</span>")
    elif state == "running" and info.get("eta_seconds") is not None:
        eta = info["eta_seconds"]
        parts.append(f"ETA {fmt_seconds(eta)}" if eta >= 1 else "ETA under a second")
    if state == "queued" and info.get("queue_position"):
        parts.append(f"position {info['queue_position']} in the queue")
    if state == "done" and info.get("dir") and \
            (scores := heads_view.headline_text(metrics := read_json(RunDir(info["dir"]).metrics, {}))):
        parts.append(f"<span id='run-headline'>{html.escape(scores + heads_view.tuned_note(metrics))}</span>")
    if state == "done" and info.get("hub_push") in ("pushed", "failed"):
        parts.append(f"<span id='run-push'>on the Hub: {html.escape(info.get('hub_url') or '')}</span>"
                     if info["hub_push"] == "pushed" else
                     f"<span id='run-push' style='color:#dc2626'>Hub push failed: "
                     f"{html.escape(_hidden(info.get('hub_error') or ''))}</span>")
    frac = 1.0 if state == "done" else (step / total if total else 0.0)
    return f"<div id='run-progress'>{' · '.join(parts)}{_bar(frac, color, bool(busy))}</div>"


def _busy(info: dict) -> tuple[str, str] | None:
    """(phase, words) while the run works on something the step count and ETA do not measure, else None."""
    state, phase = info["state"], info.get("phase")
    if state == "starting":
        return "starting", "loading model and data"
    if state == "done":
        return ("pushing", PHASES["pushing"]) if info.get("hub_push") == "pushing" else None
    if state != "running":
        return None
    if phase in PHASES:
        return phase, PHASES[phase]
    total = info.get("total_steps")
    if total and (info.get("step") or 0) >= total:  # the last step is done; evaluation and saving follow
        return "finishing", "finishing up"
    return None


def _bar(frac: float, color: str, busy: bool) -> str:
    """The bar filled to `frac`; while `busy`, its fill (all of it when nothing is measured yet) moves."""
    if busy:
        fill = (f"width:{frac if frac > 0 else 1:.1%};background:repeating-linear-gradient(-45deg,{color} 0 10px,"
                f"rgba(255,255,255,.45) 10px 20px),linear-gradient({color},{color});"
                "background-size:40px 100%,100% 100%;animation:hubtune-busy 1s linear infinite")
        return (f"{_INDETERMINATE_CSS}<div class='run-bar' data-busy='true' style='background:#e5e7eb;"
                f"border-radius:4px;height:14px;margin:6px 0'><div style='{fill};height:14px;border-radius:4px'>"
                "</div></div>")
    return (f"<div class='run-bar' style='background:#e5e7eb;border-radius:4px;height:14px;margin:6px 0'>"
            f"<div style='width:{frac:.1%};background:{color};height:14px;border-radius:4px'></div></div>")


def _hidden(text: str) -> str:
    from ui.common import hide_server_paths

    return hide_server_paths(text)


def fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def checkpoint_step(info: dict) -> int | None:
    """The step Resume continues a run from: its latest complete checkpoint's, the one the trainer's
    `resume_from_checkpoint: latest` picks (None: there is none, so Resume starts the run again from step 0)."""
    ckpt = RunDir(info["dir"]).latest_checkpoint()
    return int(ckpt.name.removeprefix("step-")) if ckpt else None


def action_words(action: str, info: dict) -> str:
    """What Cancel or Resume did to the run, true to what Resume does next: continue from the latest checkpoint,
    or start again from the beginning when the run stopped before its first one."""
    name, step = f"`{info['name']}`", checkpoint_step(info)
    if action == "cancel":
        return (f"Run {name} cancelled before its first checkpoint: Resume starts it again from the beginning."
                if step is None else f"Run {name} cancelled; Resume continues it from its checkpoint at step {step}.")
    how = "from the beginning (no checkpoint yet)" if step is None else f"from its checkpoint at step {step}"
    if info["state"] == "queued":
        return f"Run {name} queued to {'restart' if step is None else 'resume'} {how} (position " \
               f"{info.get('queue_position')})."
    return f"Run {name} {'restarted' if step is None else 'resumed'} {how}."


def failure_html(info: dict | None) -> str | None:
    """The panel of a failed run (its error line, where to look, how to go on); a note for a cancelled one."""
    if not info or info["state"] not in ("failed", "cancelled"):
        return None
    step = checkpoint_step(info)
    resume = (f"it continues from the last checkpoint (step {step})" if step is not None else
              "it starts again from the beginning (no checkpoint was saved)")
    # Resume is the job runner's: a run from the shell (or a search's trial) goes on where it was started
    press = {"shell": "run its command again with <code>--resume_from_checkpoint latest</code>",
             "search": "resume its search"}.get(info.get("origin"), "press <b>Resume</b>")
    if info["state"] == "cancelled":
        return (f"<div id='run-note' style='border:1px solid #fcd34d;background:#fffbeb;color:#78350f;"
                f"border-radius:6px;padding:10px 12px'><b>Run cancelled</b> at step {info.get('step') or 0}. "
                f"{press[0].upper()}{press[1:]} and {resume}.</div>")
    from ui.common import hide_server_paths  # a visitor sees the file it gave, not where the server keeps it

    line = html.escape(hide_server_paths(info.get("error") or "the training process stopped without an error line"))
    return (f"<div id='run-error' role='alert' style='border:2px solid #dc2626;background:#fef2f2;color:#7f1d1d;"
            f"border-radius:6px;padding:10px 12px'><div style='font-weight:700;font-size:1.1em'>✗ Run failed</div>"
            f"<div style='margin:6px 0;font-family:var(--font-mono,monospace);white-space:pre-wrap'>{line}</div>"
            f"<div>The log below shows what the run did before it stopped. Fix the cause, then {press} "
            f"and {resume}, or start a new run.</div></div>")


def curve_series(run_dir: Path, v: heads_view.HeadView | None = None) -> dict[str, list[dict]]:
    """Per chart, its series {label, x (steps), y, points} from events.jsonl (see engine.hub.plots.curve_figure); the
    metric chart draws the run's head's eval_* headline metrics."""
    v = v or heads_view.view(heads_view.run_problem_type(run_dir))
    events = RunDir(run_dir).read_events()
    train = [e for e in events if e.get("type") == "train"]
    evals = [e for e in events if e.get("type") == "eval"]

    def series(label, rows, key, points=False):
        rows = [e for e in rows if isinstance(e.get(key), (int, float))]
        return {"label": label, "x": [e["step"] for e in rows], "y": [e[key] for e in rows], "points": points}

    return {"loss": [series("train", train, "loss"), series("validation", evals, "eval_loss", True)],
            "metrics": [*(series(v.curve_legend(legend), evals, f"eval_{key}", True) for key, legend in v.curves),
                        *_tuned_point(run_dir, v)],
            "lr": [series("learning rate", train, "learning_rate")],
            "speed": [series("samples/s", train, "samples_per_second")]}


def _tuned_point(run_dir: Path, v: heads_view.HeadView) -> list[dict]:
    """The finished run's best value as a marked point of its own where it differs from its evaluations (multi-label:
    at the thresholds tuned after training), at the step of the weights the model saved: the run's one best number
    (engine/rundir.best_metric), the same the runs tables show."""
    best = best_metric(RunDir(run_dir))
    legend = dict(v.curves).get(best.metric)
    if not (v.tuned and best.final and legend and best.value is not None):
        return []
    step = best.step if best.step is not None else (read_json(RunDir(run_dir).metrics, {}) or {}).get("steps")
    return [{"label": f"{legend}, {v.tuned}", "x": [step or 0], "y": [best.value], "points": True, "marker": "*"}]


# chart name -> (title, y range, tick style); the metric chart's come from the run's head (ui/heads_view.py)
CHARTS = {"loss": ("loss", None, "plain"), "metrics": (None, None, None), "lr": ("learning rate", None, "sci"),
          "speed": ("training samples/s", None, "plain")}


def curves(run_dir: Path | None) -> dict:
    """matplotlib Figures for the loss, validation-metric, learning-rate and throughput charts (for gr.Plot);
    with no run directory, the same charts saying "no data yet"; a run's empty chart says when its first point
    comes."""
    from engine.hub.plots import curve_figure

    v = heads_view.view(heads_view.run_problem_type(run_dir))
    data = curve_series(run_dir, v) if run_dir is not None else {name: [] for name in CHARTS}
    charts = dict(CHARTS, metrics=(v.curve_title, v.curve_range, v.curve_format))
    first = _first_points(run_dir) if run_dir is not None else {}
    return {name: curve_figure(title, data[name], y_range=y_range, y_format=style,
                               empty=f"no data yet: {first[name]}" if name in first else "no data yet")
            for name, (title, y_range, style) in charts.items()}


def _first_points(run_dir: Path) -> dict[str, str]:
    """When each chart gets its first point, from the run's config: a train event every logging_steps, an
    evaluation every eval_steps or epoch (the charts say so instead of a bare "no data yet" while the progress
    line already counts steps)."""
    from engine.rundir import read_config

    cfg, status = read_config(RunDir(run_dir)), RunDir(run_dir).read_status()
    logged, total = cfg.get("logging_steps"), status.get("total_steps")
    if not isinstance(logged, int) or status.get("state") not in ("queued", "running"):
        return {}  # a run that stopped gets no first point any more
    step = min(logged, total) if isinstance(total, int) and total > 0 else logged
    evaluated = (f"first evaluation at step {cfg.get('eval_steps')}" if cfg.get("eval_strategy") == "steps"
                 else "first evaluation after epoch 1")
    return {"loss": f"first point at step {step}", "lr": f"first point at step {step}",
            "speed": f"first point at step {step}", "metrics": evaluated}


def log_tail(run_dir: Path, lines: int = 200) -> str:
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


def log_html(run_dir: Path | None, origin: str | None = None) -> str:
    """The log tail in a box that shows its end: a reversed flex column starts scrolled to the bottom and stays
    there when the content is replaced (no script, so it holds on every refresh). A run trained from the shell
    has no train.log: its log went to the terminal that ran it."""
    text = log_tail(run_dir) if run_dir is not None else ""
    empty = "(no train.log: this run was trained from the shell, its log went to that terminal)" \
        if origin == "shell" else "(no log yet)"
    body = html.escape(text) if text else f"<span style='color:#6b7280'>{empty}</span>"
    return ("<div style='font-size:var(--block-label-text-size,12px);color:var(--block-label-text-color,#6b7280);"
            "margin-bottom:4px'>log (train.log) · the latest lines are at the bottom</div>"
            "<div id='run-log' style='display:flex;flex-direction:column-reverse;height:16em;overflow:auto;"
            "border:1px solid var(--border-color-primary,#e5e7eb);border-radius:6px;padding:6px 8px;"
            "background:var(--background-fill-secondary,#f9fafb)'><pre style='margin:0;white-space:pre-wrap;"
            f"word-break:break-word;font-size:12px;line-height:1.35'>{body}</pre></div>")


def runs_table(runs: list[dict]) -> pd.DataFrame:
    """The runs list: one row per run with status, base model, dataset and best metric."""
    rows = []
    for r in runs:
        best, base = r.get("best_metric"), str(r.get("base_model") or "")
        where = {"shell": " · shell", "search": " · search trial"}.get(r.get("origin"), "")
        rows.append({"run": r["name"], "status": r["state"] + (f" (#{r['queue_position']})" if r.get("queue_position")
                                                              else "") + where,
                     "step": f"{r.get('step') or 0}/{r.get('total_steps') or '?'}",
                     "best metric": f"{r.get('metric')} {best:.3f}" if isinstance(best, (int, float)) else "",
                     # the model's own name: the owner part of a Hub id or a local folder's path would crowd the list
                     "base model": Path(base).name or base,
                     "dataset": r.get("dataset")})
    return pd.DataFrame(rows, columns=["run", "status", "step", "best metric", "base model", "dataset"])


def results(run_dir: Path) -> dict | None:
    """Final views of a finished run, as its head shows them (ui/heads_view.py): headline metrics (metric/value),
    per-class report, the one-class warning, the mistakes (misclassified examples: label, prediction, score, then
    text; regression: the largest errors) and, for image runs, their pictures; `view` is the HeadView."""
    from engine.metrics import one_class_warning

    metrics = read_json(RunDir(run_dir).metrics)
    if not metrics:
        return None
    val = metrics.get("validation", {})

    def num(v, fmt="{:.4f}"):
        return fmt.format(v) if isinstance(v, (int, float)) else "–"

    v = heads_view.view(metrics)
    headline = pd.DataFrame([
        *((title, num(val.get(key))) for key, title in v.headline),
        ("validation loss", num(val.get("loss"))), ("validation examples", num(val.get("num_samples"), "{:d}")),
        ("best step", f"{metrics.get('best_step')} of {metrics.get('steps')}"),
        ("train samples/s", num(metrics.get("train_samples_per_second"), "{:.1f}"))], columns=["metric", "value"])
    wrong, total = heads_view.mistakes(run_dir, v)
    return {"headline": headline, "per_class": heads_view.per_class_table(val, v), "misclassified": wrong,
            "total": total, "warning": one_class_warning(val),
            "images": misclassified_images(run_dir), "view": v}


WRONG_COLUMNS = ["label", "prediction", "score", "text"]  # the short columns first: the text can be long


def misclassified(run_dir: Path, limit: int = 500) -> tuple[pd.DataFrame, int]:
    """(validation examples the model got wrong, worst first; how many examples were evaluated), per the run's
    head (ui/heads_view.mistakes)."""
    return heads_view.mistakes(run_dir, heads_view.view(heads_view.run_problem_type(run_dir)), limit)


def misclassified_images(run_dir: Path) -> list[tuple[str, str]] | None:
    """(PNG path, "true 3 → predicted 5 (0.62)") of an image run's saved mistakes; None for a text run."""
    samples = Path(run_dir) / "samples"
    index = samples / "index.jsonl"
    if not index.is_file():
        return None
    items = []
    for line in index.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        path = (samples / str(row.get("path", ""))).resolve()
        if row.get("kind") != "misclassified" or not path.is_relative_to(samples.resolve()) or not path.is_file():
            continue  # an index line pointing outside samples/ is never served
        items.append((str(path), f"true {row.get('label')} → predicted {row.get('prediction')} "
                                 f"({float(row.get('score') or 0):.2f})"))
    return items


def gallery_items(items: list[tuple[str, str]], side: int = 192) -> list:
    """(image, caption) for gr.Gallery: small images (8x8 digits, 28x28 MNIST) enlarged by a whole factor with
    nearest-neighbour, so the browser shows crisp pixels instead of blurring them while it scales them up."""
    from PIL import Image

    out = []
    for path, caption in items:
        with Image.open(path) as im:
            factor = max(1, side // max(im.size))
            out.append((im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST), caption))
    return out


CONFUSION_CACHE = heads_view.CONFUSION_CACHE


def confusion_png(run_dir: Path) -> str | None:
    """The picture of a finished run's validation predictions, drawn once and cached in the run directory: the
    confusion matrix, or for a regression run the predicted-vs-true scatter plot (ui/heads_view.figure_png)."""
    return heads_view.figure_png(run_dir)
