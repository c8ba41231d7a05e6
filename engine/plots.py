"""PNG plots of a finished run (confusion matrix, loss curve), shared by the Hub push and the UI.

matplotlib runs on the Agg backend: no display is needed, and nothing here touches pyplot's global state.
"""

from __future__ import annotations

from pathlib import Path

from engine.events import RunDir, read_json


def _figure(size):
    from matplotlib.figure import Figure

    # a bare Figure (not pyplot) is thread-safe enough for a web server and never opens a window
    return Figure(figsize=size, dpi=110, layout="constrained")


def confusion_matrix_png(run_dir, out_dir=None) -> Path:
    """Draw metrics.json's validation confusion matrix; returns the PNG path (in `out_dir`, default the run dir)."""
    run = RunDir(run_dir)
    val = (read_json(run.metrics, default={}) or {}).get("validation") or {}
    matrix, labels = val.get("confusion_matrix"), val.get("labels")
    if not matrix or not labels:
        raise FileNotFoundError(f"{run.metrics}: no validation confusion matrix; is the run finished?")
    n = len(labels)
    fig = _figure((1.6 + 0.55 * n, 1.3 + 0.5 * n))
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Validation confusion matrix (n={val.get('num_samples', sum(map(sum, matrix)))})", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, Path(out_dir or run.path) / "confusion_matrix.png")


def loss_curve_png(run_dir, out_dir=None) -> Path:
    """Draw training loss (and validation loss at each evaluation) against the step; returns the PNG path."""
    run = RunDir(run_dir)
    events = run.read_events()
    train = [(e["step"], e["loss"]) for e in events if e.get("type") == "train" and "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in events if e.get("type") == "eval" and "eval_loss" in e]
    if not train and not evals:
        raise FileNotFoundError(f"{run.events}: no training or evaluation losses logged yet")
    fig = _figure((5.5, 3.4))
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, Path(out_dir or run.path) / "loss_curve.png")


def _save(fig, path: Path) -> Path:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)  # a reader (the UI) never sees half a PNG
    return path
