"""The Prediction tab's Explain sections: which words (or pixels) pushed the model toward a label
(engine/serving/explain.py: Integrated Gradients through Captum).

API: /explain (text, model, revision, steps, label) -> (highlighted words, note): gr.HighlightedText's
[{token, class_or_confidence}] (a word's attribution divided by the largest one, so in -1..1; gaps and text cut off
by truncation have none); /explain_image (image, model, revision, steps, label) and /explain_sketch (sketch, ...)
-> (saliency overlay, note); /explain_estimate (text, model, revision, steps) -> what an explanation will cost;
/explain_labels (model) -> the label picker. An empty label explains the predicted one.
Explanations run in their own queue (concurrency_id "explain"), one at a time: each costs about `steps`
forward+backward passes, and predictions (concurrency_id "predict") never wait behind them.
"""

from __future__ import annotations

import json
import os

import gradio as gr

from engine.serving.explain import DEFAULT_STEPS, MAX_STEPS, cost_line, reading, summary
from ui.common import model_dir, show_errors, ui_errors
from ui.image_reading import drawing, image_model

LIMITS = {"concurrency_limit": int(os.environ.get("HUBTUNE_EXPLAIN_CONCURRENCY", "1")), "concurrency_id": "explain"}
COLOURS = "red: toward the label, purple: against it"


def label_choices(model: str):
    """The label picker for a local model (its config.json's labels, no torch); a Hub id's labels may be typed."""
    path = model_dir(model)
    labels = []
    if path is not None:
        try:
            id2label = json.loads((path / "config.json").read_text(encoding="utf-8")).get("id2label") or {}
            labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
        except (OSError, ValueError, KeyError):
            labels = []
    return gr.update(choices=labels, value=None)


def _explained(lm, value, steps, label):
    from engine.serving import explain

    return explain.explain(lm, value, (label or "").strip() or None, steps)


def _note(e) -> str:
    parts = [reading(e)]
    if e.words:
        ranked = sorted(e.words, key=lambda ws: -ws[1])
        toward = ", ".join(f"{w} ({s:+.3f})" for w, s in ranked[:3] if s > 0) or "none"
        against = ", ".join(f"{w} ({s:+.3f})" for w, s in ranked[::-1][:3] if s < 0) or "none"
        parts.append(f"Most toward: {toward}; most against: {against}.")
    return "\n\n".join([*parts, summary(e)])


@ui_errors(toast=False)  # the section's note panel shows the line until the next Explain
def explain_text(text: str, model: str, revision: str, steps: float = DEFAULT_STEPS, label: str | None = None):
    """Word attributions for one text (HighlightedText value) and what they mean."""
    from engine.serving.predictor import shared_predictor
    from engine.tasks.base import check_text

    text = check_text(text)
    lm = shared_predictor().load(model, revision)
    if lm.kind.input_kind != "text":
        raise gr.Error(f"model: '{model}' is a {lm.task} model; explain an image with Explain image",
                       print_exception=False)
    e = _explained(lm, text, steps, label)
    top = max((abs(s) for _, s in e.words), default=0.0) or 1.0
    return [(piece, None if s is None else round(s / top, 4)) for piece, s in e.pieces], _note(e)


def _shown(image):
    """A small overlay (an MNIST digit: 28x28) enlarged in whole pixels, so the page shows squares, not a blur."""
    import numpy as np

    factor = max(1, 280 // max(image.shape[:2]))
    return np.kron(image, np.ones((factor, factor, 1), dtype=image.dtype)) if factor > 1 else image


@ui_errors(toast=False)  # the section's note panel shows the line until the next Explain
def explain_image(image, model: str, revision: str, steps: float = DEFAULT_STEPS, label: str | None = None):
    """The saliency overlay for one uploaded image and what it means."""
    if image is None:
        raise gr.Error("image: none given; upload an image (PNG, JPEG, ...) or pick an example", print_exception=False)
    e = _explained(image_model(model, revision), image, steps, label)
    return _shown(e.image), f"{COLOURS}. {_note(e)}"


@ui_errors(toast=False)  # the section's note panel shows the line until the next Explain
def explain_sketch(sketch, model: str, revision: str, steps: float = DEFAULT_STEPS, label: str | None = None):
    """The saliency overlay for the digit drawn on the sketchpad (as the model reads it: 28x28, MNIST style)."""
    e = _explained(image_model(model, revision), drawing(sketch), steps, label)
    return _shown(e.image), f"{COLOURS}. {_note(e)}"


def estimate(value, model: str, revision: str, steps: float = DEFAULT_STEPS) -> str:
    """What explaining `value` will cost, said before the click: the passes, and the seconds measured on this model
    (a short explanation the first time). Never an error: without a model or input it says the passes only."""
    from engine.serving import explain
    from engine.serving.predictor import shared_predictor

    try:
        steps = explain.check_steps(steps)
    except Exception:  # noqa: BLE001 - the click reports a bad value
        return f"Explain: {cost_line(DEFAULT_STEPS)}."
    seconds = None
    if model and value is not None and (not isinstance(value, str) or value.strip()):
        try:
            seconds = explain.estimate_seconds(shared_predictor().load(model, revision, allow_user_code=False),
                                               value, steps)
        except Exception:  # noqa: BLE001 - a model or input the click will explain the problem of
            seconds = None
    return f"Explain: Integrated Gradients, {cost_line(steps, seconds)}."


def _settings(prefix: str):
    with gr.Row():
        steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="Steps",
                          info="more steps, smaller convergence delta; about one forward+backward pass each",
                          elem_id=f"{prefix}-steps")
        label = gr.Dropdown([], value=None, allow_custom_value=True, label="Explain toward label",
                            info="empty: the predicted label", elem_id=f"{prefix}-label")
    return steps, label


