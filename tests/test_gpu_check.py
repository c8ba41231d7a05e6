"""The one-call GPU check (bench/gpu_check.sh, issue 18) works before a GPU is ever lent: on this machine without
one it says so and exits 0, and every step of bench/gpu_check.py runs on the CPU at toy sizes (--smoke) through the
same launches (python -m engine.launch with single_gpu.yaml --cpu, multi_gpu.yaml over gloo), the same Trainer
side and the same Predictor-vs-pipeline measurement, each step reporting its figures."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from engine.training.launch import gpu_count


@pytest.mark.skipif(gpu_count() > 0, reason="on a GPU machine the script runs the whole check instead")
def test_the_shell_script_says_no_gpu_and_exits_0():
    proc = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == "gpu_check: no GPU on this machine (nvidia-smi finds none): nothing to check"


def test_every_step_runs_on_the_cpu_in_smoke_mode(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--smoke", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "gpu_check: every step ran"
    r = json.loads(out.read_text())
    assert r["machine"]["peak_tflops"]["float32"] > 0
    assert r["tests marked gpu"]["returncode"] == 0 and "skipped" in r["tests marked gpu"]["summary"]
    for name in ("train single_gpu.yaml bf16", "train multi_gpu.yaml"):
        run = r[name]
        assert run["samples_per_second"] > 0 and 0 <= run["accuracy"] <= 1 and run["mfu"] > 0, name
        assert run["wall_seconds"] > run["train_seconds"] > 0, name  # the whole process beside the training part
    assert r["train multi_gpu.yaml"]["processes"] == 2 and r["train single_gpu.yaml bf16"]["processes"] == 1
    assert r["Trainer, its defaults"]["samples_per_second"] > 0
    assert r["train_vs_trainer (hubtune single_gpu bf16 / Trainer's defaults)"] > 0
    pred = r["predict vs pipeline"]
    assert pred["texts"] == 48 and pred["fp32_vs_pipeline_agreement"] == 1.0  # fp32 is the exact reference
    assert pred["predictor_fp32_vs_pipeline"] > 0 and pred["pipeline_texts_per_second"] > 0
