"""What precision 'auto' runs for one text model: the fastest this machine supports whose decisions agree with fp32's
on at least AGREEMENT of the model's own validation texts, measured once per model and recorded beside it.

    runs/x/precision.json   {"chosen": "int8", "texts": 200, "max_length": 256, "threshold": 0.995,
                             "guards": {"bf16": 0.25, "int8": 0.5}, "weights": [[file, bytes, mtime_ns]],
                             "measured": {"fp32": {"texts_per_s": 41.0, "agreement": 1.0},
                                          "int8": {"texts_per_s": 66.2, "agreement": 0.998}}}

Candidates are what this machine runs natively: int8 on a CPU (quantization.py), bf16 where native; each
with its fp32 guard (inference.py), timed on the same texts as fp32 after a warm-up. The fastest at AGREEMENT or
above wins; fp32 when none is. The texts are the run's eval_predictions.jsonl (its validation split, written at the
end of training), SAMPLE of them spread over the file. Where there is no such split (a Hub id, a bare model folder,
a run with fewer than MIN_TEXTS validation texts) or nothing to agree on (a regression head), 'auto' stays what it
was: bf16 with its guard where native, else fp32.

The record sits in the run folder beside eval_predictions.jsonl, not in model/: a Hub push sends model/, and these
are this machine's figures. It is measured again when the weights change (a retrained run), a guard band changes,
or this machine offers a precision the record lacks. Importing this module does not import torch (the web app reads
records through `describe`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from engine.rundir import RunDir, atomic_write_json, read_json

log = logging.getLogger("hubtune")

AGREEMENT = 0.995  # what counts as "the same labels" (DESIGN.md: the bf16 rule, now for every precision)
SAMPLE = 200  # validation texts measured: ~5 s of fp32 at 256 tokens on 2 cores, once per model
MIN_TEXTS = 100  # below this one flip moves agreement by more than 1%: too few to decide on


def run_dir(model_path) -> Path | None:
    """The run folder of a model (runs/x for runs/x/model or runs/x) when it has validation predictions."""
    p = Path(model_path)
    run = p.parent if p.name == "model" else p
    return run if (run / "model").is_dir() and RunDir(run).predictions.is_file() else None


def validation_texts(run: Path, limit: int = SAMPLE) -> list[str]:
    """Up to `limit` of the run's validation texts, spread over eval_predictions.jsonl (it is not in random order)."""
    texts = []
    try:
        lines = RunDir(run).predictions.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    for line in lines:
        try:
            text = json.loads(line).get("text") if line.strip() else None
        except (ValueError, AttributeError):
            continue
        if isinstance(text, str) and text.strip():
            texts.append(text)
    step = max(1, len(texts) // limit)
    return texts[::step][:limit]


def _stamp(model_dir: Path) -> list:
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(Path(model_dir).glob("*.safetensors"))]


def _guards() -> dict:
    from engine.tasks.text_classification.inference import BF16_GUARD, INT8_GUARD

    return {"bf16": BF16_GUARD, "int8": INT8_GUARD}


def candidates(lm) -> list[str]:
    """The faster precisions this machine runs for `lm`: bf16 where native, int8 on a CPU with an int8 engine."""
    from engine.tasks.text_classification.quantization import available

    out = ["bf16"] if lm.bf16 else []
    if lm.device.startswith("cpu") and available():
        out.append("int8")
    return out


def resolve(lm, batch_size: int) -> tuple[str, float | None]:
    """(precision, guard) that 'auto' runs for `lm`, decided on first use (see the module) and kept on `lm`."""
    if lm.auto is None:
        with lm.prep_lock:
            if lm.auto is None:
                lm.auto = _choose(lm, batch_size)
    return lm.auto, (_guards()["bf16"] if lm.auto == "bf16" else None)


