"""Plots of a run: the confusion matrix and loss curve PNGs pushed to the Hub, and the live curves of the web app.

matplotlib runs on the Agg backend: no display is needed, and nothing here touches pyplot's global state.
Every size here is chosen for the pixels a reader sees: a figure `w` inches wide at DPI is `w * DPI` pixels, and
the web app shows these images at about that width (two curves side by side, the confusion matrix across the
results area), so a font of `p` points reads as `p * DPI / 72` pixels on screen and on the model card.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from engine.rundir import RunDir, read_json

DPI = 100
MAX_CONFUSION_WIDTH_IN = 6.8  # the results area of the web app is ~680 px wide; the Hub card is wider


def _figure(size, dpi: int = DPI):
    from matplotlib.figure import Figure

    # a bare Figure (not pyplot) is thread-safe enough for a web server and never opens a window
    return Figure(figsize=size, dpi=dpi, layout="constrained")


def short_label(label, width: int = 14, keep: str = "both") -> str:
    """`label` cut to `width` characters with an ellipsis, so long class names do not squeeze the matrix. `keep`:
    "both" ends (the ellipsis in the middle), only the "start", or only the "end"."""
    text = str(label)
    if len(text) <= width:
        return text
    head = {"both": (width - 1) // 2, "start": width - 1, "end": 0}[keep]
    tail = width - 1 - head
    return text[:head].rstrip() + "…" + (text[len(text) - tail:].lstrip() if tail else "")


def short_labels(labels, width: int = 14) -> list[str]:
    """Every label shortened by `short_label`, keeping the part where these names differ: the ellipsis goes in
    the middle, at the end or at the start, whichever leaves the most names distinct; names still alike get
    their class index in front ("4 questi…tion")."""
    tries = [[short_label(lab, width, keep) for lab in labels] for keep in ("both", "start", "end")]
    names = max(tries, key=lambda names: len(set(names)))  # max keeps the first of equals: the middle
    alike = {n for n in names if names.count(n) > 1}
    return [short_label(f"{i} {labels[i]}", width) if n in alike else n for i, n in enumerate(names)]


def confusion_matrix_figure(matrix: list[list[int]], labels: list[str], title: str = "Validation confusion matrix"):
    """A confusion matrix (rows = true labels) readable up to ~20 classes at the width the app shows it.

    Cells, fonts and label length shrink with the class count; colours are each true class's share (row-normalised)
    so a rare class's mistakes are as visible as a common one's, and the counts are written in every cell.
    """
    n = len(labels)
    cell = min(0.7, max(0.26, 5.2 / max(n, 1)))  # inches: 5 classes 0.7, 10 classes 0.52, 20 classes 0.26
    count_pt = min(11.0, max(7.0, cell * 72 * 0.33))
    label_pt = min(10.0, max(7.5, cell * 72 * 0.36))
    names = short_labels(labels, 16 if n <= 10 else 14)
    widest = max((len(s) for s in names), default=1)
    margin = 0.45 + widest * label_pt * 0.62 / 72  # y tick labels + the axis title
    rotate = widest * label_pt * 0.62 / 72 > cell * 0.95  # x labels wider than a cell are slanted
    width = min(MAX_CONFUSION_WIDTH_IN, margin + n * cell + 0.3)
    width = max(width, 3.2)
    title = textwrap.fill(title, int(width * 72 / ((label_pt + 1) * 0.55)))
    height = 0.6 + 0.2 * title.count("\n") + n * cell + (margin if rotate else 0.45)
    fig = _figure((width, max(height, 2.6)))
    ax = fig.add_subplot()
    rows = [sum(r) or 1 for r in matrix]
    share = [[v / rows[i] for v in r] for i, r in enumerate(matrix)]
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="equal")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            color = "white" if share[i][j] > 0.55 else ("#9ca3af" if v == 0 else "black")
            ax.text(j, i, str(v), ha="center", va="center", fontsize=count_pt, color=color)
    ax.set_xticks(range(n), names, rotation=45 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor", fontsize=label_pt)
    ax.set_yticks(range(n), names, fontsize=label_pt)
    ax.tick_params(length=0)
    ax.set_xlabel("predicted label", fontsize=label_pt + 0.5)
    ax.set_ylabel("true label", fontsize=label_pt + 0.5)
    fig.suptitle(title, x=0.02, ha="left", fontsize=label_pt + 1)  # the figure's left: the axes start after labels
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


def confusion_matrix_png(run_dir, out_dir=None, filename: str = "confusion_matrix.png") -> Path:
    """Draw metrics.json's validation confusion matrix; returns the PNG path (in `out_dir`, default the run dir)."""
    run = RunDir(run_dir)
    val = (read_json(run.metrics, default={}) or {}).get("validation") or {}
    matrix, labels = val.get("confusion_matrix"), val.get("labels")
    if not matrix or not labels:
        raise FileNotFoundError(f"{run.metrics}: no validation confusion matrix; is the run finished?")
    n_samples = val.get("num_samples", sum(map(sum, matrix)))
    fig = confusion_matrix_figure(matrix, labels, f"Validation confusion matrix: {n_samples} examples "
                                                   "(colour: share of each true label)")
    return _save(fig, Path(out_dir or run.path) / filename)


