"""Text prediction: texts tokenized without padding, sorted by length and cut into token-budget batches, so each
batch is padded only to its own longest text; forward passes under `torch.inference_mode()` in one of the
precisions: fp32 (the exact reference), bf16 autocast where the hardware has native bf16, or dynamic int8 Linear
layers on the CPU (quantization.py). bf16 under 'auto' and int8 always re-run their close calls in fp32: the
rows whose prediction lies within a guard band of flipping (the head says which rows are close). What 'auto' picks
for a model is engine/tasks/text_classification/auto_precision.py's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from engine.errors import PredictError
from engine.tasks.base import LoadedModel, model_bytes

PRECISIONS = ("auto", "fp32", "bf16", "int8")
# A token never spans more than ~100 characters (WordPiece's max_input_chars_per_word): cutting a text at
# max_length * 100 characters keeps every token the model sees and bounds tokenizing a 1 MB paste.
MAX_CHARS_PER_TOKEN = 100
# 'auto' recomputes in fp32 every row whose top-2 logit margin is below this: bf16 autocast moves the logits of a
# BERT-sized classifier by ~0.01-0.05, so a label can only flip inside this band.
BF16_GUARD = float(os.environ.get("HUBTUNE_BF16_GUARD", "0.25"))
# int8 recomputes in fp32 every row whose int8 margin (top-2 logits; multi-label: distance to a threshold) is below
# this. Dynamic int8 moves a fine-tuned MiniLM's logits by ~0.04 (median) to ~0.8 (p99) on varied BBC paragraphs,
# ten times bf16's; at 0.5, 99.1% label agreement with fp32 on 1,000 paragraphs becomes 99.8% for 1.8% of rows
# recomputed (bench/README.md: 3.09x pipeline on an AVX2 CPU; 0.25 gave 99.5%, 0.75 99.9% for 3.3% recomputed).
INT8_GUARD = float(os.environ.get("HUBTUNE_INT8_GUARD", "0.5"))


def _run_max_length(path: Path) -> int | None:
    """max_seq_length of the run that produced `path` (runs/x/model), so prediction sees what evaluation saw."""
    cfg = path.parent / "config.yaml"
    if path.name != "model" or not cfg.is_file():
        return None
    import yaml

    try:
        value = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("max_seq_length")
    except (OSError, yaml.YAMLError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def load(name: str, revision, path: Path, device: str | None, bf16) -> LoadedModel:
    """A LoadedModel for a saved text classifier (its tokenizer as the processor)."""
    import torch

    from engine import modeling
    from engine.tasks import heads
    from engine.tasks.text_classification.models import load_for_inference

    model, tokenizer = load_for_inference(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    id2label = model.config.id2label
    labels = [str(id2label[i]) for i in range(len(id2label))]
    limit = modeling.max_positions(model.config) or 512
    tok_limit = tokenizer.model_max_length if 0 < tokenizer.model_max_length < 1_000_000 else limit
    max_length = min(_run_max_length(path) or 512, limit, tok_limit)
    return LoadedModel(name, revision, path, model, tokenizer, labels, max_length, min(limit, tok_limit),
                       "text-classification", device, bf16(device), model_bytes(model),
                       head=heads.for_config(model.config))


def scores(lm: LoadedModel, texts: list, batch_size: int, precision: str, max_length: int | None = None,
           guard: float | None = None) -> list:
    """One score row (numpy) per text, None for blank or missing texts, in the order given.

    `precision` 'auto' here is the unmeasured auto (bf16 with its guard where native, else fp32); auto_precision.py
    resolves a measured one first. `guard`: the band of close calls re-run in fp32 (default: int8's INT8_GUARD, none
    for an explicit bf16; 0 turns it off, as the benchmark does to show what the guard buys).
    """
    import numpy as np

    kind, guard = _plan(lm, precision, guard)

    # an explicit max_length may go beyond the run's training length, never beyond the model's positions
    length = min(max_length, lm.limit) if max_length else lm.max_length
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    if not keep:
        return [None] * len(texts)
    cut = length * MAX_CHARS_PER_TOKEN
    with lm.lock:
        enc = lm.tokenizer([texts[i][:cut] for i in keep], truncation=True, max_length=length)
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    ids = enc["input_ids"]
    order = sorted(range(len(keep)), key=lambda j: len(ids[j]), reverse=True)
    result = np.zeros((len(keep), len(lm.labels)), dtype=np.float32)
    pad_id = lm.tokenizer.pad_token_id or 0
    for rows in _token_batches(order, [len(ids[j]) for j in order], batch_size):
        batch = _pad([[enc[n][j] for j in rows] for n in names], names, pad_id, lm.tokenizer.padding_side)
        batch = {k: v.to(lm.device) for k, v in batch.items()}
        result[rows] = lm.head.scores(_forward(lm, batch, kind, guard)).cpu().numpy()
    out: list = [None] * len(texts)
    for j, i in enumerate(keep):
        out[i] = result[j]
    return out


def tokens_used(lm: LoadedModel, text: str, max_length: int | None = None) -> tuple[int, bool]:
    """(tokens the model sees for `text`, whether the text was truncated to fit)."""
    length = min(max_length, lm.limit) if max_length else lm.max_length
    with lm.lock:
        n = len(lm.tokenizer(text[:length * MAX_CHARS_PER_TOKEN + 1], truncation=True, max_length=length + 1)
                ["input_ids"])
    return min(n, length), n > length or len(text) > length * MAX_CHARS_PER_TOKEN


def _token_batches(order: list[int], lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Cut length-sorted rows (longest first) into batches of about `batch_size` x 128 padded tokens.

    Long texts go `batch_size` at a time; short ones in proportionally larger batches (up to 8x), which keeps
    matmuls big enough to run near the machine's peak instead of paying per-batch overhead on tiny ones.
    """
    budget, start = batch_size * 128, 0
    while start < len(order):
        longest = max(lengths[start], 1)
        size = min(8 * batch_size, max(batch_size, budget // longest))
        yield order[start:start + size]
        start += size


def _pad(columns: list[list[list[int]]], names: list[str], pad_id: int, side: str) -> dict:
    """Pad one batch to its own longest row (dynamic padding) as torch tensors."""
    import torch

    width = max(len(r) for r in columns[0])
    out = {}
    for name, rows in zip(names, columns):
        value = pad_id if name == "input_ids" else 0
        tensor = torch.full((len(rows), width), value, dtype=torch.long)
        for i, r in enumerate(rows):
            if side == "left":
                tensor[i, width - len(r):] = torch.tensor(r)
            else:
                tensor[i, :len(r)] = torch.tensor(r)
        out[name] = tensor
    return out


def _plan(lm: LoadedModel, precision: str, guard: float | None) -> tuple[str, float]:
    """(what the forward pass runs in: fp32, bf16 or int8, the guard band) for a precision."""
    if precision == "int8":
        if not lm.device.startswith("cpu"):
            raise PredictError(f"precision: int8 is dynamic quantization for the CPU; this model runs on {lm.device}, "
                               "use auto, bf16 or fp32 there")
        return "int8", INT8_GUARD if guard is None else guard
    if precision in ("bf16", "auto") and lm.bf16:
        return "bf16", (BF16_GUARD if precision == "auto" else 0.0) if guard is None else guard
    return "fp32", 0.0


def int8_model(lm: LoadedModel):
    """The int8 copy of `lm`'s model, quantized on first use (once, however many callers); its bytes count in
    `lm.nbytes`, so the Predictor's cache evicts by what the model really holds."""
    if lm.int8 is None:
        with lm.prep_lock:
            if lm.int8 is None:
                from engine.tasks.text_classification.quantization import available, int8_copy

                if not available():
                    raise PredictError("precision: int8 needs a CPU quantization engine, which this torch build "
                                       "lacks; use auto or fp32")
                model, extra = int8_copy(lm.model)
                lm.nbytes += extra
                lm.int8 = model
    return lm.int8


def _forward(lm: LoadedModel, batch: dict, kind: str, guard: float):
    """Float32 logits of one batch in `kind`, with fp32 re-runs of the rows within `guard` of a flip."""
    import torch

    device_type = "cuda" if lm.device.startswith("cuda") else "cpu"
    with torch.inference_mode():
        if kind == "fp32":
            return lm.model(**batch).logits.float()
        if kind == "int8":
            logits = int8_model(lm)(**batch).logits.float()
        else:
            with torch.autocast(device_type, dtype=torch.bfloat16):
                logits = lm.model(**batch).logits.float()
        if guard > 0:
            close = lm.head.close_calls(logits, guard)
            if len(close):
                sub = {k: v[close] for k, v in batch.items()}
                width = int(sub["attention_mask"].sum(-1).max()) if "attention_mask" in sub else None
                if width and lm.tokenizer.padding_side != "left":
                    sub = {k: v[:, :width] for k, v in sub.items()}
                logits[close] = lm.model(**sub).logits.float()
        return logits
