"""The ONNX backend: a model exported by engine.export, run by onnxruntime on the CPU, behind the LoadedModel the
torch path uses, so the task's batching (length-sorted token-budget batches for text) and the head's scores and
labels are exactly those of `--backend torch`.

    <model>/onnx/model.onnx            fp32, inputs input_ids / attention_mask [/ token_type_ids] or pixel_values,
    <model>/onnx/model_quantized.onnx  output `logits`, dynamic batch (and sequence) axes: Optimum's and
                                       transformers.js's layout and names
    <model>/onnx/export.json           how it was exported and verified, with the sha256 of the weights it came from

Which file serves: model.onnx, or model_quantized.onnx for precision 'int8' (dynamic int8 quantization by
onnxruntime; no close-call guard: its label agreement with fp32 is measured at export and printed there). bf16 is a
torch precision and is refused. An export whose weights no longer match model.safetensors (the model was trained
again after the export) is refused, never served.
Importing this module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from engine.errors import ModelError

BACKENDS = ("torch", "onnx")
ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"  # Optimum's name for the dynamically quantized model
RECORD = "export.json"
MISSING = ("onnxruntime", "onnx", "onnxscript")


def onnx_file(precision: str | None) -> str:
    """The exported file a precision serves from: model_quantized.onnx for 'int8', model.onnx otherwise."""
    if precision == "bf16":
        raise ModelError("precision: bf16 is a torch precision; the ONNX backend runs model.onnx (fp32, --precision "
                         "fp32 or auto) or model_quantized.onnx (--precision int8)")
    return INT8_FILE if precision == "int8" else FP32_FILE


def check_runtime() -> None:
    """One line naming the packages to install when onnxruntime (or the exporter's onnx/onnxscript) is missing."""
    import importlib.util

    missing = [m for m in MISSING if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"backend: ONNX needs {', '.join(missing)}; pip install -r requirements.txt (or pip install "
                         "onnx onnxruntime onnxscript)")


def weights_digest(model_dir: Path) -> str:
    """sha256 over the model's safetensors files (what an export records, and what serving checks against)."""
    h = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def read_record(folder: Path) -> dict:
    """export.json of an ONNX folder ({} when absent or unreadable: an export made elsewhere, e.g. by Optimum)."""
    try:
        return json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def find_export(model_dir: Path, file: str, name: str, revision: str | None = None,
                otherwise: str = "or use --backend torch") -> Path:
    """<model_dir>/onnx/<file>, checked to be there and to come from these weights; else one line saying what to run.
    For a Hub model (`name` is not a local folder) the file is downloaded into its snapshot first, if the repo has
    it (engine.hub push --with-onnx)."""
    path = Path(model_dir) / ONNX_DIR / file
    flag = " --quantize int8" if file == INT8_FILE else ""
    if not path.is_file() and not Path(name).expanduser().is_dir():
        from engine.hub.client import pull

        pull(name, revision, field="model", patterns=[f"{ONNX_DIR}/{file}*", f"{ONNX_DIR}/{RECORD}"])  # + data file
        if not path.is_file():
            raise ModelError(f"model: the Hub repo '{name}' has no {ONNX_DIR}/{file} (push it with python -m "
                             f"engine.hub push RUN --repo {name} --with-onnx), {otherwise}")
    if not path.is_file():
        raise ModelError(f"model: '{name}' has no ONNX export ({ONNX_DIR}/{file}); run python -m engine.export "
                         f"--model {name}{flag} first, {otherwise}")
    recorded = read_record(path.parent).get("weights_sha256")
    if recorded and recorded != weights_digest(model_dir):
        raise ModelError(f"model: the ONNX export of '{name}' was made from other weights (the model was trained "
                         f"again since); run python -m engine.export --model {name}{flag} again")
    return path


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session with every graph optimization on, quiet (warnings only)."""
    check_runtime()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    threads = threads or int(os.environ.get("HUBTUNE_ONNX_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        # as torch's OpenMP threads then do: no spin-waiting between ops, which only takes the cores from the other
        # work on this machine (a training run beside the web app, another test worker)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An onnxruntime session that is called like a transformers classifier: `model(**inputs).logits`, with the
    torch tensors the task's batching builds; `config` is the torch model's (labels, channels, problem type)."""

    def __init__(self, path: Path, config, threads: int | None = None):
        self.path, self.config = Path(path), config
        self.session = session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs):
        import numpy as np
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutput

        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ModelError(f"model: the ONNX export '{self.path}' needs inputs {', '.join(missing)} that the model's "
                             "preprocessing does not give; export it again with python -m engine.export")
        feed = {n: np.ascontiguousarray(inputs[n].detach().cpu().numpy()) for n in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))

    def to(self, *args, **kwargs):  # the CPU provider is where it runs; .to() keeps the torch call sites working
        return self


def attach(lm, path: Path, threads: int | None = None):
    """A copy of the torch LoadedModel `lm` that runs `path` with onnxruntime (the torch weights are let go)."""
    model = OnnxModel(path, lm.model.config, threads)
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))  # model.onnx and any .onnx_data
    return dataclasses.replace(lm, model=model, device="cpu", bf16=False, nbytes=size, backend=f"onnx:{path.name}")