def scatter_figure(labels: list[float], predictions: list[float], title: str = "Validation: predicted vs true"):
    """Predicted against true values (regression), with the diagonal where a perfect model's points lie."""
    fig = _figure((5.5, 4.6))
    ax = fig.add_subplot()
    lo, hi = min(min(labels), min(predictions)), max(max(labels), max(predictions))
    pad = (hi - lo) * 0.04 or 1.0
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#9ca3af", lw=1, ls="--", label="prediction = true")
    ax.scatter(labels, predictions, s=12, alpha=0.6, color=COLORS[0], edgecolors="none",
               label=f"{len(labels)} examples")
    ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), xlabel="true value", ylabel="predicted value")
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", fontsize=9, frameon=False)
    ax.grid(alpha=0.3)
    return fig


def scatter_png(run_dir, out_dir=None, filename: str = "predictions_scatter.png") -> Path:
    """Draw eval_predictions.jsonl's predicted-vs-true values (regression runs); returns the PNG path."""
    run = RunDir(run_dir)
    rows = _jsonl(run.predictions)
    pairs = [(float(r["label"]), float(r["prediction"])) for r in rows if "error" in r]
    if not pairs:
        raise FileNotFoundError(f"{run.predictions}: no regression predictions; is the run finished?")
    fig = scatter_figure([a for a, _ in pairs], [b for _, b in pairs],
                         f"Validation: predicted vs true ({len(pairs)} examples)")
    return _save(fig, Path(out_dir or run.path) / filename)


def _jsonl(path: Path) -> list[dict]:
    import json

    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea"]
MAX_MARKED = 25  # evaluations beyond this many are drawn as a line: markers would hide the training curve


def curve_figure(title: str, series: list[dict], y_range: tuple | None = None, y_format: str = "plain",
                 size=(3.3, 2.35), empty: str = "no data yet"):
    """A small line chart of values against the optimizer step, for the web app's live curves.

    `series`: [{"label", "x", "y", "points": bool, "marker"}]: `points` draws a marker (default "o"; "*" drawn
    larger) at every value (evaluations are few) and writes the latest value beside it; a series with a single
    value always gets a marker, since a line needs two points. With no value at all the chart says `empty` ("no
    data yet", or when the first point comes) instead of drawing empty axes. Steps are integers. `y_format`: "plain", "percent" (0..1 as %) or "sci"
    (learning rates).
    """
    from matplotlib.ticker import MaxNLocator

    shown = [s for s in series if s["x"]]
    fig, ax = titled_axes(title, size, empty=not shown, note=empty)
    if ax is None:
        return fig
    right = max(max(max(s["x"]) for s in shown), 1)
    for s, color in zip(shown, COLORS):
        n = len(s["x"])
        marked = n == 1 or (s.get("points") and n <= MAX_MARKED)
        ax.plot(s["x"], s["y"], marker=s.get("marker", "o") if marked else None,
                markersize=(5 if n <= 8 else 3.5) * (2 if s.get("marker") == "*" else 1), linewidth=1.6,
                color=color, label=s["label"], clip_on=False)
    ax.set_xlim(0, right)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True, min_n_ticks=2))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.yaxis.set_major_formatter(tick_formatter(y_format))
    if y_range:
        ax.set_ylim(*y_range)
    _label_latest(ax, [(s, c) for s, c in zip(shown, COLORS) if s.get("points")], y_format, right)
    ax.tick_params(labelsize=8, length=3)
    ax.set_xlabel("step", fontsize=8, labelpad=1)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if len(shown) > 1:
        ax.legend(fontsize=8, frameon=False, loc="best")
    return fig


