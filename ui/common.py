"""Helpers shared by the tabs: the app context (runs folder, cross-tab components), run discovery, error mapping.

No torch here: everything reads JSON files only.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from engine.config import ConfigError
from engine.data import given_name
from engine.rundir import RunDir, read_json

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
    from engine.rundir import list_runs

    return [(run_label(run, Path(runs_dir)), str(run.path)) for run in list_runs(runs_dir, finished=True)]


def run_label(run: RunDir, runs_dir: Path) -> str:
    """'bbc · accuracy 0.912 · 5 labels' for the model picker ('vader · R² 0.412 · 1 labels' for regression)."""
    name = str(run.path.relative_to(runs_dir)) if run.path.is_relative_to(runs_dir) else run.path.name
    parts = [name]
    from ui.heads_view import headline_text

    if scores := headline_text(read_json(run.metrics, {}) or {}, count=1):  # the head's first metric
        parts.append(scores)
    id2label = (read_json(run.model / "config.json", {}) or {}).get("id2label") or {}
    if len(id2label) > 1:  # a regression model's one output is no label count
        parts.append(f"{len(id2label)} labels")
    return " · ".join(parts)


# The last error of each (browser session, handler), kept for the handler's `.failure()` listener that writes it
# into the message panel: a toast vanishes after seconds, the panel keeps the line until the next action.
_LAST_ERRORS: "OrderedDict[tuple[str, str], str]" = OrderedDict()
_LAST_ERRORS_MAX = 1000
_errors_lock = threading.Lock()


def model_dir(model: str) -> Path | None:
    """The local model folder of a run or model path, None for Hub ids (not downloaded until predicting)."""
    path = Path(model or "").expanduser()
    if (path / "model" / "config.json").exists():
        return path / "model"
    return path if (path / "config.json").exists() else None


def _session() -> str | None:
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    return getattr(request, "session_hash", None)


class SessionValue:
    """A value kept on the server for each browser (or API client) session, e.g. the file it uploaded.

    Unlike a gr.State, a handler can change it before it raises: an upload that is refused first empties it, so a
    refused file never leaves the previous one in use. Bounded: the oldest sessions are forgotten first.
    """

    def __init__(self, max_sessions: int = 1000):
        self._values: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions = max_sessions

    def get(self, default=None):
        with self._lock:
            return self._values.get(_session() or "", default)

    def peek(self):
        """This browser session's value, or None outside a session (a handler called directly, as tests do)."""
        return self.get() if _session() is not None else None

    def set(self, value) -> None:
        key = _session() or ""
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.max_sessions:
                self._values.popitem(last=False)


def _remember(key: str, line: str) -> None:
    session = _session()
    if session is None:
        return
    with _errors_lock:
        _LAST_ERRORS[(session, key)] = line
        _LAST_ERRORS.move_to_end((session, key))
        while len(_LAST_ERRORS) > _LAST_ERRORS_MAX:
            _LAST_ERRORS.popitem(last=False)


def last_error(request: gr.Request | None, key: str) -> str | None:
    """The error line the handler named `key` raised last in this browser session (taken: read once)."""
    with _errors_lock:
        return _LAST_ERRORS.pop((getattr(request, "session_hash", None), key), None)


_QUOTED_PATH = re.compile(r"'(/[^']+)'")
_BARE_PATH = re.compile(r"(?<![\w:/.~'])(/[\w.+@~-]+(?:/[\w.+@~-]+)+)")
_UPLOADED = re.compile(r"/?(?:[\w.~-]+/)*uploads/\d{8}-\d{6}-([\w.~-]+)")  # a stored upload, relative path too


def hide_server_paths(text: str) -> str:
    """`text` with every absolute path on the server cut to its file name: a visitor of the app knows the file
    it uploaded or the run it picked, not where the server keeps them (and must not learn the server's layout)."""
    def name(match: re.Match) -> str:
        return given_name(match.group(1))

    text = _UPLOADED.sub(lambda m: m.group(1), text)
    text = _QUOTED_PATH.sub(lambda m: f"'{name(m)}'", text)
    return _BARE_PATH.sub(name, text)


def error_line(e: BaseException) -> str:
    """The one line a user sees for an exception raised by engine code (server paths cut to file names)."""
    if isinstance(e, gr.Error):
        return str(e.message)
    if isinstance(e, ConfigError):
        return hide_server_paths("; ".join(e.problems))
    line = (str(e).strip().splitlines() or [""])[0][:300]
    return hide_server_paths(f"unexpected error: {type(e).__name__}: {line}")


def ui_errors(fn: Callable | None = None, *, toast: bool = True) -> Callable:
    """Turn engine errors into gr.Error with the same one-line text; anything else into a one-line gr.Error.

    API clients (gradio_client) receive the error as usual. With `toast=False` the page shows no toast: the
    event's `.failure()` listener (see `show_errors`) puts the line in the tab's message panel instead.
    The full traceback of an unexpected error goes to the server log, never to the page.
    """
    if fn is None:
        return functools.partial(ui_errors, toast=toast)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the server must keep serving; the user sees one line
            if not isinstance(e, (gr.Error, ConfigError)):
                log.exception("unexpected error in %s", fn.__name__)
            line = error_line(e)
            _remember(fn.__name__, line)
            raise gr.Error(line, print_exception=False, visible=toast) from None

    return wrapper


# marks every system font has (DejaVu Sans on Debian lacks U+2705 and U+26D4: they showed as boxes)
MARKS = {"ok": "✓", "warn": "⚠️", "error": "✗"}


def message(text: str, kind: str = "ok") -> str:
    """Markdown for a message panel: ✓ done, ⚠️ warning, ✗ error (the panel keeps it until the next action)."""
    return f"{MARKS[kind]} {text}" if text else ""


def show_errors(dependency, handler: Callable, panel, reset: Callable[[], tuple] | None = None, outputs=()):
    """When `handler`'s event fails, write its error line into `panel` (and reset `outputs` with `reset()`).

    Used for actions whose result belongs in a persistent panel rather than a toast that vanishes.
    """
    name = getattr(handler, "__wrapped__", handler).__name__

    def on_failure(request: gr.Request):
        line = last_error(request, name) or "the action failed; see the server log"
        shown = message(line, "error")
        return (shown, *reset()) if reset else shown

    return dependency.failure(on_failure, None, [panel, *outputs], show_progress="hidden", queue=False)


def progress_adapter(progress: gr.Progress | None) -> Callable[[float, str], None]:
    """An engine progress callback (fraction, message) that drives a gr.Progress."""

    def report(fraction: float, desc: str) -> None:
        if progress is not None:
            progress(fraction, desc=desc)

    return report
