"""Prediction: load a model once, predict in fast length-sorted batches, stream files through it.

    python -m engine.predict --model runs/x/model --text "..."
    python -m engine.predict --model user/repo --input in.csv --text_column review --output out.csv
    python -m engine.predict --model runs/x --backend onnx [--precision int8] --text "..."   # after engine.export
    python -m engine.predict --model runs/x --text "..." --explain [--explain_steps 50] [--explain_label sports]

Models come through engine.modeling (local run, offline copy, Hub id + revision; safetensors only, never remote
code) and stay in a small LRU cache shared by every caller (all users of the web app): bounded by bytes and count,
thread-safe, and concurrent requests for a model that is still loading wait for that one load.

Each model is read through its task (engine/tasks/): text is tokenized without padding, sorted by length and batched, so
each batch is padded only to its own longest text; forward passes run under `torch.inference_mode()` in fp32 (the exact
reference), bf16 autocast (where native) or dynamic int8 Linear layers ('int8', CPU). int8, and bf16 under 'auto',
recompute in fp32 the rows whose prediction is too close to call. The default 'auto' runs the fastest precision whose
labels agree with fp32 on >= 99.5% of the run's own validation texts (measured once per model, recorded in
runs/x/precision.json); a model without a validation split gets bf16 where native, else fp32
(engine/tasks/text_classification/auto_precision.py). What the outputs mean (probabilities per class, ...) is the
model's head. `backend='onnx'` serves the model's ONNX export (engine/serving/export.py) through onnxruntime instead, in
the same batches with the same outputs: onnx/model.onnx, or onnx/model_quantized.onnx for precision 'int8'
(engine/serving/onnx_backend.py). Importing this module does not import torch (the web app starts fast; torch loads on
first use).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

from engine import tasks
from engine.errors import CliParser, report
from engine.serving import onnx_backend
from engine.errors import ConfigError, ModelError, PredictError  # noqa: F401 - PredictError re-exported
from engine.tasks.base import LoadedModel
# the text task's precisions and the bf16 guard, known from here by the CLI and the benches
from engine.tasks.text_classification.inference import PRECISIONS

log = logging.getLogger("hubtune")

Progress = Callable[[float, str], None]


def _noop(fraction: float, desc: str) -> None:
    pass


def model_task(path: Path) -> str:
    """The pipeline tag of a saved model, from its config.json (no torch): the UI picks its input widget with it."""
    return tasks.for_model(path).tag


def check_text(text) -> str:
    """The text to classify, or a PredictError when there is nothing to classify."""
    if not isinstance(text, str) or not text.strip():
        raise PredictError("text: empty; type or paste some text to classify")
    return text


def bf16_supported(device: str) -> bool:
    """True where bf16 autocast is native and fast (CUDA with bf16, CPUs with AVX512-BF16 or AMX)."""
    import torch

    from engine.hardware import cpu_supports_bf16

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def load_model(name: str, revision: str | None = "main", device: str | None = None,
               allow_user_code: bool = False, onnx_file: str | None = None) -> LoadedModel:
    """Resolve and load one model for prediction (no caching; use a Predictor for that), through its task. Image
    models rebuilt from a `pkg.mod:Class` run the user's code, so they load only with `allow_user_code`. `onnx_file`
    (model.onnx, model_quantized.onnx): run that export of it with onnxruntime (engine/serving/onnx_backend.py)."""
    from engine import modeling

    path = modeling.resolve_model(name, revision, field="model")
    export = onnx_backend.find_export(path, onnx_file, name, revision) if onnx_file else None  # before weights load
    lm = tasks.for_model(path).load_for_inference(name, revision, path, "cpu" if export else device,
                                                  allow_user_code, bf16_supported)
    return onnx_backend.attach(lm, export) if export else lm


def _cache_key(name: str, revision: str | None, onnx_file: str | None = None) -> tuple:
    name = (name or "").strip()
    if not name:
        raise ModelError("model: none chosen; pick a finished run or type a Hub id (no run yet? train one in the "
                         "Fine-tuning tab or with python -m engine.train --output_dir runs/NAME)")
    p = Path(name).expanduser()
    if p.is_dir():
        # a retrained run replaces its model/ folder: the weights' mtime makes that a new cache entry
        model = p / "model" if (p / "model" / "config.json").exists() else p
        stamp = max((f.stat().st_mtime_ns for f in model.glob("*.safetensors")), default=0)
        if onnx_file:  # a new export replaces the file: a new cache entry too
            export = model / onnx_backend.ONNX_DIR / onnx_file
            return ("local", str(model.resolve()), stamp, onnx_file,
                    export.stat().st_mtime_ns if export.is_file() else 0)
        return ("local", str(model.resolve()), stamp)
    return ("hub", name, revision or "main", *((onnx_file,) if onnx_file else ()))


class ModelCache:
    """LRU cache of loaded models bounded by total bytes and count; one load per model however many callers."""

    def __init__(self, max_bytes: int, max_models: int):
        self.max_bytes, self.max_models = max_bytes, max_models
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._loading: dict[tuple, Future] = {}
        self.loads = 0  # how many loads actually ran (tests check that concurrent callers share one)

    def get(self, key: tuple, loader: Callable[[], LoadedModel]) -> LoadedModel:
        """The cached model for `key`, loading it with `loader` once; other callers wait for that load."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            future = self._loading.get(key)
            owner = future is None
            if owner:
                future = self._loading[key] = Future()
        if not owner:
            return future.result()  # re-raises the loader's error for every waiter
        try:
            loaded = loader()
            self.loads += 1
        except BaseException as e:
            with self._lock:
                del self._loading[key]  # a failed load is not cached: the next request tries again
            future.set_exception(e)
            raise
        with self._lock:
            del self._loading[key]
            self._entries[key] = loaded
            self._evict(keep=key)
        future.set_result(loaded)
        return loaded

    def _evict(self, keep: tuple) -> None:
        # a model still used by a running request stays alive through that request's reference
        while len(self._entries) > 1 and (len(self._entries) > self.max_models or
                                          sum(m.nbytes for m in self._entries.values()) > self.max_bytes):
            oldest = next(k for k in self._entries if k != keep)
            log.info("model cache: evicting %s", oldest[1])
            del self._entries[oldest]

    def keys(self) -> list[tuple]:
        with self._lock:
            return list(self._entries)


