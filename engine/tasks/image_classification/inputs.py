"""Images into model inputs: mode/channel conversion, the image processor, light augmentation, batches, drawings.

Preprocessing always goes through a transformers image processor (`AutoImageProcessor` of a Hub model, or a
`ViTImageProcessor` that hubtune saves beside from-scratch models): resize, rescale, normalize. Before it, every
image is converted to the model's channels (grayscale photo into an RGB model, RGB into a 1-channel MNIST model;
transparency composited over white), whatever it arrived as: PIL image, numpy array (HxW, HxWxC, CxHxW; uint8 or
float in [0, 1]) or a file path. No torchvision (see DESIGN.md): PIL and numpy only.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import ConfigError

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P"}  # P: judged after conversion, see data_shape
AUGMENT_SHIFT = 0.1  # random translation of up to 10% of the side: digits stay whole, the model stops memorising


class ImageInputError(ConfigError):
    """An image that cannot be read or converted, explained in one line."""


def to_pil(image, channels: int | None = None):
    """A PIL image from PIL / numpy / path, converted to 'L' (channels=1) or 'RGB' (channels=3) when given."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as im:
                im.load()
                image = im.copy()
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ImageInputError(f"image: '{Path(image).name}' is not a readable image ({type(e).__name__}); give "
                                  "a PNG, JPEG, BMP or WebP file") from None
    elif isinstance(image, dict) and ("bytes" in image or "path" in image):  # a datasets.Image cell undecoded
        import io

        image = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
    elif not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = arr.transpose(1, 2, 0)  # channels-first (a tensor's layout)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or arr.size == 0:
            raise ImageInputError(f"image: an array of shape {arr.shape} is not an image; give HxW (grayscale) or "
                                  "HxWx3/4 (RGB/RGBA) pixels")
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float32)
            arr = arr * 255 if arr.max() <= 1.0 else arr  # floats in [0, 1] or already 0-255
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        image = Image.fromarray(arr)
    if channels is None:
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def make_processor(size: int, channels: int):
    """The image processor saved with from-scratch models: resize to size x size, scale to [-1, 1]."""
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    return ViTImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * channels,
                                image_std=[0.5] * channels, do_resize=True, do_rescale=True, do_normalize=True)


def load_processor(path, config=None):
    """The model's own AutoImageProcessor, or hubtune's default one sized from its config when it has none."""
    from transformers import AutoImageProcessor

    if (Path(path) / "preprocessor_config.json").is_file():
        return AutoImageProcessor.from_pretrained(path, trust_remote_code=False)
    size = getattr(config, "image_size", 224) if config is not None else 224
    size = size[0] if isinstance(size, (list, tuple)) else size
    return make_processor(int(size), int(getattr(config, "num_channels", 3) or 3))


def processor_channels(processor, default: int = 3) -> int:
    """Channels the processor normalizes (the length of its image_mean)."""
    mean = getattr(processor, "image_mean", None)
    return len(mean) if isinstance(mean, (list, tuple)) and len(mean) in (1, 3) else default


def processor_size(processor) -> int:
    """The side (pixels) the processor resizes to."""
    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
    if isinstance(size, dict):
        return int(size.get("height") or size.get("shortest_edge") or 224)
    return int(getattr(size, "height", None) or getattr(size, "shortest_edge", None) or 224)


def data_shape(ds, image_size: int | None) -> tuple[int, int]:
    """(channels, side) for a model built from scratch: 1 if the first images are all grayscale, else 3; the side
    is `image_size` or the first image's longer side (between 8 and 224)."""
    n = min(len(ds), 32)
    images = [ds[i]["image"] for i in range(n)]
    gray = all(im.mode in GRAY_MODES and (im.mode != "P" or im.convert("RGB").getextrema() ==
                                            im.convert("L").convert("RGB").getextrema()) for im in images)
    side = image_size or max(images[0].size)
    return (1 if gray else 3), int(min(max(side, 8), 224))


def pixel_values(images: list, processor, channels: int):
    """A float tensor (N, C, H, W) of `images` preprocessed for a model with `channels` input channels."""
    return processor([to_pil(im, channels) for im in images], return_tensors="pt")["pixel_values"]


