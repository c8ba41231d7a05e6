"""Runs side by side: their curves on shared axes (by optimizer step or by epoch) and the keys of their config.yaml
that differ. Read from the run folders alone (no torch); the web app's Runs tab draws them, tests read them."""

from __future__ import annotations

import os
from pathlib import Path

from engine.hub.plots import COLORS, short_label, tick_formatter, titled_axes
from engine.rundir import RunDir, best_metric, read_config

X_AXES = ("step", "epoch")
NOT_COMPARED = ("output_dir",)  # every run's own folder: it differs by definition and says nothing of the run
NOT_SET = "(not set)"
# beyond plots.COLORS: enough distinct colours for a handful of runs on one chart
PALETTE = [*COLORS, "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def curves(run_dir: str | os.PathLike, x: str = "step") -> dict:
    """One run's curves from events.jsonl: {"train_loss", "eval_loss", "metric": (xs, ys), "metric_name"}, the
    metric being the one that picks the run's best model. `x`: "step", or "epoch" (train events carry their own
    fractional epoch; an evaluation's epoch is its step's, at the run's epochs per step)."""
    if x not in X_AXES:
        raise ValueError(f"x: '{x}' is not one of {', '.join(X_AXES)}")
    run = RunDir(run_dir)
    events = run.read_events()
    metric = best_metric(run, read_config(run), run.read_status(), events).metric
    train = [e for e in events if e.get("type") == "train" and _number(e.get("loss")) and _number(e.get("step"))]
    evals = [e for e in events if e.get("type") == "eval" and _number(e.get("step"))]
    last = next((e for e in reversed(train) if e["step"] and _number(e.get("epoch"))), None)
    per_step = last["epoch"] / last["step"] if last else None

    def at(e):
        if x == "step":
            return e["step"]
        if e.get("type") == "train" and _number(e.get("epoch")):
            return e["epoch"]
        return round(e["step"] * per_step, 4) if per_step else None

    def series(rows, key):
        pts = [(at(e), e[key]) for e in rows if _number(e.get(key)) and at(e) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    return {"train_loss": series(train, "loss"), "eval_loss": series(evals, "eval_loss"),
            "metric": series(evals, f"eval_{metric}") if metric else ([], []), "metric_name": metric}


def overlay_figure(title: str, lines: list[dict], x_label: str = "step", y_format: str = "plain", size=(5.6, 3.4)):
    """Several runs' series on one pair of axes: a colour per run, solid for training and dashed with markers for
    validation. `lines`: [{"run", "x", "y", "validation": bool}]; the legend names each run once and each style once."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    shown = [line for line in lines if line["x"]]
    fig, ax = titled_axes(title, size, empty=not shown)
    if ax is None:
        return fig
    runs = list(dict.fromkeys(line["run"] for line in shown))
    color = {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(runs)}
    for line in shown:
        dashed = line.get("validation")
        ax.plot(line["x"], line["y"], color=color[line["run"]], linewidth=1.6 if not dashed else 1.3,
                linestyle="--" if dashed else "-", marker="o" if dashed or len(line["x"]) == 1 else None,
                markersize=4, clip_on=False)
    if x_label == "step":
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True, min_n_ticks=2))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_formatter(tick_formatter(y_format))
    ax.set_xlim(left=0)
    ax.tick_params(labelsize=8, length=3)
    ax.set_xlabel(x_label, fontsize=8, labelpad=1)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [Line2D([], [], color=color[run], linewidth=2, label=short_label(run, 28)) for run in runs]
    styles = {bool(line.get("validation")) for line in shown}
    if len(styles) > 1:  # say which line style is which only when both are drawn
        handles += [Line2D([], [], color="#374151", linewidth=1.6, label="train"),
                    Line2D([], [], color="#374151", linewidth=1.3, linestyle="--", marker="o", markersize=4,
                           label="validation")]
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def comparison_figures(data: dict[str, dict], x: str = "step", metric_format: str = "plain") -> tuple:
    """(loss figure, metric figure) of runs overlaid on shared axes; `data`: each run's `curves(run, x)` by name."""
    losses = [line for name, c in data.items() for line in (
        {"run": name, "x": c["train_loss"][0], "y": c["train_loss"][1]},
        {"run": name, "x": c["eval_loss"][0], "y": c["eval_loss"][1], "validation": True})]
    names = list(dict.fromkeys(c["metric_name"] for c in data.values() if c["metric_name"]))
    metrics = [{"run": name, "x": c["metric"][0], "y": c["metric"][1], "validation": True} for name, c in data.items()]
    title = "validation " + (" / ".join(names) or "metric")
    return (overlay_figure("loss", losses, x, "plain"),
            overlay_figure(title, metrics, x, metric_format))


def config_diff(run_dirs: dict[str, Path]) -> list[dict]:
    """The config.yaml keys whose values differ between the named runs: [{"key", <run>: value, ...}] in the configs'
    own key order; a key one run lacks shows NOT_SET. output_dir (each run's own folder) is left out."""
    configs = {name: read_config(RunDir(path)) for name, path in run_dirs.items()}
    keys = list(dict.fromkeys(k for cfg in configs.values() for k in cfg))
    out = []
    for key in keys:
        values = [cfg.get(key, NOT_SET) for cfg in configs.values()]
        if key not in NOT_COMPARED and len({repr(v) for v in values}) > 1 and not _same_column(key, values, configs):
            out.append({"key": key, **dict(zip(configs, values))})
    return out


DATA_KEYS = ("dataset_name", "dataset_config_name", "dataset_revision", "train_file")


def _same_column(key: str, values: list, configs: dict) -> bool:
    """An empty column setting and the column the task reads first (text_column: null and text) name the same
    column when every run reads the same data: the run that named it found it there, so the empty one took it."""
    from engine import tasks

    first = next(iter(configs.values()))
    if any(tuple(c.get(k) for k in DATA_KEYS) != tuple(first.get(k) for k in DATA_KEYS) for c in configs.values()):
        return False
    chosen = tasks.for_data(first.get("dataset_name"), first.get("train_file")).first_choice_columns.get(key)
    return chosen is not None and {repr(v) for v in values} <= {repr(None), repr(NOT_SET), repr(chosen)}
