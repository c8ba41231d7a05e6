"""Explanations of one prediction: which words (or pixels) pushed the model toward a label, and by how much.

    python -m engine.predict --model runs/x --text "..." --explain [--explain_steps 50] [--explain_label sports]

Integrated Gradients (Sundararajan et al., 2017) through Captum, the PyTorch project's attribution library, rather
than attribution written here: text models get `LayerIntegratedGradients` on their input embedding layer, the
tokens' shares summed back into the words of the text (engine/tasks/text_classification/explain.py); image models
`IntegratedGradients` on the pixels, shown as a saliency overlay (engine/tasks/image_classification/explain.py).
What "toward a label" means is the model's head (engine/tasks/heads): a label's log-odds for single-label, its
logit for multi-label, the number itself (toward higher values) for regression.

The attributions add up to how much the explained output moved from the baseline (no words; a black image) to the
input; the convergence delta is how far the `steps`-point integral falls short of that (smaller with more steps).
An explanation costs about `steps` forward+backward passes of the model, in fp32 (never the int8 copy). The record
each task's explain module fills is engine/tasks/base.py's `Explanation`.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from engine.errors import ModelError, PredictError
from engine.tasks.base import Explanation

DEFAULT_STEPS = 50
MAX_STEPS = 500  # at 500 steps the delta of a fine-tuned MiniLM is far below anything shown; more is only wait
PROBE_STEPS = 8  # the short explanation that measures a model's cost before the first real one

_rates: dict[tuple, float] = {}  # (model, revision) -> seconds per step, from its last explanation here
_rates_lock = threading.Lock()


def check_steps(steps) -> int:
    """The number of integration steps, or a PredictError naming the range."""
    try:
        n = int(float(steps))
        whole = float(steps) == n
    except (TypeError, ValueError, OverflowError):
        raise PredictError(f"explain_steps: '{steps}' is not a whole number; use 1 to {MAX_STEPS}") from None
    if not whole or not 1 <= n <= MAX_STEPS:
        raise PredictError(f"explain_steps: {steps} is outside 1 to {MAX_STEPS} (an explanation costs one "
                           f"forward+backward pass per step; {DEFAULT_STEPS} is plenty for a small delta)")
    return n


def check_backend(backend: str, name: str) -> None:
    """Explanations need the PyTorch model: an ONNX graph (onnxruntime) has no layers to hook and no gradients."""
    if backend != "torch":
        raise ModelError(f"explain: '{name}' is served by the onnx backend, an onnxruntime graph with no embedding "
                         "layer or gradients to attribute through; explain with the torch backend (drop --backend "
                         "onnx)")


def explain(lm, value, label: str | None = None, steps: int = DEFAULT_STEPS) -> Explanation:
    """Explain the prediction of loaded model `lm` (the Predictor's load, engine/serving/predictor.py) for `value` (a
    text, or an image for image models) toward `label` (None: the predicted one)."""
    steps = check_steps(steps)
    check_backend(lm.backend, lm.name)
    result = lm.kind.explain(lm, value, label, steps)
    with _rates_lock:
        _rates[(lm.name, lm.revision)] = result.seconds / steps
    return result


def estimate_seconds(lm, value, steps: int = DEFAULT_STEPS) -> float:
    """About how long explaining `value` takes here: the model's last explanation's time per step, measured with a
    short explanation of `value` when it has none yet."""
    steps = check_steps(steps)
    with _rates_lock:
        rate = _rates.get((lm.name, lm.revision))
    if rate is None:
        explain(lm, value, None, PROBE_STEPS)  # records the rate
        with _rates_lock:
            rate = _rates[(lm.name, lm.revision)]
    return rate * steps


def cost_line(steps: int, seconds: float | None = None) -> str:
    """What an explanation costs, said before it runs."""
    here = "" if seconds is None else f": about {seconds:.1f} s here" if seconds >= 0.05 else ": under 0.1 s here"
    return f"an explanation costs about {steps} forward+backward passes of the model{here}"


def summary(e: Explanation) -> str:
    """One line: the method, steps, convergence delta, time and cost."""
    return (f"Integrated Gradients, {e.steps} steps, convergence delta {e.delta:.2g}, took {e.seconds:.2f} s; "
            f"{cost_line(e.steps)}")


def reading(e: Explanation) -> str:
    """What the numbers mean for this explanation."""
    cut = f"; the text was truncated to its first {e.tokens} tokens, like prediction" if e.truncated else ""
    return (f"explained: {e.label}, {e.meaning}: {e.output:+.3f} for this input, {e.baseline_output:+.3f} for "
            f"the baseline; the attributions sum to {e.total:+.3f}{cut}")


def as_json(e: Explanation) -> dict:
    """The explanation for --json and scripts (the overlay image left out)."""
    out = {k: v for k, v in asdict(e).items() if k not in ("image", "pieces")}
    return out | {"words": [[w, round(s, 6)] for w, s in e.words]}


def _coloured(e: Explanation) -> str:
    """The text with positive words green and negative ones red (ANSI), for a terminal."""
    top = max((abs(s) for _, s in e.words), default=0.0) or 1.0
    out = []
    for piece, score in e.pieces:
        if score is None or abs(score) < 0.1 * top:
            out.append(piece)
        else:
            out.append(f"\033[{'1;32' if score > 0 else '1;31'}m{piece}\033[0m")
    return "".join(out)


def cli(predictor, args) -> int:
    """`python -m engine.predict ... --explain`: print each text's words with their attributions, sorted, and the
    delta (--json: one object per input); an image's overlay is written beside the working folder."""
    if args.input:
        raise PredictError("explain: one text or image at a time (--text / --image), not a file (--input)")
    check_backend(args.backend, args.model)
    check_steps(args.explain_steps)
    for item in args.text or args.image:
        lm = predictor.load(args.model, args.revision)
        if args.image and lm.kind.input_kind != "image":
            raise PredictError(f"model: '{args.model}' is a {lm.task} model; it reads text, not images (--text)")
        e = explain(lm, lm.kind.check_input(lm, item), args.explain_label, args.explain_steps)
        if e.image is not None:
            out = Path(f"{Path(item).stem}.saliency.png")
            from PIL import Image

            Image.fromarray(e.image).save(out)
        if args.json:
            print(json.dumps(as_json(e) | ({"overlay": str(out)} if e.image is not None else {})))
            continue
        if e.image is None:
            print(_coloured(e) if sys.stdout.isatty() else "".join(p for p, _ in e.pieces))
            ranked = sorted(e.words, key=lambda ws: -ws[1])  # most toward the label first, most against last
            for word, score in ranked if len(ranked) <= 40 else ranked[:20] + ranked[-20:]:
                print(f"  {score:+.4f}  {word}")
        else:
            print(f"saliency overlay written to {out} (red: toward the label, purple: against)")
        print(reading(e))
        print(summary(e))
    return 0
