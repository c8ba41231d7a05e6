"""ONNX export of a text classifier (engine/serving/export.py): the real texts an export is verified on, the named
inputs the model reads (input_ids, attention_mask[, token_type_ids], batch and sequence axes dynamic), and the model
card's onnxruntime snippet for each head."""

from __future__ import annotations

import json
from pathlib import Path

from engine.tasks.base import onnx_snippet

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
FALLBACK = "bundled:bbc_news_paragraphs"  # real texts of varied length, for a model folder that is not a run's


def samples(model_dir: Path, limit: int) -> tuple[list[str], str]:
    """(texts, where they come from): the run's own validation texts (eval_predictions.jsonl beside model/), else
    BBC News paragraphs of varied length."""
    preds = Path(model_dir).parent / "eval_predictions.jsonl"
    if Path(model_dir).name == "model" and preds.is_file():
        texts = []
        for line in preds.read_text(encoding="utf-8").splitlines():
            text = json.loads(line).get("text") if line.strip() else None
            if isinstance(text, str) and text.strip():
                texts.append(text)
        if texts:
            return texts[:limit], "validation texts of the run"
    from engine.bundled import BUNDLED

    texts = BUNDLED[FALLBACK][0]()["text"]
    step = max(1, len(texts) // limit)  # spread over every topic, not the first article's paragraphs
    return texts[::step][:limit], f"BBC News paragraphs ({FALLBACK}; the folder is not a run's)"


def inputs(lm, texts: list[str]) -> tuple[dict, dict]:
    """({name: tensor} of one padded batch, {name: {axis: dim name}}): what the exported graph takes."""
    from engine.tasks.text_classification.inference import MAX_CHARS_PER_TOKEN

    cut = lm.max_length * MAX_CHARS_PER_TOKEN
    with lm.lock:
        enc = lm.tokenizer([t[:cut] for t in texts], truncation=True, max_length=lm.max_length, padding=True,
                           return_tensors="pt")
    names = [n for n in INPUT_NAMES if n in enc]
    return {n: enc[n] for n in names}, {n: {0: "batch_size", 1: "sequence_length"} for n in names}


def usage(usage_id: str, head, quantized: bool) -> str:
    """The card's snippet: onnxruntime on the exported graph, the tokenizer from the repo, the head's reading of
    the logits (softmax; a sigmoid per label against the saved thresholds; the number itself)."""
    problem = getattr(head, "problem_type", None)
    if problem == "multi_label_classification":
        read = """scores = 1 / (1 + np.exp(-logits))  # a sigmoid per label
names = [config["id2label"][str(j)] for j in range(logits.shape[-1])]
labels = [[n for n, s in zip(names, row) if s >= config["thresholds"][n]] for row in scores]
print(labels, scores)"""
    elif problem == "regression":
        read = """prediction = logits[:, 0]  # the predicted number itself (no softmax, no sigmoid)
print(prediction, "training labels ranged over", config.get("label_range"))"""
    else:
        read = """probs = np.exp(logits - logits.max(-1, keepdims=True))
probs /= probs.sum(-1, keepdims=True)  # softmax
labels = [config["id2label"][str(i)] for i in probs.argmax(-1)]
print(labels, probs.max(-1))"""
    return onnx_snippet(usage_id, quantized, "AutoTokenizer", f"""\
texts = ["Shares rose after the company reported record profits."]
enc = preprocess(texts, truncation=True, padding=True, return_tensors="np")
logits = session.run(["logits"], {{i.name: enc[i.name] for i in session.get_inputs()}})[0]
{read}""")