def build_text(demo, model, revision, text, prediction) -> None:
    """Below the text prediction: steps, label, the cost, the Explain button, the highlighted words."""
    with gr.Accordion("Explain: which words pushed the prediction", open=True, elem_id="explain-section"):
        steps, label = _settings("explain")
        cost = gr.Markdown(f"Explain: {cost_line(DEFAULT_STEPS)}.", elem_id="explain-cost")
        go = gr.Button("Explain", elem_id="explain-button")
        words = gr.HighlightedText(label=f"Word attributions ({COLOURS})", combine_adjacent=False,
                                   show_legend=False, elem_id="explain-words")
        note = gr.Markdown(label="explanation details", elem_id="explain-note")
    done = go.click(explain_text, [text, model, revision, steps, label], [words, note], api_name="explain", **LIMITS)
    show_errors(done, explain_text, note, reset=lambda: (None,), outputs=[words])
    # after each prediction and each change of steps: the seconds for this text, before the click
    for event, name in ((steps.release, "explain_estimate"), (prediction.change, "explain_estimate_after_predict")):
        event(estimate, [text, model, revision, steps], [cost], api_name=name, show_progress="hidden", **LIMITS)
    model.change(label_choices, [model], [label], api_name="explain_labels")
    if demo is not None:
        demo.load(label_choices, [model], [label], api_name="explain_labels_on_load")


def build_image(demo, model, revision, image) -> dict:
    """Below the image prediction: steps, label, the Explain image button and the saliency overlay."""
    with gr.Accordion("Explain: which pixels pushed the prediction", open=True, elem_id="explain-image-section"):
        steps, label = _settings("explain-image")
        cost = gr.Markdown(f"Explain: {cost_line(DEFAULT_STEPS)}.", elem_id="explain-image-cost")
        go = gr.Button("Explain image", elem_id="explain-image-button")
        overlay = gr.Image(label="Saliency", type="numpy", interactive=False, height=300, format="png",
                           elem_id="explain-image-overlay")
        note = gr.Markdown(elem_id="explain-image-note")
    done = go.click(explain_image, [image, model, revision, steps, label], [overlay, note],
                    api_name="explain_image", **LIMITS)
    show_errors(done, explain_image, note, reset=lambda: (None,), outputs=[overlay])
    for event, name in ((steps.release, "explain_image_estimate"), (image.change, "explain_image_estimate_new")):
        event(estimate, [image, model, revision, steps], [cost], api_name=name, show_progress="hidden", **LIMITS)
    model.change(label_choices, [model], [label], api_name="explain_image_labels")
    if demo is not None:
        demo.load(label_choices, [model], [label], api_name="explain_image_labels_on_load")
    return {"steps": steps, "label": label}


def build_sketch(model, revision, sketch, settings: dict) -> None:
    """Below the drawing's prediction: Explain drawing (the image section's steps and label)."""
    go = gr.Button("Explain drawing", elem_id="explain-sketch-button")
    overlay = gr.Image(label="Saliency (the drawing as the model reads it)", type="numpy", interactive=False,
                       height=300, format="png", elem_id="explain-sketch-overlay")
    note = gr.Markdown(elem_id="explain-sketch-note")
    done = go.click(explain_sketch, [sketch, model, revision, settings["steps"], settings["label"]],
                    [overlay, note], api_name="explain_sketch", **LIMITS)
    show_errors(done, explain_sketch, note, reset=lambda: (None,), outputs=[overlay])
