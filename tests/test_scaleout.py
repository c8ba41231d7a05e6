"""Scale-out proven by launches on this CPU machine (issue 18), each as the shell runs it:
`ACCELERATE_USE_CPU=1 python -m accelerate.commands.launch --config_file accelerate_configs/X.yaml -m engine.train
--config run.yaml`, on real BBC News articles.

- fsdp.yaml, as shipped (FSDP2, SHARDED_STATE_DICT, fsdp_cpu_ram_efficient_loading: true), two processes over gloo:
  a sharded checkpoint, the run killed after it, resumed from it bit for bit, the final model gathered into one
  safetensors file that transformers.pipeline loads; its metrics match a two-process DDP run's (cpu_ddp.yaml).
- multi_node.yaml as two launchers on 127.0.0.1 (machine ranks 0 and 1, one process each, gloo): the metrics of a
  one-machine two-process run of the same config, exactly; with an output_dir each machine sees alone (two folders,
  as on machines without a shared disk) every process stops at start with the same line.
- a checkpoint written by 2 processes resumes under 1 and the other way round: every training sample is seen
  exactly once per epoch (counted from the HUBTUNE_SAMPLE_LOG debug log), the step and LR schedule continue.
"""

import collections
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from _app_fixtures import free_port
from conftest import ROOT
from engine.rundir import RunDir

BASE = {"dataset_name": "bundled:bbc_news", "max_train_samples": 64, "max_eval_samples": 21, "max_seq_length": 32,
        "per_device_train_batch_size": 8, "per_device_eval_batch_size": 32, "warmup_steps": 1,
        "learning_rate": 2e-4, "logging_steps": 1, "seed": 7, "mixed_precision": "no"}
# 6 steps of 2 x 8 articles, evaluated and checkpointed every 3
SHORT = {**BASE, "max_steps": 6, "eval_strategy": "steps", "eval_steps": 3, "save_steps": 3}


def _yaml(path, out, **cfg):
    path.write_text(yaml.safe_dump({**cfg, "output_dir": str(out)}))
    return path


