"""Pre-flight report: what a run will see and cost, measured before any compute is committed.

First rows, label counts (with an imbalance warning), token-length percentiles, the padding the chosen
max_seq_length and batching imply, the number of optimizer steps, and an ETA from a few real training steps
on real batches of the run's size (the first step is warm-up and not timed). Uses the trainer's own
load_splits/tokenize_splits and batch sampler, so the numbers describe the real run.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from engine.config import TrainConfig

IMBALANCE_RATIO = 3.0  # largest class / smallest class above this earns a warning


def _noop(fraction: float, desc: str = "") -> None:
    pass


def columns(path: str) -> list[str]:
    """Column names of a data file (for the column-mapping dropdowns)."""
    from engine.data import read_file

    return list(read_file(path).column_names)


def preflight(cfg: TrainConfig, world_size: int = 1, timed_steps: int = 2,
              progress: Callable[[float, str], None] = _noop) -> dict:
    """Inspect the data and time a few real steps; raises ConfigError (DataError/ModelError) on bad input."""
    import numpy as np

    from engine import data as data_mod
    from engine import modeling
    from engine.train import LengthGroupedBatchSampler

    progress(0.05, "loading data")
    splits = data_mod.load_splits(cfg)
    names = splits.label_names
    progress(0.25, "tokenizing")
    model_path = modeling.resolve_model(cfg.model_name_or_path, cfg.model_revision)
    tokenizer = modeling.load_tokenizer(model_path)
    sample = splits.train.select(range(min(len(splits.train), 5000)))  # percentiles need no more
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

    counts = {n: 0 for n in names}
    for i in list(splits.train["label"]):
        counts[names[i]] += 1
    batches = math.ceil(len(splits.train) / cfg.per_device_train_batch_size)
    steps_per_epoch = max(1, math.ceil(math.ceil(batches / world_size) / cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    report = {
        "first_rows": [{"text": r["text"][:300], "label": names[r["label"]]}
                       for r in splits.train.select(range(min(5, len(splits.train))))],
        "label_counts": counts, "num_train": len(splits.train), "num_validation": len(splits.validation),
        "token_percentiles": {f"p{q}": int(np.percentile(full, q)) for q in (50, 90, 95, 99)} | {"max": int(full.max())},
        "truncated_fraction": float((full > cfg.max_seq_length).mean()),
        "padding_waste": waste(cfg.group_by_length), "padding_waste_ungrouped": waste(False),
        "max_seq_length": cfg.max_seq_length, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
        "world_size": world_size, "warnings": [],
    }
    smallest, largest = min(counts.values()), max(counts.values())
    if smallest == 0 or largest / smallest > IMBALANCE_RATIO:
        report["warnings"].append(
            f"labels are imbalanced: largest class {largest} vs smallest {smallest} examples; watch macro F1, "
            "not just accuracy")
    if report["truncated_fraction"] > 0.1:
        report["warnings"].append(f"{report['truncated_fraction']:.0%} of texts are longer than max_seq_length "
                                  f"{cfg.max_seq_length} and will be truncated (p95 is "
                                  f"{report['token_percentiles']['p95']} tokens)")
    progress(0.45, "timing a few real training steps")
    report["seconds_per_step"] = _time_steps(cfg, model_path, tokenizer, splits, used, timed_steps, progress)
    report["eta_seconds"] = report["seconds_per_step"] * total_steps
    progress(1.0, "done")
    return report


def _time_steps(cfg, model_path, tokenizer, splits, lengths, timed_steps, progress) -> float:
    """Seconds per optimizer step of real forward/backward/AdamW on real batches (1 process, this machine)."""
    import torch
    from transformers import DataCollatorWithPadding

    from engine import modeling
    from engine.config import resolve_mixed_precision
    from engine.train import LengthGroupedBatchSampler

    torch.manual_seed(cfg.seed)
    model = modeling.load_for_training(model_path, splits.label_names)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    collate = DataCollatorWithPadding(tokenizer)
    sampler = iter(LengthGroupedBatchSampler(lengths.tolist(), cfg.per_device_train_batch_size, cfg.seed,
                                             group=cfg.group_by_length))
    precision = resolve_mixed_precision(cfg)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    for i in range(1 + timed_steps):  # step 0 warms up (allocations, kernel selection): not timed
        t = time.perf_counter()
        for _ in range(cfg.gradient_accumulation_steps):
            idx = next(sampler, None)
            if idx is None:
                sampler = iter(LengthGroupedBatchSampler(lengths.tolist(), cfg.per_device_train_batch_size,
                                                         cfg.seed + i, group=cfg.group_by_length))
                idx = next(sampler)
            rows = splits.train.select(idx)
            enc = tokenizer(*(list(rows[c]) for c in ("text", "text_pair") if c in rows.column_names),
                            truncation=True, max_length=cfg.max_seq_length)
            batch = collate([{k: enc[k][j] for k in enc} for j in range(len(idx))])
            batch["labels"] = torch.tensor(list(rows["label"]))
            with autocast:
                loss = model(**batch).loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
        progress(0.45 + 0.5 * (i + 1) / (1 + timed_steps), f"timing step {i + 1}/{1 + timed_steps}")
    return float(sum(times) / len(times))


def report_markdown(r: dict) -> str:
    """The report as Markdown for the UI."""
    p = r["token_percentiles"]
    eta = r["eta_seconds"]
    lines = [
        f"**{r['num_train']}** training and **{r['num_validation']}** validation examples, "
        f"**{len(r['label_counts'])}** labels.",
        f"**Token lengths**: p50 {p['p50']}, p90 {p['p90']}, p95 {p['p95']}, p99 {p['p99']}, max {p['max']} — "
        f"{r['truncated_fraction']:.0%} truncated at max_seq_length {r['max_seq_length']}.",
        f"**Padding**: {r['padding_waste']:.0%} of batch tokens would be padding with this batching "
        f"({r['padding_waste_ungrouped']:.0%} with plain random batches).",
        f"**Steps**: {r['total_steps']} optimizer steps ({r['steps_per_epoch']} per epoch, "
        f"{r['world_size']} process{'es' if r['world_size'] > 1 else ''}).",
        f"**ETA**: about {_duration(eta)} of training ({r['seconds_per_step']:.2f} s per step measured on real "
        "batches here, plus ~10-30 s start-up).",
    ]
    lines += [f"⚠️ {w}" for w in r["warnings"]]
    return "\n\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