def titled_axes(title: str, size, empty: bool = False, note: str = "no data yet") -> tuple:
    """(figure, its one axes titled `title` at the left); when `empty`, the chart says `note` (its first line
    larger) instead of drawing empty axes, and the axes returned are None."""
    fig = _figure(size)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10, loc="left")
    if not empty:
        return fig, ax
    head, _, rest = note.partition(": ")
    ax.text(0.5, 0.55 if rest else 0.5, head, ha="center", va="center", fontsize=10, color="#6b7280", transform=ax.transAxes)
    if rest:
        ax.text(0.5, 0.4, rest, ha="center", va="center", fontsize=8, color="#6b7280", transform=ax.transAxes)
    ax.set_axis_off()
    return fig, None


def _label_latest(ax, marked: list[tuple[dict, str]], y_format: str, right: float) -> None:
    """Write each marked series' latest value beside its last point: the highest above it, the others below
    (level with it near the bottom of the axes), on the side of the point that faces the middle of the chart, so
    labels neither collide nor leave the axes."""
    bottom, top = ax.get_ylim()
    ranked = sorted(marked, key=lambda sc: -sc[0]["y"][-1])
    # near the bottom every label goes above its point, one line (12 pt) further up per rank: two close values
    # (a multi-label run's micro and macro F1 of 0.1 and 0.08) otherwise wrote over each other
    low = any((s["y"][-1] - bottom) / ((top - bottom) or 1) < 0.15 for s, _ in ranked)
    for rank, (s, color) in enumerate(ranked):
        x, value = s["x"][-1], s["y"][-1]
        toward_left = x > right / 2
        dy = 6 + 12 * rank if low else (6 if rank == 0 else -13 - 12 * (rank - 1))
        dx = -5 if toward_left else 5
        ax.annotate(f"{value:.1%}" if y_format == "percent" else f"{value:.4g}", (x, value),
                    textcoords="offset points", xytext=(dx, dy), ha="right" if toward_left else "left",
                    fontsize=8, color=color)


def _decimals(step: float) -> int:
    """The fewest decimals that write `step` (a tick spacing: 0.25 -> 2, 0.005 -> 3, 5 -> 0) exactly enough."""
    step = abs(step)
    for d in range(7):
        if step and abs(round(step, d) - step) < step * 1e-3:
            return d
    return 6


def _fmt(v: float, style: str, step: float | None = None) -> str:
    """A short label for `v` on an axis whose ticks are `step` apart: 85% / 2.4k / 3e-4 / 1.605, with as many
    digits as tell neighbouring ticks apart and never a float's full repr."""
    step = step or abs(v) or 1.0
    if style == "percent":
        return f"{v * 100:.{_decimals(step * 100)}f}%"
    if style == "sci" and v == 0:
        return "0"
    if style == "sci":
        exp = math.floor(math.log10(abs(v)))
        mantissa = f"{v / 10 ** exp:.{min(3, _decimals(step / 10 ** exp))}f}".rstrip("0").rstrip(".")
        return f"{mantissa}e{exp}"
    if abs(v) >= 1000 or step >= 1000:
        return f"{v / 1000:.{_decimals(step / 1000)}f}k"
    return f"{v:.{_decimals(step)}f}"


def tick_formatter(style: str):
    from matplotlib.ticker import Formatter

    class Ticks(Formatter):
        ticks: list = []

        def set_locs(self, locs):  # called with every tick position before any label is asked for
            self.ticks = sorted(locs)

        def __call__(self, v, pos=None):
            locs = self.ticks
            step = min(b - a for a, b in zip(locs, locs[1:])) if len(locs) > 1 else None
            return _fmt(v, style, step)

    return Ticks()


def loss_curve_png(run_dir, out_dir=None) -> Path:
    """Draw training loss (and validation loss at each evaluation) against the step; returns the PNG path."""
    run = RunDir(run_dir)
    events = run.read_events()
    train = [(e["step"], e["loss"]) for e in events if e.get("type") == "train" and "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in events if e.get("type") == "eval" and "eval_loss" in e]
    if not train and not evals:
        raise FileNotFoundError(f"{run.events}: no training or evaluation losses logged yet")
    series = [{"label": "train loss", "x": [s for s, _ in train], "y": [v for _, v in train]},
              {"label": "validation loss", "x": [s for s, _ in evals], "y": [v for _, v in evals], "points": True}]
    fig = curve_figure("Loss", series, size=(5.5, 3.4))
    return _save(fig, Path(out_dir or run.path) / "loss_curve.png")


def _save(fig, path: Path) -> Path:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of its own: two pages drawing the same run at once never write into one file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, path)  # a reader (the UI) never sees half a PNG
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
