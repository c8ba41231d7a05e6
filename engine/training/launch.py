"""How a run is launched, and whether this machine can run the launch.

The launch: which shipped Accelerate configs this machine can run, and the exact command (argv and environment) of
a run, as the web app shows it and the job runner starts it.

    python -m accelerate.commands.launch --config_file accelerate_configs/X.yaml -m engine.train --config <dir>/config.yaml

The checks: a GPU launch without a GPU, more processes than GPUs, DeepSpeed that is not installed, FSDP over a
user's own nn.Module: each refused with one line naming the fix. Two front ends describe a launch the same way
(`Launch`) and share `launch_problems`:
- before any process starts: `python -m engine.launch` (the same arguments as `accelerate launch`, resolved by
  accelerate's own argument handling; a run config with problems is refused too, one line each and exit code 2,
  otherwise accelerate's own launcher runs it, unchanged). The job runner behind the Fine-tuning tab offers only
  the shipped configs `accelerate_configs()` finds usable here, so it needs no more;
- under a plain `accelerate launch`, which hubtune does not control, in each training process before anything is
  built, from the environment the launcher gives it (engine/training/run.py).

    python -m engine.launch --config_file accelerate_configs/multi_gpu.yaml -m engine.train --config run.yaml

Without these checks accelerate runs a GPU config on a CPU-only machine silently on the CPU (single_gpu.yaml,
multi_gpu.yaml as 2 gloo processes), and two processes sharing one GPU fail in NCCL with no hint of the fix.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
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
        elif name == "fsdp.yaml" and gpus == 0:  # FSDP2 over gloo (engine/training/distributed.py), the run's precision
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


# the checks --------------------------------------------------------------------------------------------------------

_NAMES = {"MULTI_GPU": "DDP", "DEEPSPEED": "DeepSpeed", "FSDP": "FSDP", "NO": "one process"}
TRUTHY = ("1", "true", "yes")


def _cpu_fix(kind: str) -> str:
    # accelerate's one-process launcher sets the process's ACCELERATE_USE_CPU from its --cpu flag (a variable set
    # before the command is overwritten); its several-process launcher passes the variable on (cpu_ddp.yaml's way)
    how = "add --cpu after `launch`" if kind == "NO" else "put ACCELERATE_USE_CPU=1 before the command"
    return f"launch with accelerate_configs/cpu.yaml (1 process) or cpu_ddp.yaml (2 processes), or {how} to run " \
           "this launch on the CPU"


@dataclass(frozen=True)
class Launch:
    where: str              # how the user named it, for the message: a config file, or "this `accelerate launch`"
    distributed_type: str   # NO, MULTI_GPU, FSDP or DEEPSPEED
    processes: int          # on this machine
    machines: int
    use_cpu: bool
    gpu_ids: str | None     # "all", "0", "0,1" or None (not asked for)

    def gpu_ids_asked(self) -> list[str]:
        if not self.gpu_ids or self.gpu_ids == "all":
            return []
        return [g for g in self.gpu_ids.split(",") if g.strip()]

    def wants_gpus(self) -> bool:
        """A GPU launch: DDP or DeepSpeed over processes not told to use the CPU, or GPUs named by id. FSDP is not:
        without GPUs it runs FSDP2 on the CPU (engine/training/distributed.py)."""
        if self.use_cpu:
            return False
        return self.distributed_type in ("MULTI_GPU", "DEEPSPEED") or bool(self.gpu_ids_asked())


def from_accelerate_args(args, env=os.environ) -> Launch:
    """From `accelerate launch` arguments after accelerate's own `_validate_launch_command` merged the config file
    into them (the values its launcher then uses), and the environment it passes on."""
    kind = ("DEEPSPEED" if args.use_deepspeed else "FSDP" if args.use_fsdp else
            "MULTI_GPU" if args.multi_gpu else "NO")
    machines = max(int(args.num_machines or 1), 1)
    processes = max(int(args.num_processes or 1), 1)
    where = f"{args.config_file}" if args.config_file else "this `accelerate launch`"
    use_cpu = bool(args.cpu or getattr(args, "use_cpu", False)) or \
        (kind != "NO" and env.get("ACCELERATE_USE_CPU", "").lower() in TRUTHY)
    return Launch(where, kind, max(processes // machines, 1), machines, use_cpu, args.gpu_ids)


def resolve(args):
    """Parsed `accelerate launch` arguments as its launcher will use them: accelerate's own merge of the config file
    and the flags (on a copy: the launcher merges again). Raises ValueError on a combination accelerate refuses."""
    import copy

    from accelerate.commands.launch import _validate_launch_command

    return _validate_launch_command(copy.deepcopy(args))[0]


def resolve_accelerate_args(argv: list[str]):
    """`resolve` of an argument list, or None when it does not parse (a launcher this module cannot read)."""
    import contextlib
    import io

    from accelerate.commands.launch import launch_command_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = launch_command_parser().parse_args(argv)
        return resolve(args)
    except (SystemExit, Exception):
        return None


def _launcher_argv(pid: int) -> list[str] | None:
    """The arguments of the `accelerate launch` (or `python -m engine.launch`) that started this process (its
    parent: the one-process launcher and torchrun's agent both run inside it), or None. Read because accelerate
    exports the same environment for single_gpu.yaml on a CPU-only machine as for a plain `accelerate launch`: only
    its arguments tell them apart."""
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")[:-1]
    except OSError:
        return None
    for i, arg in enumerate(argv):
        if arg in ("accelerate.commands.launch", "engine.launch") and argv[i - 1:i] == ["-m"]:
            return argv[i + 1:]
        if arg.endswith("accelerate") and argv[i + 1:i + 2] == ["launch"]:
            return argv[i + 2:]
    return None


def from_environment(env=os.environ, parent: int | None = None) -> Launch | None:
    """The launch that started this process: from its launcher's arguments when they can be read, else from what
    accelerate's launcher exports to each process; None when not started by `accelerate launch` (plain python)."""
    if "ACCELERATE_MIXED_PRECISION" not in env:  # every accelerate launcher exports it
        return None
    argv = _launcher_argv(os.getppid() if parent is None else parent)
    args = resolve_accelerate_args(argv) if argv is not None else None
    if args is not None:
        return from_accelerate_args(args, env)
    use_cpu = env.get("ACCELERATE_USE_CPU", "").lower() in TRUTHY  # what accelerate's state reads in the process
    world = int(env.get("WORLD_SIZE", "1") or 1)
    local = int(env.get("LOCAL_WORLD_SIZE", "0") or 0) or world
    kind = ("DEEPSPEED" if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in TRUTHY else
            "FSDP" if env.get("ACCELERATE_USE_FSDP", "").lower() in TRUTHY else
            "MULTI_GPU" if world > 1 else "NO")
    return Launch("this `accelerate launch`", kind, local, max(world // local, 1), use_cpu, None)


def launch_problems(launch: Launch, gpus: int, model_name_or_path: str | None = None) -> list[str]:
    """Every reason this machine (with `gpus` visible CUDA GPUs) cannot run `launch`, each one line with its fix."""
    from engine.tasks.image_classification.models import is_user_module

    out, where = [], launch.where
    asked = [int(g) for g in launch.gpu_ids_asked() if g.strip().isdigit()]
    if launch.distributed_type == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        out.append(f"{where} uses DeepSpeed, which is not installed here; pip install deepspeed on a machine with "
                   "GPUs, or launch with accelerate_configs/multi_gpu.yaml or fsdp.yaml")
    elif launch.wants_gpus() and gpus == 0:
        what = (f"gpu_ids {launch.gpu_ids}" if launch.gpu_ids_asked() else
                f"{launch.processes} processes, {_NAMES.get(launch.distributed_type, launch.distributed_type)}")
        out.append(f"{where} runs on CUDA GPUs ({what}) and this machine has none; "
                   f"{_cpu_fix(launch.distributed_type)}")
    elif not launch.use_cpu and gpus and launch.distributed_type != "NO" and launch.processes > gpus:
        total = gpus * launch.machines
        out.append(f"{where} starts {launch.processes} processes on this machine and it has {gpus} GPU"
                   f"{'s' if gpus > 1 else ''} (one process per GPU); set num_processes: {total} in the config or "
                   f"pass --num_processes {total}")
    elif asked and gpus and max(asked) >= gpus:
        out.append(f"{where} asks for gpu_ids {launch.gpu_ids} and this machine has GPUs 0..{gpus - 1}; set gpu_ids "
                   "to GPUs it has (or all)")
    if launch.distributed_type == "FSDP" and model_name_or_path and is_user_module(model_name_or_path):
        out.append(f"model_name_or_path: '{model_name_or_path}' is your own nn.Module, which FSDP cannot wrap "
                   "(it shards transformers models by their layer classes); launch it with "
                   "accelerate_configs/cpu_ddp.yaml or multi_gpu.yaml (DDP) instead")
    return out


def check_launch_environment(model_name_or_path: str) -> None:
    """In a training process, before any process group or model is built: refuse what this launch cannot run."""
    launch = from_environment()
    if launch is None:
        return
    import torch

    problems = launch_problems(launch, torch.cuda.device_count() if torch.cuda.is_available() else 0,
                               model_name_or_path)
    if problems:
        raise ConfigError(problems)


def main(argv: list[str] | None = None) -> int:
    """`accelerate launch`, checked first (see the module doc); returns the exit code."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    from engine.config import parse_args
    from engine.errors import check_options, report

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = launch_command_parser()

    def refuse(message):  # accelerate's parser prints its whole usage before the one line that matters
        raise ConfigError(message)

    parser.error = refuse
    try:
        check_options(argv, parser)  # up to the script: its own flags are the run's, checked below
        args = parser.parse_args(argv)
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
