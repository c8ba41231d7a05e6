"""Image data in the Fine-tuning tab: which data is images, the from-scratch base models, zip uploads, and the
web app's refusal of user code (`pkg.mod:Class` models are CLI-only).

No torch here: the tab imports this at build time; engine.images is imported on first use only.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from engine.data import BUNDLED

# built-in models trained from scratch (engine.custom_models): no download, sized from the data
SCRATCH_MODELS = ("mlp", "vit-tiny")
IMAGE_ARCHIVES = (".zip",)
# fine-tuning a pretrained model wants ~5e-5; weights starting from random want ~40x more (examples/mnist_mlp.yaml)
FINETUNE_LR, SCRATCH_LR = 5e-5, 2e-3


def learning_rate_for(model: str | None, current: float | None):
    """The form's learning rate after the base model changed: the from-scratch or the fine-tuning default.

    Only a value still at the other default is replaced, so a learning rate the user typed is kept.
    """
    scratch = (model or "").strip() in SCRATCH_MODELS
    if scratch and current == FINETUNE_LR:
        return gr.update(value=SCRATCH_LR)
    if not scratch and current == SCRATCH_LR:
        return gr.update(value=FINETUNE_LR)
    return gr.update()


def is_image_bundled(name: str | None) -> bool:
    """True for bundled image sets (bundled:mnist, bundled:digits), read from the engine's own table."""
    from engine import images

    return bool(name) and name in BUNDLED and name in images.BUNDLED_IMAGES


def is_image_data(source_index: int, bundled: str | None, data_path: str | None) -> bool:
    """Whether the chosen data is images: a bundled image set, or an uploaded .zip (one folder per class)."""
    if source_index == 0:
        return is_image_bundled(bundled)
    if source_index == 1:
        return bool(data_path) and Path(data_path).suffix.lower() in IMAGE_ARCHIVES
    return False


def refuse_user_code(model: str | None) -> None:
    """gr.Error for a `pkg.mod:Class` base model: loading user code is off in the web app (CLI only)."""
    from engine.custom_models import is_user_module

    if model and is_user_module(model.strip()):
        raise gr.Error(f"base model: '{model.strip()}' names a Python class; loading user code is off in the web "
                       "app. Train it from the shell: python -m engine.train --model_name_or_path "
                       f"{model.strip()} ...", print_exception=False)


def describe_archive(path: Path) -> str:
    """A one-line summary of an uploaded image zip, read with the trainer's own checks (unsafe entries, one class
    and no readable image are refused; unreadable files are counted)."""
    from collections import Counter

    from engine.images import read_imagefolder

    parts, skipped = read_imagefolder(str(path), "train_file")
    names = parts["train"].features["label"].names
    counts = Counter()
    for ds in parts.values():
        if ds is not None:
            counts.update(names[i] for i in ds["label"])
    shown = ", ".join(f"{name} ({counts[name]})" for name in names[:12]) + (" …" if len(names) > 12 else "")
    split = ", ".join(f"{k} {len(v)}" for k, v in parts.items() if v is not None)
    bad = f" **{len(skipped)} files skipped** (not readable images: {', '.join(skipped[:3])}" \
          f"{' …' if len(skipped) > 3 else ''})." if skipped else ""
    return (f"Uploaded `{path.name}`: {sum(counts.values()):,} images ({split}) in {len(names)} classes: {shown}."
            f"{bad} Image folders need no column mapping.")
