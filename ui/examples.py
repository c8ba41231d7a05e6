"""Examples for the Prediction tab, taken from the chosen run's own validation data.

A finished text run holds `eval_predictions.jsonl` (one validation text a line with its label, prediction and
score); a finished image run holds `samples/index.jsonl` and the PNGs it names (engine/tasks/image_classification/data.py save_samples).
The examples are correctly classified validation items, one per label first, so a new user clicking one sees
the model at work on data it was judged on. Hub ids and plain model folders have no validation data: no examples.
Only JSON and PNG files are read here (no torch).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

TEXT_LIMIT = 6
TEXT_CHARS = 300  # enough to recognise the topic; the table stays readable and the text box shows it whole
IMAGE_LIMIT = 10  # one per class of a digit model


@dataclass
class RunExamples:
    """What a picked model offers as examples; `hint` says why there are none (or where they come from)."""

    texts: list[dict] = field(default_factory=list)  # {"text", "label", "prediction", "score"}
    images: list[dict] = field(default_factory=list)  # {"path" (absolute), "label", "prediction", "score"}
    hint: str = ""


def run_dir(model: str | None) -> Path | None:
    """The run directory behind a picked model: the folder itself, or the run around a `<run>/model` folder.

    None for Hub ids and for folders that are not (inside) a run.
    """
    if not model or not str(model).strip():
        return None
    path = Path(str(model).strip()).expanduser()
    for candidate in (path, path.parent if path.name == "model" else None):
        if candidate is not None and candidate.is_dir() and (candidate / "status.json").is_file():
            return candidate
    return None


def trim(text: str, chars: int = TEXT_CHARS) -> str:
    """`text` cut at a word boundary to at most `chars` characters (an ellipsis marks the cut); runs of spaces and
    blank lines are squeezed, line breaks kept (a news headline stays on its own line)."""
    lines = [" ".join(line.split()) for line in str(text).splitlines()]
    text = "\n".join(line for line in lines if line)
    if len(text) <= chars:
        return text
    cut = text[:chars - 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    return (cut[:space] if space > chars // 2 else cut).rstrip(" ,;:.") + "…"


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line costs one example, not the list
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _pick(rows: list[dict], limit: int, label_order: list[str]) -> list[dict]:
    """One example per true label first (its most confident correct prediction; a mistake only when the run got
    no example of that label right, which shows what it confuses), then more correct ones, label by label."""
    right: dict[str, list[dict]] = {}
    wrong: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: -float(r.get("score") or 0)):
        bucket = right if row.get("label") == row.get("prediction") else wrong
        bucket.setdefault(str(row.get("label")), []).append(row)
    seen = set(right) | set(wrong)
    order = [lab for lab in label_order if lab in seen] + sorted(seen - set(label_order))
    queues = {lab: right.get(lab, []) + wrong.get(lab, []) for lab in order}
    chosen: list[dict] = [queues[lab][0] for lab in order][:limit]
    depth = 1
    # past the first round only correct rows: more mistakes would crowd out what the run does well
    while len(chosen) < limit and any(len(right.get(lab, [])) > depth for lab in order):
        chosen += [right[lab][depth] for lab in order if len(right.get(lab, [])) > depth][:limit - len(chosen)]
        depth += 1
    return chosen


def _label_order(run: Path) -> list[str]:
    try:
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return [str(x) for x in ((metrics.get("validation") or {}).get("labels") or [])]


@functools.lru_cache(maxsize=32)
def _text_examples(path: str, _mtime_ns: int, limit: int, chars: int) -> tuple:
    run = Path(path)
    rows = [r for r in _read_jsonl(run / "eval_predictions.jsonl") if isinstance(r.get("text"), str)
            and r["text"].strip()]
    seen, unique = set(), []
    for row in rows:  # validation sets repeat texts (news wires, short reviews): show each once
        key = " ".join(row["text"].split())
        if key not in seen:
            seen.add(key)
            unique.append(row)
    picked = _pick(unique, limit, _label_order(run))
    return tuple({"text": trim(r["text"], chars), "label": str(r.get("label")), "prediction": str(r.get("prediction")),
                  "score": float(r.get("score") or 0)} for r in picked)


def text_examples(run: Path, limit: int = TEXT_LIMIT, chars: int = TEXT_CHARS) -> list[dict]:
    """Up to `limit` validation texts of `run` (eval_predictions.jsonl), trimmed to `chars`; [] without the file."""
    path = Path(run) / "eval_predictions.jsonl"
    try:
        mtime = path.stat().st_mtime_ns  # a resumed run rewrites the file: a new key, not a stale list
    except OSError:
        return []
    return [dict(r) for r in _text_examples(str(Path(run)), mtime, limit, chars)]


def image_examples(run: Path, limit: int = IMAGE_LIMIT) -> list[dict]:
    """The "example" images of `run`'s samples/index.jsonl (one correct validation image per class), with
    absolute paths; entries whose file is missing or would lie outside samples/ are skipped. [] without it."""
    samples = (Path(run) / "samples").resolve()
    index = samples / "index.jsonl"
    if not index.is_file():
        return []
    found = []
    for row in _read_jsonl(index):
        if row.get("kind") != "example" or not isinstance(row.get("path"), str):
            continue
        path = (samples / row["path"]).resolve()
        if not path.is_relative_to(samples) or not path.is_file():
            continue
        found.append({"path": str(path), "label": str(row.get("label")), "prediction": str(row.get("prediction")),
                      "score": float(row.get("score") or 0)})
    order = {label: i for i, label in enumerate(_label_order(Path(run)))}  # 0, 1, 2 ... not evaluation order
    return sorted(found, key=lambda e: order.get(e["label"], len(order)))[:limit]


def for_model(model: str | None, kind: str | None) -> RunExamples:
    """The examples of a picked model: validation texts or images of its run, or none with a hint saying why.

    `kind` is the input kind of the model's task ('text', 'image'; None when unknown, e.g. a Hub id).
    """
    if not model or not str(model).strip():
        return RunExamples(hint="Pick a model to see examples from its validation data.")
    run = run_dir(model)
    if run is None:
        local = Path(str(model).strip()).expanduser()
        shown = local.name if local.exists() else str(model).strip()  # a folder by name: not the server's layout
        return RunExamples(hint=f"No examples for `{shown}`: examples come from a finished run's validation data "
                                "(`runs/<name>/`), and this is a Hub id or a model folder. Type your own input.")
    if kind == "image" or (kind is None and (run / "samples").is_dir()):
        images = image_examples(run)
        if images:
            return RunExamples(images=images)
        return RunExamples(hint=f"No example images in `{run.name}`: runs save `samples/` since they learned to; "
                                "this one is older. Train it again to get them.")
    texts = text_examples(run)
    if texts:
        return RunExamples(texts=texts)
    return RunExamples(hint=f"No examples in `{run.name}`: it has no `eval_predictions.jsonl` with texts.")
