"""Launch-time validation (issue 18): a launch this machine cannot run is refused with one line naming the fix.

- `python -m engine.launch` (the arguments of `accelerate launch`, checked first) refuses before any process
  starts: a GPU config on this machine without GPUs, DeepSpeed that is not installed, a run config with a mixed
  precision the hardware lacks; what it lets through is accelerate's own launch, unchanged (a real run).
- a plain `accelerate launch` of a GPU config on a CPU-only machine stops in the training process before anything
  is built, with the same line (accelerate itself would have trained on the CPU without a word); the fix the line
  names passes the check (below) and trains (single_gpu.yaml --cpu: tests/test_gpu_check.py).
- the checks themselves on the shipped configs as accelerate resolves them, for machines with 1, 2 or 4 GPUs:
  more processes than GPUs, GPU ids the machine lacks, FSDP over a user's own nn.Module.
"""

import importlib.util
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from engine.training.launch import from_accelerate_args, gpu_count, launch_problems, resolve_accelerate_args

RUN = {"dataset_name": "bundled:bbc_news", "max_train_samples": 32, "max_eval_samples": 16, "max_seq_length": 32,
       "per_device_train_batch_size": 16, "max_steps": 1, "eval_strategy": "steps", "eval_steps": 1,
       "seed": 7, "mixed_precision": "no"}
NO_GPU = "this machine has none; launch with accelerate_configs/cpu.yaml (1 process) or cpu_ddp.yaml (2 processes)"
needs_no_gpu = pytest.mark.skipif(gpu_count() > 0, reason="checks what a machine without GPUs refuses")


def _run(tmp_path, launcher, config_file, *flags, env=None, **cfg):
    out = tmp_path / "out"
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({**RUN, **cfg, "output_dir": str(out)}))
    cmd = [sys.executable, "-m", launcher, *flags, "--config_file", f"accelerate_configs/{config_file}",
           "-m", "engine.train", "--config", str(run_yaml)]
    clean = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    proc = subprocess.run(cmd, cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **(env or {})}, capture_output=True,
                          text=True, timeout=300)
    return proc, out


def _errors(text):
    return [line for line in text.splitlines() if line.startswith("hubtune: error:")]


@needs_no_gpu
@pytest.mark.parametrize("config_file, what", [("single_gpu.yaml", "gpu_ids 0"), ("multi_gpu.yaml", "2 processes, DDP")])
def test_checked_launch_refuses_a_gpu_config_before_any_process(tmp_path, config_file, what):
    proc, out = _run(tmp_path, "engine.launch", config_file)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines() == _errors(proc.stderr) == [
        f"hubtune: error: accelerate_configs/{config_file} runs on CUDA GPUs ({what}) and {NO_GPU}, or "
        f"{'add --cpu after `launch`' if config_file == 'single_gpu.yaml' else 'put ACCELERATE_USE_CPU=1 before the command'}"
        " to run this launch on the CPU"]


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_checked_launch_refuses_deepspeed_that_is_not_installed(tmp_path):
    proc, out = _run(tmp_path, "engine.launch", "deepspeed_zero2.yaml")
    assert proc.returncode == 2 and not out.exists()
    assert _errors(proc.stderr) == ["hubtune: error: accelerate_configs/deepspeed_zero2.yaml uses DeepSpeed, which is "
                                    "not installed here; pip install deepspeed on a machine with GPUs, or launch with "
                                    "accelerate_configs/multi_gpu.yaml or fsdp.yaml"]


@needs_no_gpu
def test_checked_launch_refuses_a_run_config_problem_before_any_process(tmp_path):
    proc, out = _run(tmp_path, "engine.launch", "cpu.yaml", mixed_precision="fp16", learning_rate=-1)
    assert proc.returncode == 2 and not out.exists()
    errors = _errors(proc.stderr)
    assert "hubtune: error: mixed_precision: fp16 needs a CUDA GPU and none is visible; use bf16 (supported on " \
           "recent CPUs) or no" in errors and any("learning_rate" in e for e in errors), proc.stderr


