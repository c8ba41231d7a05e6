"""Base models of the Fine-tuning tab built from scratch (mlp, vit-tiny), their learning rate, and the web app's
refusal of user code (`pkg.mod:Class` models are command line only).

No torch here: the tab imports this at build time.
"""

from __future__ import annotations


import gradio as gr


# built-in models trained from scratch (engine/tasks/image_classification/models.py): no download, sized from the data
SCRATCH_MODELS = ("mlp", "vit-tiny")
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


def refuse_user_code(model: str | None) -> None:
    """gr.Error for a `pkg.mod:Class` base model: loading user code is off in the web app (CLI only)."""
    from engine.tasks.image_classification.models import is_user_module

    if model and is_user_module(model.strip()):
        raise gr.Error(f"base model: '{model.strip()}' names a Python class; loading user code is off in the web "
                       "app. Train it from the shell: python -m engine.train --model_name_or_path "
                       f"{model.strip()} ...", print_exception=False)
