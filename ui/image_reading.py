"""What the image parts of the Prediction tab read, shared by the upload, the sketchpad (ui/predict_images.py) and
their Explain sections (ui/explain_view.py): the loaded image model, and a drawing as the image a model reads."""

from __future__ import annotations

import gradio as gr


def image_model(model: str, revision: str):
    """The shared Predictor's loaded image model; text models and user-code models are refused clearly."""
    from engine.serving.predictor import shared_predictor

    lm = shared_predictor().load(model, revision, allow_user_code=False)
    if lm.kind.input_kind != "image":
        raise gr.Error(f"model: '{model}' is a {lm.task} model, it reads text, not images; pick an image model "
                       "or type text in the Text box", print_exception=False)
    return lm


def drawing(sketch):
    """The sketchpad's drawing as the digit image a model reads (dark stroke on white -> MNIST style)."""
    import numpy as np

    composite = (sketch or {}).get("composite") if isinstance(sketch, dict) else sketch
    if composite is None or np.asarray(composite).size == 0 or np.asarray(composite).min() > 200:
        raise gr.Error("sketch: nothing drawn; draw a digit on the sketchpad first", print_exception=False)
    from engine.tasks.image_classification.inputs import to_model_input

    return to_model_input(np.asarray(composite))