@needs_no_gpu
def test_plain_accelerate_launch_of_a_gpu_config_stops_before_anything_is_built(tmp_path):
    proc, out = _run(tmp_path, "accelerate.commands.launch", "multi_gpu.yaml")
    assert proc.returncode != 0 and not out.exists()
    # each of the 2 processes finds it; the first process of the machine says it, once
    assert _errors(proc.stderr + proc.stdout) == [
        f"hubtune: error: accelerate_configs/multi_gpu.yaml runs on CUDA GPUs (2 processes, DDP) and {NO_GPU}, or put "
        "ACCELERATE_USE_CPU=1 before the command to run this launch on the CPU"]
    proc, out = _run(tmp_path, "accelerate.commands.launch", "single_gpu.yaml")
    assert proc.returncode != 0 and not out.exists()
    assert _errors(proc.stderr)[0].startswith("hubtune: error: accelerate_configs/single_gpu.yaml runs on CUDA GPUs "
                                              "(gpu_ids 0) and this machine has none")


def _problems(config_file, gpus, *flags, model=None, env=None):
    args = resolve_accelerate_args(["--config_file", str(ROOT / "accelerate_configs" / config_file), *flags,
                                    "-m", "engine.train"])
    return launch_problems(from_accelerate_args(args, env or {}), gpus, model)


def test_more_processes_than_gpus_and_missing_gpu_ids_are_refused():
    where = str(ROOT / "accelerate_configs" / "multi_gpu.yaml")
    assert _problems("multi_gpu.yaml", 1) == [f"{where} starts 2 processes on this machine and it has 1 GPU (one "
                                              "process per GPU); set num_processes: 1 in the config or pass "
                                              "--num_processes 1"]
    assert _problems("multi_gpu.yaml", 2) == [] and _problems("multi_gpu.yaml", 4) == []
    # the multi-node template: 8 processes over 2 machines is 4 on each; this one has 2 GPUs, 2 machines want 4
    assert _problems("multi_node.yaml", 2)[0].endswith("starts 4 processes on this machine and it has 2 GPUs (one "
                                                       "process per GPU); set num_processes: 4 in the config or pass "
                                                       "--num_processes 4")
    assert _problems("multi_gpu.yaml", 4, "--num_processes", "8")[0].endswith("set num_processes: 4 in the config or "
                                                                              "pass --num_processes 4")
    assert _problems("single_gpu.yaml", 2, "--gpu_ids", "3")[0].endswith("asks for gpu_ids 3 and this machine has "
                                                                         "GPUs 0..1; set gpu_ids to GPUs it has (or all)")
    assert _problems("single_gpu.yaml", 1) == []


def test_cpu_launches_and_fsdp_without_gpus_pass_and_fsdp_refuses_a_user_module():
    assert _problems("cpu.yaml", 0) == _problems("cpu_ddp.yaml", 0) == _problems("cpu_ddp.yaml", 4) == []
    assert _problems("fsdp.yaml", 0) == []  # FSDP2 over gloo on the CPU (tests/test_scaleout.py)
    assert _problems("multi_gpu.yaml", 0, env={"ACCELERATE_USE_CPU": "1"}) == []  # passed on to the processes
    assert _problems("single_gpu.yaml", 0, "--cpu") == []
    # the one-process launcher overwrites the variable with its --cpu flag: not a way to run single_gpu.yaml here
    assert _problems("single_gpu.yaml", 0, env={"ACCELERATE_USE_CPU": "1"})[0].endswith(
        "or add --cpu after `launch` to run this launch on the CPU")
    assert _problems("fsdp.yaml", 2, model="examples.custom_module:Net") == [
        "model_name_or_path: 'examples.custom_module:Net' is your own nn.Module, which FSDP cannot wrap (it shards "
        "transformers models by their layer classes); launch it with accelerate_configs/cpu_ddp.yaml or "
        "multi_gpu.yaml (DDP) instead"]
    assert _problems("multi_gpu.yaml", 2, model="examples.custom_module:Net") == []  # DDP takes any nn.Module
