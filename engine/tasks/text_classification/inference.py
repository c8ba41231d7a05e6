"""Text prediction: texts tokenized without padding, sorted by length and cut into token-budget batches, so each
batch is padded only to its own longest text; forward passes under `torch.inference_mode()` and, where the
hardware has native bf16, bf16 autocast with fp32 re-runs of the close calls (the head says which rows are close).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from engine.tasks.base import LoadedModel, model_bytes

PRECISIONS = ("auto", "fp32", "bf16")
# A token never spans more than ~100 characters (WordPiece's max_input_chars_per_word): cutting a text at
# max_length * 100 characters keeps every token the model sees and bounds tokenizing a 1 MB paste.
MAX_CHARS_PER_TOKEN = 100
# 'auto' recomputes in fp32 every row whose top-2 logit margin is below this: bf16 autocast moves the logits of a
# BERT-sized classifier by ~0.01-0.05, so a label can only flip inside this band.
BF16_GUARD = float(os.environ.get("HUBTUNE_BF16_GUARD", "0.25"))


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


def scores(lm: LoadedModel, texts: list, batch_size: int, precision: str, max_length: int | None = None) -> list:
    """One score row (numpy) per text, None for blank or missing texts, in the order given."""
    import numpy as np

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
        result[rows] = lm.head.scores(_forward(lm, batch, precision)).cpu().numpy()
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


def _forward(lm: LoadedModel, batch: dict, precision: str):
    """Float32 logits of one batch; bf16 autocast when enabled, with fp32 re-runs of close calls in 'auto'."""
    import torch

    device_type = "cuda" if lm.device.startswith("cuda") else "cpu"
    with torch.inference_mode():
        if precision == "fp32" or not lm.bf16:
            return lm.model(**batch).logits.float()
        with torch.autocast(device_type, dtype=torch.bfloat16):
            logits = lm.model(**batch).logits.float()
        if precision == "auto":
            close = lm.head.close_calls(logits, BF16_GUARD)
            if len(close):
                sub = {k: v[close] for k, v in batch.items()}
                width = int(sub["attention_mask"].sum(-1).max()) if "attention_mask" in sub else None
                if width and lm.tokenizer.padding_side != "left":
                    sub = {k: v[:, :width] for k, v in sub.items()}
                logits[close] = lm.model(**sub).logits.float()
        return logits
