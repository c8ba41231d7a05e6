"""What the training loop keeps on disk and reads back: loop state, checkpoints, best weights and pushes to the Hub
(its length-grouped batches are engine/data.py's, whose position a checkpoint records).

A checkpoint is written to `checkpoints/step-N.tmp` and renamed to `step-N` only once complete, so a crash in the
middle of writing one never leaves something that `resume_from_checkpoint: latest` would pick. Directories are
deleted by renaming them out of the `step-N` namespace first, so a crash in the middle of a delete cannot leave a
half-deleted checkpoint that still looks complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.config import ConfigError, TrainConfig
from engine.rundir import RunDir, atomic_write_json

log = logging.getLogger("hubtune")


def _parse_fault(value: str) -> tuple[str, int, int] | str | None:
    if not value:
        return None
    parts = value.split(":")
    if len(parts) in (2, 3) and all(p.strip().isdigit() for p in parts[1:]):
        return parts[0].strip(), int(parts[1]), int(parts[2]) if len(parts) == 3 else 0
    return value  # malformed: reported by the first crash_point() call


# read once at import: when unset, each crash_point() call is a single `is None` test
_FAULT = _parse_fault(os.environ.get("HUBTUNE_FAULT", ""))


def crash_point(point: str, step: int, rank: int = 0) -> None:
    """Test hook for crash-and-resume tests: `HUBTUNE_FAULT=<point>:<step>[:<rank>]` makes the process of that rank
    (default 0, the main process) SIGKILL itself when it reaches `point` at optimizer step `step`, so a kill lands
    at an exact place instead of a racy moment. Points: `after_step` (step done, before its log/eval/checkpoint),
    `mid_checkpoint` (every file of `step-N.tmp` written, trainer_state.json included, before the rename),
    `after_checkpoint` (renamed into place), `mid_final_save` (weights written into `model.tmp`, tokenizer not yet,
    before the rename), `after_done` (completion record written, before the process exits: stands in for gloo's
    abort at exit). Unset (always, outside tests) it costs nothing.
    """
    if _FAULT is None:
        return
    if isinstance(_FAULT, str):
        raise ConfigError(f"HUBTUNE_FAULT: '{_FAULT}' is not <point>:<step>[:<rank>]; unset it (it is a test hook)")
    if _FAULT == (point, step, rank):
        log.warning("HUBTUNE_FAULT: killing rank %d at %s, step %d", rank, point, step)
        os.kill(os.getpid(), signal.SIGKILL)


def remove_dir(path: Path) -> None:
    """Delete a directory so that a crash half-way never leaves a partial copy under its own name."""
    if not path.exists():
        return
    doomed = path.with_name(path.name + ".deleting")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint as trainer_state.json."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches each process took in this epoch since the run (re)started it
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    last_eval_step: int | None = None  # so a resumed run evaluates exactly where an uninterrupted one does
    # the epoch's position in global samples (all processes), and the world size its batch order was drawn for: a
    # run resumed with another number of processes continues that order after exactly those samples
    samples_in_epoch: int = 0
    epoch_world: int = 0
    world_size: int = 0
    total_steps: int = 0
    schedule_steps: int = 0  # the length the LR schedule was built with (total_steps of the first session)
    lr_stretches: list = field(default_factory=list)  # [from_step, old_total, new_total] per change of world size


def resume_dir_for(cfg: TrainConfig, run: RunDir) -> Path | None:
    if not cfg.resume_from_checkpoint:
        return None
    if cfg.resume_from_checkpoint == "latest":
        latest = run.latest_checkpoint()
        if latest is None:
            log.info("resume_from_checkpoint=latest: no complete checkpoint in %s yet; starting from the beginning",
                     run.checkpoints)
        return latest
    path = Path(cfg.resume_from_checkpoint)
    if not (path / "trainer_state.json").exists():
        raise ConfigError(f"resume_from_checkpoint: '{path}' is not a complete checkpoint (no trainer_state.json); "
                          "use 'latest' or another checkpoint")
    return path


def save_best(accelerator, model, run: RunDir) -> None:
    """The best weights so far, whole, in checkpoints/best.safetensors (every process calls it: FSDP gathers)."""
    from engine.training.distributed import save_full_weights

    accelerator.wait_for_everyone()
    tmp = run.checkpoints / "best.safetensors.tmp"
    if accelerator.is_main_process:
        run.checkpoints.mkdir(parents=True, exist_ok=True)
    save_full_weights(accelerator, model, tmp)
    if accelerator.is_main_process:
        os.replace(tmp, run.checkpoints / "best.safetensors")


def save_checkpoint(accelerator, run: RunDir, state: LoopState, keep: int) -> None:
    """accelerate state + trainer_state.json into step-N.tmp, then one rename: a half-written one is never used."""
    final = run.checkpoints / f"step-{state.step}"
    tmp = run.checkpoints / f"step-{state.step}.tmp"
    if accelerator.is_main_process:
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        # leftovers of a run killed while writing or deleting a checkpoint
        for stale in run.checkpoints.glob("step-*.*"):
            if stale.is_dir() and stale.suffix in (".tmp", ".deleting"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / "trainer_state.json", asdict(state))
        crash_point("mid_checkpoint", state.step)
        remove_dir(final)
        os.replace(tmp, final)
        if keep:
            for old in run.list_checkpoints()[:-keep]:
                remove_dir(old)
        run.append_event({"type": "checkpoint", "step": state.step, "path": str(final)})
        crash_point("after_checkpoint", state.step)
    accelerator.wait_for_everyone()


def push(cfg, run: RunDir, step: int, model_dir=None) -> None:
    """Push to the Hub from the main process; a failed push is logged and recorded, never fails the run."""
    from engine.hub import push as hub

    try:
        if model_dir is None:
            url = hub.push_run(run.path, cfg.hub_model_id, private=cfg.hub_private_repo)
        else:
            url = hub.push_checkpoint(run.path, model_dir, cfg.hub_model_id, step, private=cfg.hub_private_repo)
        run.append_event({"type": "push", "step": step, "repo": cfg.hub_model_id, "url": url, "ok": True,
                          "final": model_dir is None})
        if model_dir is None:  # the end-of-training push of a finished run: the status says it is on the Hub
            run.write_status("done", hub_push="pushed", hub_url=url, phase=None)
        log.info("pushed to %s", url)
    except Exception as e:  # noqa: BLE001 - the run itself is finished and fine; the push can be repeated
        line = e.problems[0] if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}".splitlines()[0]
        run.append_event({"type": "push", "step": step, "repo": cfg.hub_model_id, "ok": False, "error": line[:500],
                          "final": model_dir is None})
        if model_dir is None:
            run.write_status("done", hub_push="failed", hub_error=line[:500], phase=None)
        log.error("push to the Hub failed: %s; retry with: python -m engine.hub push %s --repo %s", line, run.path,
                  cfg.hub_model_id)


def push_checkpoint(cfg, accelerator, run: RunDir, model, tokenizer, step: int) -> None:
    import tempfile

    state_dict = accelerator.get_state_dict(model)  # every process takes part (sharded models gather here)
    if accelerator.is_main_process:
        with tempfile.TemporaryDirectory(prefix="hubtune-ckpt-") as tmp:
            accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            push(cfg, run, step, model_dir=tmp)
    accelerator.wait_for_everyone()
