"""ONNX export of an image classifier (engine/serving/export.py): the real images an export is verified on, the one
input (pixel_values, batch axis dynamic; channels and side fixed by the model), and the card's onnxruntime snippet.

Every image model hubtune serves exports the same way: transformers ones (ViT, ...), the built-in `mlp` and users'
`pkg.mod:Class` modules (their own autograd ops included: the exporter traces their forward). A module whose forward
cannot be traced (Python control flow on tensor values, numpy inside) is refused with the exporter's reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.tasks.base import onnx_snippet

FALLBACK = "bundled:digits"


def samples(model_dir: Path, limit: int) -> tuple[list, str]:
    """(PIL images, where they come from): the run's validation samples (samples/ beside model/, examples and
    mistakes), else scikit-learn's real 8x8 digits (resized by the model's processor)."""
    from PIL import Image

    folder = Path(model_dir).parent / "samples"
    index = folder / "index.jsonl"
    if Path(model_dir).name == "model" and index.is_file():
        images = []
        for line in index.read_text(encoding="utf-8").splitlines()[:limit]:
            with Image.open(folder / json.loads(line)["path"]) as im:
                images.append(im.copy())
        if images:
            return images, "validation images of the run"
    from engine.bundled import BUNDLED

    test = BUNDLED[FALLBACK][0]()["test"]
    return [test[i]["image"] for i in range(min(limit, len(test)))], f"digits ({FALLBACK}; the folder is not a run's)"


def inputs(lm, images: list) -> tuple[dict, dict]:
    """({'pixel_values': (N, C, H, W)}, its dynamic axes): the model's channels and size, through its processor."""
    from engine.tasks.image_classification.inputs import pixel_values, processor_channels

    channels = int(getattr(lm.model.config, "num_channels", 0) or processor_channels(lm.processor))
    return {"pixel_values": pixel_values(images, lm.processor, channels)}, {"pixel_values": {0: "batch_size"}}


def usage(usage_id: str, head, quantized: bool) -> str:
    """The card's snippet: the repo's image processor, the model's channels, onnxruntime, softmax."""
    return onnx_snippet(usage_id, quantized, "AutoImageProcessor", """\
image = Image.open("digit.png").convert("L" if config.get("num_channels", 3) == 1 else "RGB")
logits = session.run(["logits"], {"pixel_values": preprocess(image, return_tensors="np")["pixel_values"]})[0]
probs = np.exp(logits - logits.max(-1, keepdims=True))
probs /= probs.sum(-1, keepdims=True)  # softmax
print(config["id2label"][str(int(probs.argmax()))], float(probs.max()))""")
