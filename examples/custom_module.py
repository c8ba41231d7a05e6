"""A bring-your-own model for hubtune: any torch.nn.Module, here with a hand-written autograd op.

    python -m engine.train --model_name_or_path examples.custom_module:Net --dataset_name bundled:mnist \
        --output_dir runs/custom --num_train_epochs 3 --learning_rate 2e-3
    python -m engine.predict --model runs/custom --image ui/assets/digits/mnist_7.png

The contract (engine/tasks/image_classification/models.py): the constructor may take any of num_labels,
num_channels, image_size (hubtune passes the data's values by name); forward(pixel_values) gets a float batch
(N, C, H, W) and returns logits (N, num_labels). hubtune saves the weights as model.safetensors with a
config.json naming this class, and rebuilds it by importing this module again: on the command line only, never in
the web app.
"""

import torch
from torch import nn


class Swish(torch.autograd.Function):
    """x * sigmoid(x) with its derivative written out: sigmoid(x) * (1 + x * (1 - sigmoid(x)))."""

    calls = 0  # backward passes run (the tests check that this op really trained)

    @staticmethod
    def forward(ctx, x):
        s = torch.sigmoid(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad_out):
        x, s = ctx.saved_tensors
        Swish.calls += 1
        return grad_out * s * (1 + x * (1 - s))


class Net(nn.Module):
    """Flatten -> Linear -> Swish (custom op) -> Linear: an MLP for small grayscale or RGB images."""

    def __init__(self, num_labels: int = 10, num_channels: int = 1, image_size: int = 28, hidden: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(num_channels * image_size * image_size, hidden)
        self.fc2 = nn.Linear(hidden, num_labels)

    def forward(self, pixel_values):
        return self.fc2(Swish.apply(self.fc1(pixel_values.flatten(1))))


class NotAModule:
    """Not an nn.Module: hubtune refuses it (tests use this)."""
