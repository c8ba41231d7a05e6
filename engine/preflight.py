"""Pre-flight report: what a run will see and cost, measured before any compute is committed.

First rows, label counts (with an imbalance warning), token-length percentiles, the padding the chosen
max_seq_length and batching imply, the number of optimizer steps, and an ETA from a few real training steps
on real batches of the run's size (the first step is warm-up and not timed). Uses the trainer's own
load_splits/tokenize_splits and batch sampler, so the numbers describe the real run.
Image runs (engine/images.py) report image sizes and modes and the model's input instead of token lengths,
timed through the trainer's own image model, views and collator.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from dataclasses import dataclass

from engine.config import TrainConfig

IMBALANCE_RATIO = 3.0  # largest class / smallest class above this earns a warning
IMAGE_SAMPLE = 1000  # images whose size and mode are read (decoding every photo of a big set takes too long)
# a launched run's start before its first step (launcher, imports, model and data): ~12-18 s measured on 2 CPU cores
STARTUP_SECONDS = 15
LONG_RUN_SECONDS = 600  # a whole run longer than this earns a warning before Start
QUICK_TRY_SECONDS = 120  # what the warning's suggested max_steps costs


def _noop(fraction: float, desc: str = "") -> None:
    pass


def columns(path: str) -> dict[str, str]:
    """{column name: 'text' | 'number' | 'list' | other type} of a data file, in file order (for the column
    pickers: only text columns are offered as the text)."""
    from engine.data import NUMBER_TYPES, read_file

    out = {}
    for name, feature in read_file(path).features.items():
        dtype = str(getattr(feature, "dtype", "") or "")
        if dtype in ("string", "large_string"):
            out[name] = "text"
        elif dtype.startswith(NUMBER_TYPES):
            out[name] = "number"
        elif type(feature).__name__ in ("List", "Sequence", "LargeList"):
            out[name] = "list"
        else:
            out[name] = type(feature).__name__.lower()
    return out


@dataclass
class Checked:
    """What `check_run` loaded: the resolved model (None for models built from scratch) and the data."""

    model_path: object
    splits: object
    image: bool = False
    image_parts: tuple | None = None  # images.prepare_run's (model source, processor, splits by name)


def check_run(cfg: TrainConfig) -> Checked:
    """Every check the web app makes before it starts a run, and the trainer before it writes anything: the model
    resolves (safetensors, no remote code), fits the data and its max_seq_length, the data loads with usable
    columns and labels. Check and Start both call this, so they refuse the same things with the same lines."""
    from engine import custom_models, images, modeling
    from engine import data as data_mod

    scratch = custom_models.is_from_scratch(cfg.model_name_or_path)
    model_path = None if scratch else modeling.resolve_model(cfg.model_name_or_path, cfg.model_revision)
    if images.is_image_run(cfg, model_path):
        # the web app never imports a user's pkg.mod:Class (a run directory that needs one included)
        custom_models.refuse_in_web_app(cfg.model_name_or_path)
        source, processor, splits, parts = images.prepare_run(cfg, model_path)
        return Checked(model_path, splits, image=True, image_parts=(source, processor, parts))
    modeling.check_max_length(modeling.load_config(model_path), cfg.max_seq_length)
    splits = data_mod.load_splits(cfg)
    images.refuse_images_for_text_model(cfg, splits)
    return Checked(model_path, splits)


def preflight(cfg: TrainConfig, world_size: int = 1, timed_steps: int = 2,
              progress: Callable[[float, str], None] = _noop, checked: Checked | None = None) -> dict:
    """Inspect the data and time a few real steps; raises ConfigError (DataError/ModelError) on bad input.
    `checked`: what `check_run(cfg)` already loaded (the web app checks first, then measures)."""
    import numpy as np

    from engine import modeling
    from engine.checkpoint import LengthGroupedBatchSampler

    progress(0.05, "loading model and data")
    checked = checked or check_run(cfg)
    model_path = checked.model_path
    if checked.image:
        return _image_preflight(cfg, checked, world_size, timed_steps, progress)
    splits = checked.splits
    names = splits.label_names
    progress(0.25, "tokenizing")
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

    counts = _label_counts(splits)
    steps_per_epoch, total_steps = _steps(cfg, len(splits.train), world_size)
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
    report["warnings"] += _imbalance(counts)
    if report["truncated_fraction"] > 0.1:
        report["warnings"].append(f"{report['truncated_fraction']:.0%} of texts are longer than max_seq_length "
                                  f"{cfg.max_seq_length} and will be truncated (p95 is "
                                  f"{report['token_percentiles']['p95']} tokens)")
    progress(0.45, "timing a few real training steps")
    step, eval_batch = _time_steps(cfg, model_path, tokenizer, splits, used, timed_steps, progress)
    _estimate(cfg, report, step, eval_batch)
    progress(1.0, "done")
    return report


def _label_counts(splits) -> dict[str, int]:
    names = splits.label_names
    counts = {n: 0 for n in names}
    for i in list(splits.train["label"]):
        counts[names[i]] += 1
    return counts


def _steps(cfg: TrainConfig, num_train: int, world_size: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) as the training loop counts them."""
    batches = math.ceil(num_train / cfg.per_device_train_batch_size)
    steps_per_epoch = max(1, math.ceil(math.ceil(batches / world_size) / cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    return steps_per_epoch, total_steps


def _imbalance(counts: dict[str, int]) -> list[str]:
    smallest, largest = min(counts.values()), max(counts.values())
    if smallest == 0 or largest / smallest > IMBALANCE_RATIO:
        return [f"labels are imbalanced: largest class {largest} vs smallest {smallest} examples; watch macro F1, "
                "not just accuracy"]
    return []


def _time_steps(cfg, model_path, tokenizer, splits, lengths, timed_steps, progress) -> tuple[float, float]:
    """(seconds per optimizer step of real forward/backward/AdamW on real batches, seconds per evaluation batch),
    measured in 1 process on this machine."""
    import torch
    from transformers import DataCollatorWithPadding

    from engine import modeling
    from engine.checkpoint import LengthGroupedBatchSampler

    torch.manual_seed(cfg.seed)
    model = modeling.load_for_training(model_path, splits.label_names, cfg.attention_dropout)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    collate = DataCollatorWithPadding(tokenizer)
    sampler = iter(LengthGroupedBatchSampler(lengths.tolist(), cfg.per_device_train_batch_size, cfg.seed,
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
            sampler = iter(LengthGroupedBatchSampler(lengths.tolist(), cfg.per_device_train_batch_size,
                                                     cfg.seed + i, group=cfg.group_by_length))
            idx = next(sampler)
        return encode(splits.train.select(idx))

    val = splits.validation
    eval_batch = encode(val.shuffle(seed=cfg.seed).select(range(min(len(val), cfg.per_device_eval_batch_size))))
    return _measure(cfg, model, opt, next_batch, timed_steps, progress, eval_batch)


def _measure(cfg, model, opt, next_batch, timed_steps, progress, eval_batch) -> tuple[float, float]:
    """(mean seconds of `timed_steps` optimizer steps — forward, backward, AdamW, batch preparation included —,
    seconds of one evaluation forward pass over `eval_batch`)."""
    import torch

    from engine.config import resolve_mixed_precision

    precision = resolve_mixed_precision(cfg)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    times = []
    for i in range(1 + timed_steps):  # step 0 warms up (allocations, kernel selection): not timed
        t = time.perf_counter()
        for _ in range(cfg.gradient_accumulation_steps):
            batch = next_batch(i)
            with autocast():
                loss = model(**batch).loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
        progress(0.45 + 0.45 * (i + 1) / (1 + timed_steps), f"timing step {i + 1}/{1 + timed_steps}")
    progress(0.92, "timing an evaluation batch")
    model.eval()
    eval_times = []
    with torch.inference_mode(), autocast():
        for _ in range(2):  # the first pass at the evaluation batch's shape warms up
            t = time.perf_counter()
            model(**eval_batch)
            eval_times.append(time.perf_counter() - t)
    return float(sum(times) / len(times)), eval_times[-1]


def _estimate(cfg: TrainConfig, report: dict, step_seconds: float, eval_batch_seconds: float) -> None:
    """The time of the whole run as a user waits for it: start-up, the training steps, every evaluation pass
    (the loop's and the final one on the best model), with a warning when it is long for a first try."""
    steps, per_epoch, world = report["total_steps"], report["steps_per_epoch"], report["world_size"]
    evals = (steps // cfg.eval_steps if cfg.eval_strategy == "steps" else math.ceil(steps / per_epoch)) or 1
    evals += 1  # the final evaluation of the best weights
    batches = math.ceil(report["num_validation"] / (cfg.per_device_eval_batch_size * world))
    report.update(seconds_per_step=step_seconds, eta_seconds=step_seconds * steps,
                  eval_passes=evals, eval_seconds=evals * batches * eval_batch_seconds, startup_seconds=STARTUP_SECONDS)
    report["whole_run_seconds"] = report["eta_seconds"] + report["eval_seconds"] + STARTUP_SECONDS
    if report["whole_run_seconds"] > LONG_RUN_SECONDS:
        quick = max(1, int((QUICK_TRY_SECONDS - STARTUP_SECONDS) / max(step_seconds, 1e-6)))
        report["warnings"].append(
            f"the whole run takes about {_duration(report['whole_run_seconds'])} on this machine; for a first try "
            f"set max_steps to {quick} (about {_duration(QUICK_TRY_SECONDS)}) or lower num_train_epochs")


def _image_preflight(cfg: TrainConfig, checked: Checked, world_size: int, timed_steps: int, progress) -> dict:
    """The report of an image run: label counts, image sizes and modes, the model's input, steps, measured ETA."""
    from collections import Counter

    import numpy as np
    import torch

    from engine.image_inputs import processor_channels, processor_size, training_parts

    (source, processor, parts), splits = checked.image_parts, checked.splits
    names = splits.label_names
    counts = _label_counts(splits)
    steps_per_epoch, total_steps = _steps(cfg, len(splits.train), world_size)
    progress(0.25, "reading image sizes")
    sample = splits.train.select(range(min(len(splits.train), IMAGE_SAMPLE)))
    sizes, modes = Counter(), Counter()
    for im in sample["image"]:
        sizes[f"{im.size[0]}×{im.size[1]}"] += 1
        modes[im.mode] += 1
    side, channels = processor_size(processor), processor_channels(processor)
    report = {
        "task": "image-classification",
        "first_rows": [{"image": f"{r['image'].size[0]}×{r['image'].size[1]} {r['image'].mode}", "example": r["text"],
                        "label": names[r["label"]]} for r in splits.train.select(range(min(5, len(splits.train))))],
        "label_counts": counts, "num_train": len(splits.train), "num_validation": len(splits.validation),
        "image_sizes": dict(sizes.most_common()), "image_modes": dict(modes.most_common()),
        "sampled": len(sample), "model_input": [channels, side, side],
        "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "world_size": world_size,
        "warnings": _imbalance(counts),
    }
    if len(sizes) > 1 or next(iter(sizes)) != f"{side}×{side}":
        report["warnings"].append(f"images come in {len(sizes)} size{'s' if len(sizes) > 1 else ''} "
                                  f"({', '.join(list(sizes)[:3])}{' …' if len(sizes) > 3 else ''}); every image is "
                                  f"resized to the model's {side}×{side}")
    rgb = sum(n for m, n in modes.items() if m not in ("1", "L", "LA", "I", "I;16", "F"))
    if channels == 1 and rgb:
        report["warnings"].append(f"{rgb} of {len(sample)} sampled images are in colour; the model reads 1 channel, "
                                  "so they are converted to grayscale")
    progress(0.45, "timing a few real training steps")
    torch.manual_seed(cfg.seed)
    model, collate, views = training_parts(cfg, source, splits, parts, processor)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    order = np.random.default_rng(cfg.seed).permutation(len(views["train"])).tolist()
    size = cfg.per_device_train_batch_size

    def next_batch(i):
        start = (i * size) % max(1, len(order) - size + 1)
        return collate([views["train"][k] for k in order[start:start + size]])

    val = views["validation"]
    eval_batch = collate([val[k] for k in range(min(len(val), cfg.per_device_eval_batch_size))])
    _estimate(cfg, report, *_measure(cfg, model, opt, next_batch, timed_steps, progress, eval_batch))
    progress(1.0, "done")
    return report


def report_markdown(r: dict) -> str:
    """The report as Markdown for the UI."""
    if r.get("task") == "image-classification":
        return _image_markdown(r)
    p = r["token_percentiles"]
    lines = [
        f"**{r['num_train']}** training and **{r['num_validation']}** validation examples, "
        f"**{len(r['label_counts'])}** labels.",
        f"**Token lengths**: p50 {p['p50']}, p90 {p['p90']}, p95 {p['p95']}, p99 {p['p99']}, max {p['max']} — "
        f"{r['truncated_fraction']:.0%} truncated at max_seq_length {r['max_seq_length']}.",
        f"**Padding**: {r['padding_waste']:.0%} of batch tokens would be padding with this batching "
        f"({r['padding_waste_ungrouped']:.0%} with plain random batches).",
    ]
    return _with_steps_and_eta(lines, r, ".2f")


def _image_markdown(r: dict) -> str:
    c, h, w = r["model_input"]
    sizes = ", ".join(f"{k} ({n})" for k, n in list(r["image_sizes"].items())[:4])
    modes = ", ".join(f"{k} ({n})" for k, n in r["image_modes"].items())
    lines = [
        f"**{r['num_train']}** training and **{r['num_validation']}** validation images, "
        f"**{len(r['label_counts'])}** labels.",
        f"**Image sizes** (of {r['sampled']} sampled): {sizes}{' …' if len(r['image_sizes']) > 4 else ''} — "
        f"**modes**: {modes}. The model reads {c}×{h}×{w} ({'grayscale' if c == 1 else 'RGB'}).",
    ]
    return _with_steps_and_eta(lines, r, ".3f")


def _with_steps_and_eta(lines: list[str], r: dict, step_format: str) -> str:
    """The report's lines, then steps, the measured ETA and any warnings, as Markdown paragraphs."""
    lines = [*lines,
             f"**Steps**: {r['total_steps']} optimizer steps ({r['steps_per_epoch']} per epoch, "
             f"{r['world_size']} process{'es' if r['world_size'] > 1 else ''}).",
             f"**ETA**: about {_duration(r['whole_run_seconds'])} for the whole run on this machine: "
             f"{_duration(r['eta_seconds'])} of training ({r['seconds_per_step']:{step_format}} s per step, measured "
             f"on real batches), {r['eval_passes']} evaluation pass{'es' if r['eval_passes'] > 1 else ''} "
             f"({_duration(r['eval_seconds'])}) and ~{r['startup_seconds']} s of start-up.",
             *(f"⚠️ {w}" for w in r["warnings"])]
    return "\n\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
