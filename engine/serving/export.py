"""ONNX export of a finished run or model folder, verified against PyTorch on real validation inputs.

    python -m engine.export --model runs/x [--quantize int8] [--output DIR] [--samples 256]

Writes `onnx/model.onnx` inside the model folder (the layout Optimum and transformers.js read; `--output DIR`
writes to DIR instead, which the Predictor and `engine.hub push --with-onnx` do not read): the task's inputs
(input_ids / attention_mask [/ token_type_ids], or pixel_values) with dynamic batch (and sequence) axes, one output
`logits`. `--quantize int8` adds `onnx/model_quantized.onnx` (onnxruntime's dynamic int8 quantization of the
MatMul/Gemm weights, Optimum's name). Every file is run by onnxruntime on the run's own validation examples beside
the PyTorch model and the figures are printed: max |Δlogit| and how many predictions agree. An fp32 graph further
than TOLERANCE from PyTorch is refused, not written. `onnx/export.json` records the check and the sha256 of the
weights it came from (serving refuses an export of other weights).

The exporter is torch.onnx's default, the dynamo one (torch.export + onnxscript): on transformers 5 BERT models the
legacy TorchScript exporter (dynamo=False, dynamic_axes) ran but gave logits up to ~0.9 away from PyTorch on
batch shapes other than the example's; the dynamo graph agrees to ~1e-6 on every shape.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from engine.errors import CliParser, ConfigError, ModelError, report
from engine.serving import onnx_backend

log = logging.getLogger("hubtune")
DEFAULT_SAMPLES = 256
BATCH = 16  # verification batches: several padded shapes, none of them the export's example
# fp32 ONNX runs the same arithmetic in another order: differences stay ~1e-6; beyond this the graph is wrong
TOLERANCE = float(os.environ.get("HUBTUNE_ONNX_TOLERANCE", "1e-3"))
QUANTIZE = ("int8",)


@dataclass
class Check:
    """One exported file run beside PyTorch fp32 on the same inputs."""

    file: Path
    count: int
    max_diff: float  # max |Δlogit| over every example and output
    agree: int | None  # predictions (label, label set) equal to PyTorch's; None for regression (a number)

    def line(self) -> str:
        said = f"max |Δlogit| {self.max_diff:.2g}"
        if self.agree is not None:
            said += f", predictions agree {self.agree}/{self.count} ({self.agree / max(self.count, 1):.1%})"
        return said

    def record(self) -> dict:
        out = {"max_abs_logit_diff": self.max_diff, "examples": self.count}
        if self.agree is not None:
            out["agreement"] = round(self.agree / max(self.count, 1), 6)
        return out


@dataclass
class ExportResult:
    folder: Path
    fp32: Check
    int8: Check | None
    source: str  # where the verification examples came from
    seconds: float


def _decisions(lm, logits) -> list | None:
    """What each row predicts, as the head reads it (label, label set), or None when the head predicts a number."""
    import torch

    out = []
    for row in lm.head.scores(torch.from_numpy(logits)).numpy():
        said = lm.head.predicted(lm.head.output(row, lm.labels))
        if "prediction" in said:
            return None
        out.append(said.get("label", tuple(said.get("labels") or ())))
    return out


def verify(lm, path: Path, samples: list) -> Check:
    """Run `path` with onnxruntime and the torch model of `lm` on `samples` in batches; compare the logits."""
    import numpy as np
    import torch

    session = onnx_backend.session(path)
    names = [i.name for i in session.get_inputs()]
    worst, agree, compared = 0.0, 0, 0
    for start in range(0, len(samples), BATCH):
        batch, _ = lm.kind.export_inputs(lm, samples[start:start + BATCH])
        with torch.inference_mode():
            ref = lm.model(**batch).logits.float().numpy()
        (got,) = session.run(["logits"], {n: batch[n].numpy() for n in names})
        worst = max(worst, float(np.abs(ref - got).max()))
        a, b = _decisions(lm, ref), _decisions(lm, got)
        if a is not None:
            agree += sum(x == y for x, y in zip(a, b))
            compared += len(a)
    return Check(path, len(samples), worst, agree if compared else None)


class _Logits:
    """The model as the exporter sees it: positional inputs in the task's order, the logits as the one output."""

    def __new__(cls, model, names):
        import torch

        class Logits(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                return self.model(**dict(zip(names, inputs))).logits

        return Logits().eval()


def _reason(e: BaseException) -> str:
    """The exporter's failure in a few words: the root cause's first line, and the operation it could not translate
    (the outer errors only say which of its three steps failed)."""
    chain = [e]
    while len(chain) < 12 and (chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    root = chain[-1]
    line = re.sub(r"\x1b\[[0-9;]*m", "", next((x.strip() for x in str(root).splitlines() if x.strip()), ""))
    op = next((m.group(1) for c in chain if (m := re.search(r"target=([\w.:]+)", str(c)))), None)
    said = f"{type(root).__name__}: {line}"[:200]
    return f"no ONNX translation of {op} as this model calls it; {said}" if op else said


def _export_graph(lm, example: dict, axes: dict, target: Path) -> None:
    """torch.onnx.export (dynamo) of `lm.model` to `target`; any failure becomes one line naming the reason."""
    import torch

    names = list(example)
    dims: dict = {}

    def dim(name: str):  # one symbol per axis name, shared by every input that has it
        if name not in dims:
            dims[name] = torch.export.Dim(name, max=lm.limit) if name == "sequence_length" and lm.limit else \
                torch.export.Dim(name)
        return dims[name]

    shapes = (tuple({axis: dim(d) for axis, d in axes[n].items()} for n in names),)
    big = lm.nbytes > 1_500_000_000  # protobuf stops at 2 GB: larger weights go to a data file beside the graph
    arch = (getattr(lm.model.config, "architectures", None) or [type(lm.model).__name__])[0]
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Logits(lm.model, names), tuple(example[n] for n in names), str(target),
                              input_names=names, output_names=["logits"], dynamic_shapes=shapes, dynamo=True,
                              external_data=big, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; each becomes one line
        raise ModelError(f"model: {arch} cannot be exported to ONNX ({_reason(e)}); predict with --backend torch"
                         ) from None
    finally:
        quiet.setLevel(level)


class _NoPreprocessHint(logging.Filter):
    def filter(self, record) -> bool:  # onnxruntime suggests quant_pre_process, which changed nothing here
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(src: Path, target: Path) -> None:
    """Dynamic int8 with one scale per output channel: on a fine-tuned MiniLM, per-tensor scales flipped 13 of 400
    BBC paragraphs (96.8% agreement), per-channel 1 (99.8%); quant_pre_process changed neither."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _NoPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(target), weight_type=QuantType.QInt8, per_channel=True,
                             use_external_data_format=src.stat().st_size > 1_500_000_000)
    finally:
        logging.getLogger().removeFilter(hint)


def _place(tmp: Path, folder: Path, stem: str) -> Path:
    """Move `stem` (and a data file beside it) from the scratch folder into place, each by one rename."""
    for part in sorted(tmp.glob(stem + "*")):
        os.replace(part, folder / part.name)
    return folder / stem


def export(model: str, output: str | None = None, quantize: str | None = None, samples: int = DEFAULT_SAMPLES,
           say=print) -> ExportResult:
    """Export a local run or model folder to ONNX (+ int8), verified on its validation examples; see the module."""
    from engine import modeling
    from engine.serving.predictor import load_model

    onnx_backend.check_runtime()
    if quantize not in (None, *QUANTIZE):
        raise ModelError(f"quantize: '{quantize}' is not one of {', '.join(QUANTIZE)}")
    if samples < 2:
        raise ModelError("samples: check the export on at least 2 examples")
    if not str(model or "").strip():
        raise ModelError("model: empty; give a finished run (runs/x) or a model folder")
    given = Path(str(model)).expanduser()
    if not given.is_dir() and modeling.is_path_like(str(model)):
        raise modeling.missing_folder(str(model), "model")
    if not given.is_dir():  # a Hub id: exports are written beside the model, so it must be a local copy
        raise ModelError(f"model: '{model}' is not a local folder; export a finished run (runs/x) or a model folder "
                         "(for a Hub model, python -m engine.hub pull ID prints its folder)")
    t0 = time.perf_counter()
    path = modeling.resolve_model(str(given), None, field="model")
    lm = load_model(str(path), None, "cpu", allow_user_code=True)  # the command line may rebuild pkg.mod:Class
    lm.model.float().eval()
    examples, source = lm.kind.export_samples(path, samples)
    if not examples:
        raise ModelError(f"model: no examples to check the export of '{model}' on")
    folder = Path(output).expanduser() if output else path / onnx_backend.ONNX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    digest = onnx_backend.weights_digest(path)
    record = onnx_backend.read_record(folder)
    tmp = folder / f".export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # the example has several rows of different lengths, so no axis is specialised to 1 or to one length
        example, axes = lm.kind.export_inputs(lm, (examples * 2)[:4])
        _export_graph(lm, example, axes, tmp / onnx_backend.FP32_FILE)
        fp32 = verify(lm, tmp / onnx_backend.FP32_FILE, examples)
        if not fp32.max_diff <= TOLERANCE:
            raise ModelError(f"model: the ONNX graph of '{model}' is {fp32.max_diff:.3g} away from PyTorch (tolerance "
                             f"{TOLERANCE:g}); it was not written; predict with --backend torch")
        int8 = None
        if quantize:
            _quantize(tmp / onnx_backend.FP32_FILE, tmp / onnx_backend.INT8_FILE)
            int8 = verify(lm, tmp / onnx_backend.INT8_FILE, examples)
        fp32.file = _place(tmp, folder, onnx_backend.FP32_FILE)
        files = {onnx_backend.FP32_FILE: fp32.record()}
        if int8:
            int8.file = _place(tmp, folder, onnx_backend.INT8_FILE)
            files[onnx_backend.INT8_FILE] = int8.record()
        elif record.get("weights_sha256") == digest and onnx_backend.INT8_FILE in record.get("files", {}):
            files[onnx_backend.INT8_FILE] = record["files"][onnx_backend.INT8_FILE]  # still of these weights
        else:
            for stale in folder.glob(onnx_backend.INT8_FILE + "*"):  # quantized from other weights
                stale.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _write_record(folder, lm, example, axes, digest, source, files)
    result = ExportResult(folder, fp32, int8, source, time.perf_counter() - t0)
    say(f"wrote {fp32.file} ({_size(fp32.file)}; inputs {', '.join(example)} -> logits)")
    say(f"checked on {fp32.count} {source}: {fp32.line()}")
    if int8:
        say(f"wrote {int8.file} ({_size(int8.file)}, int8): {int8.line()} (against PyTorch fp32)")
    return result


def _size(path: Path) -> str:
    n = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))  # with a data file beside it
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _write_record(folder: Path, lm, example: dict, axes: dict, digest: str, source: str, files: dict) -> None:
    import onnx
    import torch

    from engine.rundir import atomic_write_json

    graph = onnx.load(str(folder / onnx_backend.FP32_FILE), load_external_data=False)
    opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)
    atomic_write_json(folder / onnx_backend.RECORD, {
        "exporter": f"torch.onnx (dynamo) {torch.__version__}", "opset": opset, "task": lm.task,
        "problem_type": lm.head.problem_type, "inputs": list(example), "output": "logits",
        "dynamic_axes": sorted({d for a in axes.values() for d in a.values()}),
        "weights_sha256": digest, "checked_on": source, "files": files})


def ensure_export(model: str, quantize: str | None = None, say=print) -> ExportResult | None:
    """Export `model` unless <model>/onnx already holds a fresh export (with model_quantized.onnx when `quantize`);
    for the benches and scripts that need an ONNX backend ready. None when nothing had to be done."""
    from engine import modeling

    path = modeling.resolve_model(str(model), None, field="model")
    try:
        onnx_backend.find_export(path, onnx_backend.INT8_FILE if quantize else onnx_backend.FP32_FILE, str(model))
        return None
    except ModelError:
        return export(str(model), quantize=quantize, say=say)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; 0 on success, 2 with one line on anything that cannot be exported."""
    logging.basicConfig(level=logging.WARNING, format="hubtune %(levelname)s %(message)s")
    p = CliParser(prog="python -m engine.export", description="Export a run's model to ONNX (onnx/model.onnx in "
                  "the model folder), checked against PyTorch on the run's validation examples.")
    p.add_argument("--model", required=True, help="finished run dir or model dir (local)")
    p.add_argument("--quantize", choices=QUANTIZE, help="also write onnx/model_quantized.onnx (dynamic int8)")
    p.add_argument("--output", help="folder for the .onnx files (default: <model>/onnx, where predict and push "
                   "look)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="validation examples to check it on")
    try:
        args = p.parse_args(argv)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        export(args.model, args.output, args.quantize, args.samples)
    except ConfigError as e:
        return report(e)
    return 0
