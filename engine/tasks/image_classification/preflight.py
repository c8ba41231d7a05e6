"""The image task's part of the pre-flight report (engine/training/preflight.py): image sizes and modes, what the model
reads, and real batches through the trainer's own model, views and collator for timing."""

from __future__ import annotations

SAMPLE = 1000  # images whose size and mode are read (decoding every photo of a big set takes too long)
GRAY = ("1", "L", "LA", "I", "I;16", "F")


def section(cfg, prepared) -> dict:
    from collections import Counter

    from engine.tasks.image_classification.inputs import processor_channels, processor_size

    splits, processor = prepared.splits, prepared.processor
    names = splits.label_names
    sample = splits.train.select(range(min(len(splits.train), SAMPLE)))
    sizes, modes = Counter(), Counter()
    for im in sample["image"]:
        sizes[f"{im.size[0]}×{im.size[1]}"] += 1
        modes[im.mode] += 1
    side, channels = processor_size(processor), processor_channels(processor)
    out = {
        "first_rows": [{"image": f"{r['image'].size[0]}×{r['image'].size[1]} {r['image'].mode}", "example": r["text"],
                        "label": splits.head.label_text(r["label"], names)}
                       for r in splits.train.select(range(min(5, len(splits.train))))],
        "image_sizes": dict(sizes.most_common()), "image_modes": dict(modes.most_common()),
        "sampled": len(sample), "model_input": [channels, side, side], "noun": "images", "step_format": ".3f",
        "task_warnings": [],
    }
    shown = ", ".join(f"{k} ({n})" for k, n in list(out["image_sizes"].items())[:4])
    out["lines"] = [
        f"**Image sizes** (of {len(sample)} sampled): {shown}{' …' if len(sizes) > 4 else ''} — **modes**: "
        f"{', '.join(f'{k} ({n})' for k, n in out['image_modes'].items())}. The model reads {channels}×{side}×{side} "
        f"({'grayscale' if channels == 1 else 'RGB'})."]
    if len(sizes) > 1 or next(iter(sizes)) != f"{side}×{side}":
        out["task_warnings"].append(f"images come in {len(sizes)} size{'s' if len(sizes) > 1 else ''} "
                                    f"({', '.join(list(sizes)[:3])}{' …' if len(sizes) > 3 else ''}); every image is "
                                    f"resized to the model's {side}×{side}")
    rgb = sum(n for m, n in modes.items() if m not in GRAY)
    if channels == 1 and rgb:
        out["task_warnings"].append(f"{rgb} of {len(sample)} sampled images are in colour; the model reads 1 "
                                    "channel, so they are converted to grayscale")
    return out


def timing(cfg, prepared):
    """(model, next_batch(i), eval_batch) through the trainer's own image model, views and collator."""
    import numpy as np

    from engine.tasks.image_classification.models import training_parts

    model, collate, views = training_parts(cfg, prepared.source, prepared.splits, prepared.parts, prepared.processor)
    order = np.random.default_rng(cfg.seed).permutation(len(views["train"])).tolist()
    size = cfg.per_device_train_batch_size

    def next_batch(i):
        start = (i * size) % max(1, len(order) - size + 1)
        return collate([views["train"][k] for k in order[start:start + size]])

    val = views["validation"]
    return model, next_batch, collate([val[k] for k in range(min(len(val), cfg.per_device_eval_batch_size))])
