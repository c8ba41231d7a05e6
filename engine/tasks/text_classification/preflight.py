"""The text task's part of the pre-flight report (engine/training/preflight.py): token lengths, truncation, the padding
the chosen batching implies, and real batches for timing a few training steps."""

from __future__ import annotations

SAMPLE = 5000  # texts whose full length is measured: percentiles need no more


def section(cfg, prepared) -> dict:
    """First rows, token-length percentiles, the truncated share and the padding of grouped vs random batches."""
    import numpy as np

    from engine.data import LengthGroupedBatchSampler

    splits, tokenizer = prepared.splits, prepared.processor
    names = splits.label_names
    sample = splits.train.select(range(min(len(splits.train), SAMPLE)))
    # datasets 5 returns lazy Column objects; tokenizers want plain lists
    args = tuple(list(sample[c]) for c in ("text", "text_pair") if c in sample.column_names)
    full = np.array([len(x) for x in tokenizer(*args, truncation=False)["input_ids"]])
    used = np.minimum(full, cfg.max_seq_length)

    def waste(group: bool) -> float:
        sampler = LengthGroupedBatchSampler(used.tolist(), cfg.per_device_train_batch_size, cfg.seed, group=group)
        real = padded = 0
        for batch in sampler:
            lengths = used[batch]
            real, padded = real + lengths.sum(), padded + lengths.max() * len(lengths)
        return float(1 - real / max(padded, 1))

    p = {f"p{q}": int(np.percentile(full, q)) for q in (50, 90, 95, 99)} | {"max": int(full.max())}
    out = {
        "first_rows": [{"text": r["text"][:300], "label": splits.head.label_text(r["label"], names)}
                       for r in splits.train.select(range(min(5, len(splits.train))))],
        "token_percentiles": p, "truncated_fraction": float((full > cfg.max_seq_length).mean()),
        "padding_waste": waste(cfg.group_by_length), "padding_waste_ungrouped": waste(False),
        "max_seq_length": cfg.max_seq_length, "noun": "examples", "step_format": ".2f", "task_warnings": [],
    }
    out["lines"] = [
        f"**Token lengths**: p50 {p['p50']}, p90 {p['p90']}, p95 {p['p95']}, p99 {p['p99']}, max {p['max']} — "
        f"{out['truncated_fraction']:.0%} truncated at max_seq_length {cfg.max_seq_length}.",
        f"**Padding**: {out['padding_waste']:.0%} of batch tokens would be padding with this batching "
        f"({out['padding_waste_ungrouped']:.0%} with plain random batches).",
    ]
    if out["truncated_fraction"] > 0.1:
        out["task_warnings"].append(f"{out['truncated_fraction']:.0%} of texts are longer than max_seq_length "
                                    f"{cfg.max_seq_length} and will be truncated (p95 is {p['p95']} tokens)")
    out["lengths"] = used.tolist()
    return out


def timing(cfg, prepared, lengths: list[int]):
    """(model, next_batch(i), eval_batch) on real data: length-grouped training batches like the run's own, and
    one evaluation batch, tokenized as the run will."""
    import torch
    from transformers import DataCollatorWithPadding

    from engine.data import LengthGroupedBatchSampler
    from engine.tasks.text_classification.models import load_for_training

    splits, tokenizer = prepared.splits, prepared.processor
    model = load_for_training(prepared.source, splits.label_names, cfg.attention_dropout, splits.head)
    collate = DataCollatorWithPadding(tokenizer)
    sampler = iter(LengthGroupedBatchSampler(lengths, cfg.per_device_train_batch_size, cfg.seed,
                                             group=cfg.group_by_length))

    def encode(rows):
        enc = tokenizer(*(list(rows[c]) for c in ("text", "text_pair") if c in rows.column_names),
                        truncation=True, max_length=cfg.max_seq_length)
        batch = collate([{k: enc[k][j] for k in enc} for j in range(len(rows))])
        batch["labels"] = torch.tensor(list(rows["label"]))
        return batch

    def next_batch(i):
        nonlocal sampler
        idx = next(sampler, None)
        if idx is None:
            sampler = iter(LengthGroupedBatchSampler(lengths, cfg.per_device_train_batch_size, cfg.seed + i,
                                                     group=cfg.group_by_length))
            idx = next(sampler)
        return encode(splits.train.select(idx))

    val = splits.validation
    eval_batch = encode(val.shuffle(seed=cfg.seed).select(range(min(len(val), cfg.per_device_eval_batch_size))))
    return model, next_batch, eval_batch
