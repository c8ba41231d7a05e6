"""Tests that need a CUDA GPU (marked `gpu`): run by bench/gpu_check.sh on a lent GPU machine, skipped elsewhere
(this project's CI machines have no GPU; the CPU versions of the same paths run in the rest of the suite).

- a real tiny fine-tune on the GPU in bf16 and in fp16 (the GradScaler path): done, on cuda, loss finite;
- the Predictor on the GPU: bf16 (with its fp32 guard) gives the labels of fp32 on real validation texts.
"""

import json
import math

import pytest
import torch

from conftest import train_args
from engine.rundir import RunDir

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh)")]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_real_fine_tune_on_the_gpu(tmp_path, precision):
    from engine.training.run import main

    out = tmp_path / precision
    assert main(train_args(out, "--mixed_precision", precision, "--max_steps", "16")) == 0
    status = RunDir(out).read_status()
    assert status["state"] == "done" and status["device"].startswith("cuda") and status["mixed_precision"] == precision
    losses = [json.loads(x)["loss"] for x in (out / "events.jsonl").read_text().splitlines() if '"train"' in x]
    assert losses and all(math.isfinite(v) for v in losses)
    assert json.loads((out / "metrics.json").read_text())["accuracy"] > 0.2  # 5 topics: above chance


def test_predictor_bf16_gives_the_labels_of_fp32_on_the_gpu(tiny_run):
    from engine.serving.predictor import Predictor

    texts = [json.loads(x)["text"] for x in (tiny_run / "eval_predictions.jsonl").read_text().splitlines()]
    fp32 = [next(iter(r)) for r in Predictor(precision="fp32", device="cuda").predict(str(tiny_run), texts)]
    bf16 = [next(iter(r)) for r in Predictor(precision="bf16", device="cuda").predict(str(tiny_run), texts)]
    agree = sum(a == b for a, b in zip(fp32, bf16)) / len(texts)
    assert agree >= 0.995, agree
