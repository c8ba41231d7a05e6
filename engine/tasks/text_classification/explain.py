"""Explanations of text predictions: Captum's `LayerIntegratedGradients` on the model's input embedding layer, the
tokens' attributions summed back into the words of the text (its whitespace-separated pieces, punctuation kept).

The path runs from a baseline where every token of the text is the padding token (the special tokens such as
[CLS] and [SEP] kept, so only the words differ) to the text itself, in word-embedding space; positions and
segments stay as they are, so the words' attributions add up to the whole change of the explained output. The
text is cut like prediction: the run's max_length in tokens (and MAX_CHARS_PER_TOKEN characters a token).
"""

from __future__ import annotations

import bisect
import re
import time

from engine.errors import ModelError
from engine.tasks.base import Explanation, check_text
from engine.tasks.text_classification.inference import MAX_CHARS_PER_TOKEN, tokens_used

TOKENS_PER_BATCH = 4096  # interpolation steps go through the model this many tokens at a time (bounds memory)


def hookable_copy(model):
    """`model`'s module tree copied around the same parameter and buffer tensors (no second copy of the weights).
    Captum hooks the embedding layer while it integrates; on this copy, predictions running at the same time on
    the cached model never pass through those hooks."""
    import copy

    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, shared)


def embedding_layer(model, name: str):
    """The layer mapping token ids to vectors, where the attributions are taken; a model without one is refused."""
    import torch

    try:
        layer = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        layer = None
    if not isinstance(layer, torch.nn.Module):
        raise ModelError(f"explain: '{name}' ({type(model).__name__}) has no input embedding layer "
                         "(get_input_embeddings()) for Integrated Gradients to attribute to; explain a transformers "
                         "text classifier with token embeddings (BERT, RoBERTa, DistilBERT, ...)")
    return layer


def _encode(lm, text: str):
    """(input ids (1, L), baseline ids, other model inputs, character offsets, the text cut like prediction)."""
    import torch

    cut = text[:lm.max_length * MAX_CHARS_PER_TOKEN]
    with lm.lock:  # the Rust tokenizer refuses concurrent use
        enc = lm.tokenizer(cut, truncation=True, max_length=lm.max_length, return_offsets_mapping=True,
                           return_special_tokens_mask=True)
    ids = torch.tensor([enc["input_ids"]], device=lm.device)
    special = torch.tensor([enc["special_tokens_mask"]], device=lm.device).bool()
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    baseline = torch.where(special, ids, torch.full_like(ids, pad))
    extra = {k: torch.tensor([enc[k]], device=lm.device) for k in ("attention_mask", "token_type_ids") if k in enc}
    return ids, baseline, extra, enc["offset_mapping"], cut


def merge_words(text: str, offsets: list, scores: list[float]) -> list[tuple[str, float | None]]:
    """The text as (piece, score) in order: each whitespace-separated word with the sum of its tokens' scores,
    the gaps between words and the words past the last token (truncated away) with None."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    starts = [s for s, _ in words]
    sums: dict[int, float] = {}
    for (start, end), score in zip(offsets, scores):
        if end > start:  # special tokens have an empty span
            w = bisect.bisect_right(starts, start) - 1
            sums[w] = sums.get(w, 0.0) + float(score)
    last = max(sums, default=-1)
    pieces, pos = [], 0
    for w, (start, end) in enumerate(words):
        if w > last:  # the rest was cut off: shown, not scored
            pieces.append((text[pos:], None))
            pos = len(text)
            break
        if start > pos:
            pieces.append((text[pos:start], None))
        pieces.append((text[start:end], sums.get(w, 0.0)))
        pos = end
    if pos < len(text):
        pieces.append((text[pos:], None))
    return pieces


def explain(lm, text, label: str | None, steps: int) -> Explanation:
    """Layer Integrated Gradients of `lm`'s explained output (its head's, for the chosen label) over the words of
    `text`, in fp32 on the cached model's own weights."""
    import torch
    from captum.attr import LayerIntegratedGradients

    check_text(text)
    start = time.perf_counter()
    model = hookable_copy(lm.model)
    layer = embedding_layer(model, lm.name)
    ids, baseline, extra, offsets, cut = _encode(lm, text)

    def run(input_ids):
        n = input_ids.shape[0]
        return model(input_ids=input_ids, **{k: v.expand(n, -1) for k, v in extra.items()}).logits.float()

    with torch.no_grad():
        logits = run(torch.cat([ids, baseline]))
    index = lm.head.explain_index(lm.labels, label, lm.head.scores(logits[:1])[0].tolist())
    ends = lm.head.explained(logits, index).tolist()

    lig = LayerIntegratedGradients(lambda input_ids: lm.head.explained(run(input_ids), index), layer)
    rows = max(1, TOKENS_PER_BATCH // ids.shape[1])
    with torch.enable_grad():
        attributions, delta = lig.attribute(ids, baselines=baseline, n_steps=steps, return_convergence_delta=True,
                                            internal_batch_size=min(rows, steps))
    scores = attributions.sum(-1)[0].detach().float().cpu().tolist()
    tokens, truncated = tokens_used(lm, text)
    return Explanation(label=lm.labels[index], meaning=lm.head.explain_meaning(lm.labels[index]), steps=steps,
                       delta=float(delta.reshape(-1)[0]), seconds=time.perf_counter() - start, output=ends[0],
                       baseline_output=ends[1], total=float(sum(scores)),
                       pieces=merge_words(cut, offsets, scores) + ([(text[len(cut):], None)] if len(cut) < len(text)
                                                                  else []),
                       tokens=tokens, truncated=truncated)