def shift(image, rng, fraction: float = AUGMENT_SHIFT):
    """`image` translated by a random offset of up to `fraction` of each side; the border pixels fill the gap."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image)
    h, w = arr.shape[:2]
    dy, dx = max(1, round(h * fraction)), max(1, round(w * fraction))
    pad = ((dy, dy), (dx, dx)) + ((0, 0),) * (arr.ndim - 2)
    padded = np.pad(arr, pad, mode="edge")
    y, x = rng.integers(0, 2 * dy + 1), rng.integers(0, 2 * dx + 1)
    return Image.fromarray(padded[y:y + h, x:x + w])


CACHE_BYTES = 512 << 20  # preprocessed splits up to this size stay in memory: later epochs skip decoding


class ImageView:
    """A torch map-style dataset over an image split: {'pixel_values', 'label'} per example, through the processor.

    Training images may be shifted at random (augment), from a generator seeded by (seed, epoch, index), so a
    resumed run sees the same images as an uninterrupted one and the global RNG is never touched; `epoch_of` is
    the batch sampler, whose `epoch` the loop sets. Without augmentation, small splits (MNIST: 12 MB) are kept
    preprocessed in memory after their first pass.
    """

    def __init__(self, ds, processor, channels: int, augment: bool = False, seed: int = 0, epoch_of=None):
        self.ds, self.processor, self.channels = ds, processor, channels
        self.augment, self.seed, self.epoch_of = augment, seed, epoch_of
        side = processor_size(processor)
        self.cache = {} if not augment and len(ds) * channels * side * side * 4 <= CACHE_BYTES else None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        import numpy as np

        i = int(i)
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        row = self.ds[i]
        image = to_pil(row["image"], self.channels)
        if self.augment:
            epoch = getattr(self.epoch_of, "epoch", 0)
            image = shift(image, np.random.default_rng([self.seed, epoch, i]))
        item = {"pixel_values": self.processor(image, return_tensors="pt")["pixel_values"][0], "label": row["label"]}
        if self.cache is not None:
            self.cache[i] = item
        return item


def collate(rows: list[dict]) -> dict:
    """ImageView rows into a batch {'pixel_values', 'labels'}."""
    import torch

    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "labels": torch.tensor([r["label"] for r in rows], dtype=torch.long)}


def tokens_per_image(model, processor) -> int:
    """What one image counts as in the loop's tokens (for throughput and MFU): patches + [CLS] for ViT-like
    models, whose weights are applied once per patch; 1 for the rest (so MFU is a lower bound for convolutions)."""
    cfg = getattr(model, "config", None)
    patch = getattr(cfg, "patch_size", None)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    if isinstance(patch, int) and patch > 0 and getattr(cfg, "hidden_size", None):
        return (processor_size(processor) // patch) ** 2 + 1
    return 1


def to_model_input(image, size: int = 28, invert: bool | None = None):
    """A drawing or photo of one digit the way MNIST shows digits: grayscale, white stroke on black, the stroke's
    bounding box scaled to fit 20x20 (of 28x28) and centred on its centre of mass; returned as a PIL 'L' image.

    Inversion heuristic (`invert=None`): invert when the mean of the border pixels is brighter than mid-grey
    (128) - a sketchpad or ink on paper has a light background, MNIST's is black. Transparent pixels (a sketchpad
    layer) count as white paper. An empty drawing comes back as a black image.
    """
    import numpy as np
    from PIL import Image

    gray = np.asarray(to_pil(image, 1), dtype=np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if invert if invert is not None else border.mean() > 128:
        gray = 255.0 - gray
    # faint pixels (paper grain, JPEG noise) are background: ink is anything above 20% of the brightest stroke
    ink = gray > 0.2 * gray.max() if gray.max() > 0 else np.zeros_like(gray, dtype=bool)
    canvas = Image.new("L", (size, size), 0)
    if not ink.any():
        return canvas
    ys, xs = np.nonzero(ink)
    crop = gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    crop = np.where(crop > 0.2 * gray.max(), crop, 0)
    box = size * 20 / 28
    scale = box / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    digit = Image.fromarray(np.clip(crop * (255.0 / crop.max()), 0, 255).astype(np.uint8)).resize((w, h),
                                                                                                   Image.LANCZOS)
    arr = np.asarray(digit, dtype=np.float32)
    total = arr.sum() or 1.0
    cy, cx = (arr.sum(1) * np.arange(h)).sum() / total, (arr.sum(0) * np.arange(w)).sum() / total
    top = int(round(size / 2 - cy))
    left = int(round(size / 2 - cx))
    top, left = min(max(top, 0), size - h), min(max(left, 0), size - w)
    canvas.paste(digit, (left, top))
    return canvas
