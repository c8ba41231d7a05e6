"""Helpers shared by the tabs: the app context (runs folder, cross-tab components), run discovery, error mapping.

No torch here: everything reads JSON files only.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from engine.config import ConfigError
from engine.events import RunDir, read_json

log = logging.getLogger("hubtune")


def default_runs_dir() -> Path:
    """The runs folder: HUBTUNE_RUNS_DIR, else runs/ in the working directory."""
    return Path(os.environ.get("HUBTUNE_RUNS_DIR") or "runs")


@dataclass
class AppContext:
    """What every tab builder receives.

    components: components other tabs may drive, by name, e.g. "prediction.model" (the model picker) and
        "prediction.revision"; a Fine-tuning tab can put a finished run there and select the tab:
        `outputs=[ctx.components["prediction.model"], ctx.tabs]`, returning `(run_path, gr.Tabs(selected="prediction"))`.
    on_built: callbacks run once every tab exists (inside the Blocks context), so a tab built first can still
        wire events to components of a tab built after it.
    """

    runs_dir: Path
    demo: gr.Blocks | None = None
    tabs: gr.Tabs | None = None
    components: dict[str, Any] = field(default_factory=dict)
    on_built: list[Callable[["AppContext"], None]] = field(default_factory=list)


def finished_runs(runs_dir: Path) -> list[tuple[str, str]]:
    """(label, path) of every finished run under `runs_dir` (two levels deep), newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = []
    for path in [*runs_dir.glob("*"), *runs_dir.glob("*/*")]:
        run = RunDir(path)
        if path.is_dir() and run.is_finished():
            found.append((run.status.stat().st_mtime, run_label(run, runs_dir), str(path)))
    return [(label, p) for _, label, p in sorted(found, reverse=True)]


def run_label(run: RunDir, runs_dir: Path) -> str:
    """'bbc · accuracy 0.912 · 5 labels' for the model picker."""
    name = str(run.path.relative_to(runs_dir)) if run.path.is_relative_to(runs_dir) else run.path.name
    parts = [name]
    val = (read_json(run.metrics, {}) or {}).get("validation") or {}
    if isinstance(val.get("accuracy"), (int, float)):
        parts.append(f"accuracy {val['accuracy']:.3f}")
    id2label = (read_json(run.model / "config.json", {}) or {}).get("id2label") or {}
    if id2label:
        parts.append(f"{len(id2label)} labels")
    return " · ".join(parts)


def ui_errors(fn: Callable) -> Callable:
    """Turn engine errors into gr.Error with the same one-line text; anything else into a one-line gr.Error.

    The full traceback of an unexpected error goes to the server log, never to the page.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ConfigError as e:
            raise gr.Error("; ".join(e.problems), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - the server must keep serving; the user sees one line
            log.exception("unexpected error in %s", fn.__name__)
            line = (str(e).strip().splitlines() or [""])[0][:300]
            raise gr.Error(f"unexpected error: {type(e).__name__}: {line}", print_exception=False) from None

    return wrapper


def progress_adapter(progress: gr.Progress | None) -> Callable[[float, str], None]:
    """An engine progress callback (fraction, message) that drives a gr.Progress."""

    def report(fraction: float, desc: str) -> None:
        if progress is not None:
            progress(fraction, desc=desc)

    return report
