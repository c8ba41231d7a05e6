"""How a run is launched: which shipped Accelerate configs this machine can run, and the exact command (argv and
environment) of a run, as the web app shows it and the job runner starts it.

    python -m accelerate.commands.launch --config_file accelerate_configs/X.yaml -m engine.train --config <dir>/config.yaml

`python -m engine.launch` takes the arguments of `accelerate launch` and checks them first: a launch this machine
cannot run (engine/launch_checks.py) or a run config with problems is refused with one line each and exit code 2
before any process starts; otherwise accelerate's own launcher runs it, unchanged.

    python -m engine.launch --config_file accelerate_configs/multi_gpu.yaml -m engine.train --config run.yaml
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE_DIR = ROOT / "accelerate_configs"


def gpu_count() -> int:
    """Visible CUDA GPUs, without importing torch when there is no NVIDIA driver at all (fast UI start-up)."""
    if shutil.which("nvidia-smi") is None and not Path("/proc/driver/nvidia").exists():
        return 0
    import torch

    return torch.cuda.device_count()


def accelerate_configs(gpus: int | None = None) -> dict[str, str]:
    """{file name: why it fits or not} for every shipped config; usable ones have a reason starting with 'ok'."""
    gpus = gpu_count() if gpus is None else gpus
    out = {}
    for path in sorted(ACCELERATE_DIR.glob("*.yaml")):
        name = path.name
        if name.startswith("cpu"):
            out[name] = "ok: CPU" + (" (2 processes, gloo DDP)" if "ddp" in name else " (1 process)")
        elif name == "multi_node.yaml":
            out[name] = "template for several machines; copy and edit it, then launch it on each machine"
        elif name == "single_gpu.yaml":
            out[name] = "ok: 1 GPU" if gpus >= 1 else f"needs 1 GPU; this machine has {gpus}"
        elif name == "fsdp.yaml" and gpus == 0:  # FSDP2 over gloo (engine/distributed.py), the run's precision
            out[name] = "ok: CPU (2 processes, FSDP2 over gloo: sharded as on GPUs, slower than DDP here)"
        elif "deepspeed" in name and importlib.util.find_spec("deepspeed") is None:
            out[name] = f"needs DeepSpeed, not installed here (pip install deepspeed, on a machine with 2+ GPUs; " \
                        f"this one has {gpus})"
        else:
            out[name] = f"ok: {gpus} GPUs" if gpus >= 2 else f"needs 2+ GPUs; this machine has {gpus}"
    return out


def usable_accelerate_configs(gpus: int | None = None) -> list[str]:
    """Config file names this machine can run, CPU ones first."""
    return [n for n, why in accelerate_configs(gpus).items() if why.startswith("ok")]


def command_for(run_dir: Path, accelerate_config: str) -> tuple[list[str], dict[str, str]]:
    """The exact argv and extra environment of a run (paths relative to the repo root when inside it)."""
    cfg_file = ACCELERATE_DIR / accelerate_config
    # `accelerate launch` as a module of this interpreter: the `accelerate` script would also import every other
    # accelerate subcommand (transformers, boto3: ~1.5 s per run) and might be another Python's on PATH
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", rel_path(cfg_file),
            "-m", "engine.train", "--config", rel_path(run_dir / "config.yaml")]
    # cpu_ddp uses the MULTI_GPU launcher with use_cpu; accelerate needs this to start 2 CPU processes (DESIGN.md)
    on_cpu = accelerate_config.startswith("cpu") or (accelerate_config == "fsdp.yaml" and gpu_count() == 0)
    env = {"ACCELERATE_USE_CPU": "1"} if on_cpu else {}
    return argv, env


def place(cfg, run_dir: Path):
    """Point `cfg` at `run_dir` as the job runner writes it into config.yaml: paths relative to the repo root where
    they lie inside it (the launch runs there), so the command and config.yaml shown before Start are the real ones."""
    cfg.output_dir = rel_path(run_dir)
    for key in ("train_file", "validation_file", "test_file"):
        if getattr(cfg, key) and Path(getattr(cfg, key)).exists():
            setattr(cfg, key, rel_path(Path(getattr(cfg, key))))
    return cfg


def display_command(argv: list[str], env: dict[str, str]) -> str:
    """The command as a user would type it in a shell at the repo root."""
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    if argv and argv[0] == sys.executable and _is_python_on_path(sys.executable):
        argv = ["python", *argv[1:]]  # `python` in the user's shell is this very interpreter
    return (prefix + " " if prefix else "") + shlex.join(argv)


def _is_python_on_path(executable: str) -> bool:
    found = shutil.which("python")
    return bool(found) and os.path.realpath(found) == os.path.realpath(executable)


def rel_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(Path(path).resolve())


def main(argv: list[str] | None = None) -> int:
    """`accelerate launch`, checked first (see the module doc); returns the exit code."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    from engine.cli import report
    from engine.config import parse_args
    from engine.errors import ConfigError
    from engine.launch_checks import from_accelerate_args, launch_problems, resolve

    args = launch_command_parser().parse_args(argv)
    try:
        resolved = resolve(args)
        problems, model = [], None
        if args.module and args.training_script == "engine.train":
            try:
                cfg = parse_args(args.training_script_args)
                cfg.validate()
                model = cfg.model_name_or_path
            except ConfigError as e:
                problems += e.problems
        problems = launch_problems(from_accelerate_args(resolved), gpu_count(), model) + problems
        if problems:
            raise ConfigError(problems)
    except ConfigError as e:
        return report(e)
    except ValueError as e:  # accelerate's own refusals of a flag combination, one line
        return report(ConfigError(str(e).splitlines()[0]))
    launch_command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