class Predictor:
    """Predict with cached models: `predict(model, texts)`, `predict_file(model, in, out)`."""

    def __init__(self, max_cache_mb: int | None = None, max_models: int | None = None, batch_size: int = 32,
                 precision: str = "auto", device: str | None = None, allow_user_code: bool = False,
                 backend: str = "torch"):
        mb = max_cache_mb or int(os.environ.get("HUBTUNE_MODEL_CACHE_MB", "2048"))
        self.cache = ModelCache(mb << 20, max_models or int(os.environ.get("HUBTUNE_MODEL_CACHE_MODELS", "4")))
        if precision not in PRECISIONS:
            raise PredictError(f"precision: '{precision}' is not one of {', '.join(PRECISIONS)}")
        self.batch_size, self.precision, self.device = batch_size, precision, device
        # 'onnx': the model's onnx/ export through onnxruntime, same batching and outputs
        # (engine/serving/onnx_backend.py)
        if backend not in onnx_backend.BACKENDS:
            raise PredictError(f"backend: '{backend}' is not one of {', '.join(onnx_backend.BACKENDS)}")
        self.backend = backend
        self._onnx_file(precision)  # bf16 has no ONNX file: refused here, not at the first request
        # image models built from a user's pkg.mod:Class run its code: only the command line turns this on
        self.allow_user_code = allow_user_code

    def _onnx_file(self, precision: str | None) -> str | None:
        """The ONNX file a precision serves from on the onnx backend (None on the torch backend)."""
        return None if self.backend == "torch" else onnx_backend.onnx_file(precision or self.precision)

    def load(self, name: str, revision: str | None = "main", progress: Progress = _noop, *,
             allow_user_code: bool | None = None, precision: str | None = None) -> LoadedModel:
        """The loaded model for a local run/dir or Hub id at `revision` (from the cache when possible).

        `allow_user_code` (default: the Predictor's) must be true for image models rebuilt from `pkg.mod:Class`.
        `precision` (default: the Predictor's) picks the ONNX file on the onnx backend.
        """
        allowed = self.allow_user_code if allow_user_code is None else allow_user_code
        onnx_file = self._onnx_file(precision)
        key = _cache_key(name, revision, onnx_file)

        def loader():
            progress(0.0, f"loading model {name} (first use)")
            t0 = time.perf_counter()
            loaded = load_model(name, revision, self.device, allow_user_code=allowed, onnx_file=onnx_file)
            log.info("loaded %s in %.1f s (%d labels, max_length %d, bf16 %s)", name, time.perf_counter() - t0,
                     len(loaded.labels), loaded.max_length, loaded.bf16)
            return loaded

        lm = self.cache.get(key, loader)
        if lm.user_code and not allowed:  # cached by a caller that allowed user code; this one does not
            from engine.tasks.image_classification.models import refuse_user_code

            refuse_user_code(lm.user_code, "model")
        return lm

    def predict_image(self, name: str, image, revision: str | None = "main", *,
                      allow_user_code: bool | None = None) -> dict[str, float]:
        """{label: probability} for one image, best first. `image`: a PIL image, a numpy array (HxW or HxWxC, uint8
        or float in [0, 1]) or a path; converted to the model's channels and size by its task."""
        lm = self.load(name, revision, allow_user_code=allow_user_code)
        if lm.kind.input_kind != "image":
            raise PredictError(f"model: '{name}' is a {lm.task} model; it reads text, not images")
        return lm.head.output(lm.kind.scores(lm, [image])[0], lm.labels)

    def predict(self, name: str, texts: list[str], revision: str | None = "main", *, max_length: int | None = None,
                precision: str | None = None, progress: Progress = _noop) -> list[dict[str, float] | None]:
        """For each text, {label: probability} over all of the model's labels, best first (None for blank text)."""
        lm = self.load(name, revision, progress, precision=precision)
        rows = self.probabilities(lm, texts, max_length=max_length, precision=precision)
        return [None if row is None else lm.head.output(row, lm.labels) for row in rows]

    def predict_text(self, name: str, text: str, revision: str | None = "main", **kw) -> dict[str, float]:
        """{label: probability} for one text; PredictError when it is empty."""
        return self.predict(name, [check_text(text)], revision, **kw)[0]

    def probabilities(self, lm: LoadedModel, texts: list, *, max_length: int | None = None,
                      precision: str | None = None):
        """One score row (numpy; probabilities for classifiers) per text, None for blank or missing texts, in the
        order given."""
        if lm.kind.input_kind != "text":
            raise PredictError(f"model: '{lm.name}' is an {lm.task} model; give it images (--image, the Image box)")
        precision = precision or self.precision
        if precision not in PRECISIONS:
            raise PredictError(f"precision: '{precision}' is not one of {', '.join(PRECISIONS)}")
        if lm.backend != "torch":
            file = self._onnx_file(precision)
            if lm.backend != f"onnx:{file}":  # another precision of the same model: its own export file
                lm = self.load(lm.name, lm.revision, precision=precision)
            precision = "fp32"  # the ONNX file is the precision: no autocast, no torch quantization on top
        return lm.kind.scores(lm, texts, self.batch_size, precision, max_length)

    def tokens_used(self, lm: LoadedModel, text: str, max_length: int | None = None) -> tuple[int, bool]:
        """(tokens the model sees for `text`, whether the text was truncated to fit)."""
        from engine.tasks.text_classification.inference import tokens_used

        return tokens_used(lm, text, max_length)

    # files: see predict_file below (kept in engine/serving/files.py to keep each module short)
    def predict_file(self, name: str, input_path: str, output_path: str | None = None, text_column: str | None = None,
                     revision: str | None = "main", *, chunk_rows: int = 1024, progress: Progress = _noop, **kw):
        """Stream a csv/jsonl/parquet file through the model; see engine.serving.files.predict_file."""
        from engine.serving.files import predict_file

        return predict_file(self, name, input_path, output_path, text_column, revision, chunk_rows=chunk_rows,
                            progress=progress, **kw)