def _launch(config_file, run_yaml, env=None, args=(), wait=True):
    """The shell's launch of engine.train (returns the finished process, or the running one with wait=False)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config_file}",
           *args, "-m", "engine.train", "--config", str(run_yaml)]
    full_env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    proc.output = proc.communicate(timeout=300)[0]
    return proc


def _done(proc, out):
    assert proc.returncode == 0, proc.output[-3000:]
    assert RunDir(out).read_status()["state"] == "done"
    return json.loads((out / "metrics.json").read_text())["validation"]


def _weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """The two-process DDP reference of SHORT (cpu_ddp.yaml)."""
    d = tmp_path_factory.mktemp("ddp")
    return _done(_launch("cpu_ddp.yaml", _yaml(d / "run.yaml", d / "out", **SHORT)), d / "out")


def test_fsdp_as_shipped_shards_resumes_bit_for_bit_and_gathers_one_file(tmp_path, ddp):
    from transformers import pipeline

    shipped = yaml.safe_load((ROOT / "accelerate_configs/fsdp.yaml").read_text())["fsdp_config"]
    assert shipped["fsdp_cpu_ram_efficient_loading"] is True and shipped["fsdp_version"] == 2
    fsdp = ["--mixed_precision", "no"]  # the shipped bf16 is for GPUs; the run config's "no" on CPU

    whole = tmp_path / "whole"
    proc = _launch("fsdp.yaml", _yaml(tmp_path / "whole.yaml", whole, **SHORT), args=fsdp)
    metrics = _done(proc, whole)
    assert "Saving FSDP model" in proc.output  # FSDP indeed (accelerate 1.x alone would have made it DDP on a CPU)
    shards = whole / "checkpoints" / "step-3" / "pytorch_model_fsdp_0"
    assert shards.is_dir() and list(shards.glob("*.distcp")), "the checkpoint is not sharded"
    # same data, same steps: FSDP's metrics are DDP's up to the order of floating-point sums
    assert metrics["accuracy"] == ddp["accuracy"] and metrics["loss"] == pytest.approx(ddp["loss"], abs=1e-2)

    killed = tmp_path / "killed"
    run_yaml = _yaml(tmp_path / "killed.yaml", killed, **SHORT)
    first = _launch("fsdp.yaml", run_yaml, env={"HUBTUNE_FAULT": "after_step:5"}, args=fsdp)
    assert first.returncode != 0 and RunDir(killed).read_status()["state"] != "done"
    assert sorted(p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith("step-")) == ["step-3"]
    resumed = _done(_launch("fsdp.yaml", _yaml(run_yaml, killed, **SHORT, resume_from_checkpoint="latest"),
                            args=fsdp), killed)
    assert resumed == metrics
    a, b = _weights(whole), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [e["step"] for e in RunDir(killed).read_events() if e["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]

    # one safetensors file, whole (not shards), that the Hub's own pipeline reads
    assert sorted(p.name for p in (killed / "model").glob("*.safetensors")) == ["model.safetensors"]
    answer = pipeline("text-classification", model=str(killed / "model"))("Shares rose after the bank's results")
    assert answer[0]["label"] in json.loads((killed / "model" / "config.json").read_text())["id2label"].values()


def _two_machines(tmp_path, yamls):
    """multi_node.yaml as two launchers on this host: machine ranks 0 and 1, one process each, gloo on 127.0.0.1."""
    port = free_port()
    procs = [_launch("multi_node.yaml", y, wait=False,
                     args=["--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2",
                           "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                           "--mixed_precision", "no"])
             for rank, y in enumerate(yamls)]
    for p in procs:
        p.output = p.communicate(timeout=300)[0]
    return procs


def test_multi_node_two_launchers_match_one_machine(tmp_path, ddp):
    out = tmp_path / "two_nodes"
    run_yaml = _yaml(tmp_path / "run.yaml", out, **SHORT)
    node0, node1 = _two_machines(tmp_path, [run_yaml, run_yaml])
    assert node1.returncode == 0, node1.output[-2000:]
    assert _done(node0, out) == ddp  # the same two processes' work, exactly
    assert RunDir(out).read_status()["world_size"] == 2


def test_multi_node_without_a_shared_output_dir_stops_at_start(tmp_path):
    a, b = tmp_path / "machine0", tmp_path / "machine1"
    procs = _two_machines(tmp_path, [_yaml(tmp_path / "a.yaml", a, **SHORT), _yaml(tmp_path / "b.yaml", b, **SHORT)])
    for proc, out in zip(procs, (a, b)):
        assert proc.returncode != 0
        errors = [line for line in proc.output.splitlines() if line.startswith("hubtune: error:")]
        assert errors == [f"hubtune: error: output_dir: '{out}' is not one folder shared by the 2 machines of this "
                          "run (a machine cannot see what the others write there, and checkpoints, resume and the "
                          "final model need that); put output_dir on a shared file system (e.g. NFS) mounted at the "
                          "same path on every machine"], proc.output[-2000:]
        assert not any(out.iterdir()), "something was written before the refusal"


@pytest.mark.parametrize("before, after", [("cpu_ddp.yaml", "cpu.yaml"), ("cpu.yaml", "cpu_ddp.yaml")],
                         ids=["2_to_1", "1_to_2"])
def test_resume_across_a_change_of_world_size_sees_each_sample_once(tmp_path, before, after):
    # 2 epochs of 64 articles, a checkpoint every 2 steps; killed at step 3, in the middle of epoch 0
    cfg = {**BASE, "num_train_epochs": 2, "eval_strategy": "epoch", "save_steps": 2}
    out = tmp_path / "run"
    run_yaml = _yaml(tmp_path / "run.yaml", out, **cfg)
    first = _launch(before, run_yaml, env={"HUBTUNE_FAULT": "after_step:3", "HUBTUNE_SAMPLE_LOG": str(tmp_path / "a")})
    assert first.returncode != 0
    world_before = 2 if before == "cpu_ddp.yaml" else 1
    resumed = _launch(after, _yaml(run_yaml, out, **cfg, resume_from_checkpoint="latest"),
                      env={"HUBTUNE_SAMPLE_LOG": str(tmp_path / "b")})
    metrics = _done(resumed, out)
    assert metrics["num_samples"] == 21

    # samples trained on: the first session's up to its checkpoint (step 2), then all of the resumed session's
    def logged(folder):
        return [json.loads(line) for f in sorted(folder.glob("rank-*.jsonl")) for line in f.read_text().splitlines()]

    per_epoch = collections.defaultdict(list)
    for e in [e for e in logged(tmp_path / "a") if e["step"] <= 2] + logged(tmp_path / "b"):
        per_epoch[e["epoch"]] += e["ids"]
    assert sorted(per_epoch) == [0, 1]
    for epoch, ids in per_epoch.items():
        assert sorted(ids) == list(range(64)), (epoch, collections.Counter(ids).most_common(3), len(ids))

    events = RunDir(out).read_events()
    [resume] = [e for e in events if e["type"] == "resume"]
    world_after = 3 - world_before
    assert resume["world_size_before"] == world_before and resume["world_size"] == world_after
    assert resume["samples_in_epoch"] == 2 * 8 * world_before  # two steps of the first session
    # the rest of epoch 0 and all of epoch 1 at the new world size: 2 + (64 - 16w) / 8w' + 64 / 8w'
    left = (64 - resume["samples_in_epoch"]) // (8 * world_after) + 64 // (8 * world_after)
    assert resume["total_steps"] == 2 + left
    train = [e for e in events if e["type"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 3 + left))
    rates = [e["learning_rate"] for e in train]
    assert all(x > y for x, y in zip(rates[1:], rates[2:])) and rates[-1] == 0.0  # one decay, carried on to its end
    assert train[-1]["epoch"] == 2.0


def test_deepspeed_zero2_without_deepspeed_is_refused_before_training(tmp_path):
    import importlib.util

    from engine.training.launch import accelerate_configs

    why = accelerate_configs(gpus=0)["deepspeed_zero2.yaml"]
    if importlib.util.find_spec("deepspeed") is not None:  # installed: then only the GPUs are missing here
        assert why == "needs 2+ GPUs; this machine has 0"
        return
    assert why.startswith("needs DeepSpeed, not installed here (pip install deepspeed")
    out = tmp_path / "out"
    proc = _launch("deepspeed_zero2.yaml", _yaml(tmp_path / "run.yaml", out, **SHORT))
    # accelerate's launcher refuses it before any training process starts: the last line names what is missing
    assert proc.returncode != 0 and not out.exists()
    assert proc.output.strip().splitlines()[-1] == ("ImportError: DeepSpeed is not installed => run `pip3 install "
                                                    "deepspeed` or build it from source.")


def test_fsdp_with_a_user_module_is_refused_before_anything_is_built(tmp_path):
    out = tmp_path / "out"
    cfg = {**SHORT, "dataset_name": "bundled:mnist", "model_name_or_path": "examples.custom_module:Net",
           "max_train_samples": 64}
    proc = _launch("fsdp.yaml", _yaml(tmp_path / "run.yaml", out, **cfg), args=["--mixed_precision", "no"])
    assert proc.returncode != 0 and not out.exists()
    errors = {line for line in proc.output.splitlines() if line.startswith("hubtune: error:")}
    assert errors == {"hubtune: error: model_name_or_path: 'examples.custom_module:Net' is your own nn.Module, which "
                      "FSDP cannot wrap (it shards transformers models by their layer classes); launch it with "
                      "accelerate_configs/cpu_ddp.yaml or multi_gpu.yaml (DDP) instead"}, proc.output[-2000:]


def test_the_job_runner_starts_fsdp_on_a_machine_without_gpus(tmp_path):
    """What Start in the Fine-tuning tab does with fsdp.yaml where there is no GPU: the shown command, two
    processes, FSDP's sharded checkpoint, done."""
    from conftest import wait_final
    from engine.runs.jobs import JobManager
    from engine.training.launch import accelerate_configs, gpu_count

    if gpu_count():  # on a GPU machine fsdp.yaml is the GPUs' config (bench/gpu_check.sh's business)
        assert accelerate_configs()["fsdp.yaml"].startswith(("ok: ", "needs 2+ GPUs"))
        return
    assert accelerate_configs()["fsdp.yaml"].startswith("ok: CPU (2 processes, FSDP2 over gloo")
    mgr = JobManager(tmp_path / "runs")
    try:
        info = mgr.submit({**SHORT, "mixed_precision": "auto"}, "fsdp.yaml", name="sharded")
        assert info["command"].startswith("ACCELERATE_USE_CPU=1 ") and "accelerate_configs/fsdp.yaml" in info["command"]
        info = wait_final(mgr, "sharded", timeout=240)
        assert info["state"] == "done", (mgr.run_dir("sharded") / "train.log").read_text()[-3000:]
        run = mgr.run_dir("sharded")
        assert RunDir(run).read_status()["world_size"] == 2
        assert list((run / "checkpoints" / "step-3" / "pytorch_model_fsdp_0").glob("*.distcp"))
        assert "Saving FSDP model" in (run / "train.log").read_text()
    finally:
        mgr.stop_scheduler()