def _fastest(measured: dict, allowed: list[str]) -> str:
    ok = [p for p in ("fp32", *allowed) if p in measured and measured[p]["agreement"] >= AGREEMENT]
    return max(ok, key=lambda p: measured[p]["texts_per_s"], default="fp32")


def _choose(lm, batch_size: int) -> str:
    import numpy as np

    unmeasured = "bf16" if lm.bf16 else "fp32"
    run, cands = run_dir(lm.path), candidates(lm)
    if run is None or not cands or lm.head.decisions(np.zeros((0, len(lm.labels)))) is None:
        return unmeasured
    path = RunDir(run).precision
    record = read_json(path, {}) or {}
    if (record.get("weights") == _stamp(lm.path) and record.get("guards") == _guards()
            and record.get("threshold") == AGREEMENT and set(cands) <= set(record.get("measured") or {})):
        return _fastest(record["measured"], cands)
    texts = validation_texts(run)
    if len(texts) < MIN_TEXTS:
        return unmeasured
    measured = measure(lm, texts, cands, batch_size)
    chosen = _fastest(measured, cands)
    record = {"chosen": chosen, "texts": len(texts), "max_length": lm.max_length, "threshold": AGREEMENT,
              "guards": _guards(), "weights": _stamp(lm.path), "measured": measured}
    try:
        atomic_write_json(path, record)
    except OSError as e:  # a read-only run folder: decided for this process, measured again next time
        log.warning("auto precision: cannot record %s (%s)", path, e)
    log.info("auto precision for %s: %s", run, describe_record(record))
    return chosen


def measure(lm, texts: list[str], precisions: list[str], batch_size: int) -> dict:
    """{precision: {texts_per_s, agreement}} on `texts`, fp32 (the reference) first; each precision with the guard
    it runs with under 'auto'."""
    import numpy as np

    from engine.tasks.text_classification.inference import scores

    guards = _guards()

    def timed(precision: str):
        guard = guards.get(precision)
        scores(lm, texts[:8], batch_size, precision, guard=guard)  # warm-up (and the int8 copy, once)
        t0 = time.perf_counter()
        rows = scores(lm, texts, batch_size, precision, guard=guard)
        return lm.head.decisions(np.stack(rows)), len(texts) / max(time.perf_counter() - t0, 1e-9)

    reference, tps = timed("fp32")
    out = {"fp32": {"texts_per_s": round(tps, 2), "agreement": 1.0}}
    for precision in precisions:
        got, tps = timed(precision)
        same = sum(a == b for a, b in zip(got, reference)) / len(reference)
        out[precision] = {"texts_per_s": round(tps, 2), "agreement": round(same, 5)}
    return out


def describe_record(record: dict) -> str:
    """One line: what 'auto' runs and the agreement behind it."""
    chosen, measured, n = record.get("chosen", "fp32"), record.get("measured") or {}, record.get("texts", 0)
    if chosen != "fp32":
        return f"{chosen} ({measured[chosen]['agreement']:.1%} agreement with fp32 on {n} validation texts)"
    why = [f"{p} agreed on {m['agreement']:.1%} of {n} validation texts"
           + (f", under {AGREEMENT:.1%}" if m["agreement"] < AGREEMENT else " but ran slower here")
           for p, m in measured.items() if p != "fp32"]
    return f"fp32 ({'; '.join(why)})" if why else "fp32"


def describe(model: str | None) -> str | None:
    """The Prediction tab's line for a picked run: 'precision: int8 (99.8% agreement with fp32 on 200 validation
    texts)', or that it is measured on the first prediction; None for a model without a validation split."""
    if not model:
        return None
    run = run_dir(Path(model).expanduser())
    if run is None:
        return None
    record = read_json(RunDir(run).precision, {}) or {}
    if record.get("weights") == _stamp(run / "model") and record.get("measured"):
        return f"precision: {describe_record(record)}"
    return (f"precision: auto, measured on the first prediction (the fastest precision that agrees with fp32 on "
            f"≥ {AGREEMENT:.1%} of the run's validation texts)")
