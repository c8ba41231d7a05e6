"""The Fine-tuning tab's upload: store the file (the session's own state), read its columns with the trainer's
checks, fill the column pickers; a cleared or refused upload resets them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gradio as gr

from engine import tasks
from engine.runs.jobs import JobManager, save_upload
from ui.common import SessionValue, error_line, message, show_errors, ui_errors

TEXT_NAMES = ("text", "sentence", "review", "content", "document", "article", "body")
LABEL_NAMES = ("label", "labels", "category", "topic", "class", "sentiment", "target")
DEFAULT_COLUMNS = ["text", "label"]
NO_UPLOAD = "train_file: no file uploaded yet; upload a .csv, .json, .jsonl or .parquet file, or a .zip of images"


@dataclasses.dataclass(frozen=True)
class Refused:
    """What the session's upload value holds after a refused file: the refusal's line, which Check and Start
    repeat until the next upload (not 'no file uploaded yet', as if nothing had happened)."""
    line: str


def stored_path(uploaded) -> str | None:
    """The stored upload's path, or None (nothing uploaded, cleared, or refused)."""
    return uploaded if isinstance(uploaded, str) else None


def missing_line(uploaded) -> str:
    """Why there is no file to train on: the last refusal's line, else that none was uploaded."""
    return uploaded.line if isinstance(uploaded, Refused) else NO_UPLOAD


def _upload_columns(info: dict) -> tuple[dict, dict, str]:
    """(text picker update, label picker update, message) for an uploaded file, as its task described it."""
    kinds = info["columns"]
    if kinds is None:  # the task finds its own columns (an image folder)
        return gr.update(), gr.update(), info["note"]
    cols = list(kinds)
    texts = [n for n, k in kinds.items() if k == "text"]
    text = next((n for n in TEXT_NAMES if n in texts), texts[0] if texts else None)
    others = [n for n in cols if n != text]
    label = next((n for n in LABEL_NAMES if n in others), others[-1] if others else None)
    return (gr.update(choices=texts or cols, value=text), gr.update(choices=others or cols, value=label),
            info["note"])


def _reset_columns() -> tuple:
    """The column pickers a cleared or refused upload leaves: the defaults."""
    return gr.update(choices=DEFAULT_COLUMNS, value="text"), gr.update(choices=DEFAULT_COLUMNS, value="label")


def wire_upload(c: dict, mgr: JobManager, uploads: SessionValue, after_data) -> None:
    @ui_errors(toast=False)
    def on_upload(file):
        uploads.set(None)  # before anything can fail: a refused file never leaves the previous one in use
        if not file:
            return (*_reset_columns(), "")
        saved = None
        try:
            saved = save_upload(file, mgr.runs_dir, Path(file).name)
            result = _upload_columns(tasks.describe_file(saved))  # read with the trainer's own checks
        except Exception as e:
            if saved is not None:
                saved.unlink(missing_ok=True)  # an unreadable upload is not kept in runs/uploads
            uploads.set(Refused(error_line(e)))
            raise
        uploads.set(str(saved))
        return result

    outputs = [c["text_col"], c["label_col"], c["problems"]]
    dep = c["upload"].upload(on_upload, c["upload"], outputs, api_name="train_upload", show_progress_on=c["problems"])
    # a refused file is taken off the widget too: what the page shows is what would train
    refused = show_errors(dep, on_upload, c["problems"], reset=lambda: (None, *_reset_columns()),
                          outputs=[c["upload"], c["text_col"], c["label_col"]])
    after_data(dep, "train_upload")
    # a failed event runs no .then(): the preview follows a refused file from the failure listener
    after_data(refused, "train_upload_refused")

    def on_clear():
        uploads.set(None)
        return (*_reset_columns(), message("Upload cleared: choose a file (or another data source) before Check."))

    after_data(c["upload"].clear(on_clear, None, outputs, api_name="train_upload_clear", show_progress="hidden"),
               "train_upload_clear")