_shared: Predictor | None = None
_shared_lock = threading.Lock()


def shared_predictor() -> Predictor:
    """The process-wide Predictor (one model cache for every user of the web app); HUBTUNE_PRECISION sets its
    default precision (auto; the REST endpoint and the Prediction tab's 'auto' run it)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Predictor(precision=os.environ.get("HUBTUNE_PRECISION") or "auto")
        return _shared


# ------------------------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m engine.predict", description="Classify texts or a file with a fine-tuned model.")
    p.add_argument("--model", required=True, help="finished run dir, model dir or Hub id")
    p.add_argument("--revision", default="main", help="Hub branch, tag or commit (Hub ids only)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="text to classify (repeat for several)")
    src.add_argument("--input", help="csv, jsonl or parquet file to classify")
    src.add_argument("--image", action="append", help="image file to classify (repeat for several); the command "
                     "line may rebuild models from a pkg.mod:Class (user code)")
    p.add_argument("--text_column", help="column of --input holding the text (default: 'text' or a guess)")
    p.add_argument("--output", help="where to write the predictions file (default: <input>.predictions.<ext>)")
    p.add_argument("--top_k", type=int, default=5, help="label scores to print per text (multi-label: the labels "
                   "over their thresholds come first, then the scores)")
    p.add_argument("--max_length", type=int, help="truncate texts to this many tokens (default: the run's)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32: the exact reference; int8: dynamic int8 on the CPU, close calls re-run in fp32; bf16: "
                   "autocast where native; auto: the fastest of these agreeing with fp32 on >= 99.5%% of the run's "
                   "validation texts (measured once, runs/x/precision.json), else bf16 where native or fp32")
    p.add_argument("--backend", choices=onnx_backend.BACKENDS, default="torch",
                   help="onnx: run the model's onnx/ export (python -m engine.export) with onnxruntime on the CPU; "
                   "--precision int8 picks onnx/model_quantized.onnx")
    p.add_argument("--json", action="store_true", help="print one JSON object per text")
    # explanations (engine/serving/explain.py): Integrated Gradients through Captum
    p.add_argument("--explain", action="store_true", help="print which words pushed the prediction toward the "
                   "label, with their attributions and the convergence delta (--image: a saliency overlay PNG)")
    p.add_argument("--explain_steps", type=int, default=50, help="integration steps: about one forward+backward "
                   "pass each; more steps, smaller delta (1 to 500)")
    p.add_argument("--explain_label", help="the label to explain (default: the predicted one; regression: toward "
                   "higher values)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; 0 on success, 2 on bad input (one line on stderr)."""
    logging.basicConfig(level=logging.WARNING, format="hubtune %(levelname)s %(message)s")
    try:
        args = _parser().parse_args(argv)
        if args.batch_size < 1 or args.top_k < 1 or (args.max_length is not None and args.max_length < 2):
            raise PredictError("batch_size and top_k must be >= 1, max_length >= 2")
        predictor = Predictor(batch_size=args.batch_size, precision=args.precision, allow_user_code=True,
                              backend=args.backend)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # stderr carries our own progress line and errors only
        if args.explain:
            from engine.serving import explain

            return explain.cli(predictor, args)
        if args.input:
            def show_progress(fraction, desc):
                print(f"\r{desc} ({fraction:.0%})", end="", file=sys.stderr, flush=True)

            res = predictor.predict_file(args.model, args.input, args.output, args.text_column, args.revision,
                                         max_length=args.max_length, progress=show_progress)
            print(f"\nwrote {res.rows} predictions to {res.output} ({res.rows / max(res.seconds, 1e-9):.0f} "
                  "texts/s)", file=sys.stderr)
            return 0
        for item in args.text or args.image:
            output = predictor.predict_text(args.model, item, args.revision, max_length=args.max_length) \
                if args.text else predictor.predict_image(args.model, item, args.revision)
            head = predictor.load(args.model, args.revision).head  # what the output means: its model's head
            if args.json:
                said = head.predicted(output)
                if "scores" in said:
                    said["scores"] = dict(list(said["scores"].items())[:args.top_k])
                print(json.dumps(said))
            else:
                print(head.cli_text(output, args.top_k))
    except ConfigError as e:
        return report(e)
    return 0
