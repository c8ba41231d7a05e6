"""Explanations of image predictions: Captum's `IntegratedGradients` on the pixels the model reads, from a black
image (for digits: the empty page) to the image, shown as a saliency overlay on the image at its own size: red
where the pixels pushed toward the label, purple where they pushed against it.

The heat map is taken on the model's input (after the processor's resize) and stretched back over the image; for
processors that crop (some Hub models), it covers the whole image rather than the crop.
"""

from __future__ import annotations

import time

from engine.tasks.base import Explanation

ROWS_PER_BATCH = 64  # interpolation steps through the model at a time (bounds memory for larger images)
POSITIVE, NEGATIVE = (239, 68, 60), (128, 90, 213)  # gr.HighlightedText's red and purple for scores


def overlay(image, heat):
    """`image` (PIL) dimmed to grey with `heat` (H' x W' attributions) laid over it at the image's size:
    red for positive, purple for negative, more opaque where larger. Returns an H x W x 3 uint8 array."""
    import numpy as np
    from PIL import Image

    top = float(np.abs(heat).max()) or 1.0
    scaled = np.asarray(Image.fromarray((heat / top).astype(np.float32)).resize(image.size, Image.BILINEAR))
    base = np.asarray(image.convert("L").convert("RGB"), dtype=np.float32) * 0.6
    alpha = np.clip(np.abs(scaled), 0, 1)[..., None]
    colour = np.where(scaled[..., None] >= 0, np.array(POSITIVE, np.float32), np.array(NEGATIVE, np.float32))
    return np.clip(base * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def explain(lm, image, label: str | None, steps: int) -> Explanation:
    """Integrated Gradients of `lm`'s explained output (its head's, for the chosen label) over the pixels of
    `image` (PIL, numpy or a path), in fp32; the overlay has the image's size."""
    import torch
    from captum.attr import IntegratedGradients
    from PIL import Image

    from engine.tasks.image_classification.inputs import pixel_values, to_pil
    from engine.tasks.image_classification.models import input_channels

    start = time.perf_counter()
    channels = input_channels(lm)
    picture = to_pil(image, channels)
    x = pixel_values([picture], lm.processor, channels).to(lm.device)
    black = pixel_values([Image.new(picture.mode, picture.size, 0)], lm.processor, channels).to(lm.device)

    def run(pixels):
        return lm.model(pixel_values=pixels).logits.float()

    with torch.no_grad():
        logits = run(torch.cat([x, black]))
    index = lm.head.explain_index(lm.labels, label, lm.head.scores(logits[:1])[0].tolist())
    ends = lm.head.explained(logits, index).tolist()
    ig = IntegratedGradients(lambda pixels: lm.head.explained(run(pixels), index))
    with torch.enable_grad():
        attributions, delta = ig.attribute(x, baselines=black, n_steps=steps, return_convergence_delta=True,
                                           internal_batch_size=min(ROWS_PER_BATCH, steps))
    heat = attributions[0].sum(0).detach().float().cpu().numpy()  # channels together: one value per pixel
    return Explanation(label=lm.labels[index], meaning=lm.head.explain_meaning(lm.labels[index]), steps=steps,
                       delta=float(delta.reshape(-1)[0]), seconds=time.perf_counter() - start, output=ends[0],
                       baseline_output=ends[1], total=float(heat.sum()), image=overlay(picture, heat))
