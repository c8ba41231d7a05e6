"""The set-up stage of a training run (engine/training/run.py): the task's model, collator and data as dataloaders, the
optimizer and schedule, all prepared by Accelerate, and the state to resume from, bundled as one `Loop`."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

from engine.data import LengthGroupedBatchSampler
from engine.rundir import RunDir
from engine.training.checkpoint import LoopState

log = logging.getLogger("hubtune")


@dataclass
class Loop:
    """Everything the stages after set-up share."""

    accelerator: object
    run: RunDir
    task: object
    prepared: object
    model: object
    optimizer: object
    scheduler: object
    train_dl: object
    eval_dls: dict
    sampler: LengthGroupedBatchSampler
    tokens: object
    state: LoopState
    total_steps: int
    num_epochs: int
    evaluator: object
    perf: dict
    loss_fn: object = None  # the head's weighted loss (class_weights), else None: the model's own loss
    start_step: int = 0
    samples_seen: int = 0
    clock: dict = field(default_factory=lambda: {"paused": 0.0, "window_paused": 0.0})

    @property
    def head(self):
        return self.prepared.splits.head


def setup(cfg, accelerator, run, task, prepared, resume_dir, mixed_precision) -> Loop:
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    from engine.training.distributed import with_sample_ids, wrap_layers_only
    from engine.training.evaluation import Evaluator

    set_seed(cfg.seed)
    training = task.training(cfg, prepared, accelerator.device.type)
    model = torch.compile(training.model) if cfg.torch_compile else training.model
    world = accelerator.num_processes
    sampler = LengthGroupedBatchSampler(training.lengths, cfg.per_device_train_batch_size, cfg.seed,
                                        group=training.group_by_length, world=world)
    if training.on_epoch:
        training.on_epoch(sampler)
    # dedicated generators keep DataLoader start-up from drawing on the global RNG (dropout), for exact resume
    train_view, collator = with_sample_ids(training.views["train"], training.collator)
    train_dl = DataLoader(train_view, batch_sampler=sampler, collate_fn=collator,
                          num_workers=cfg.dataloader_num_workers, generator=torch.Generator().manual_seed(cfg.seed))
    eval_dls = {name: DataLoader(view, batch_size=cfg.per_device_eval_batch_size, collate_fn=training.collator,
                                 num_workers=cfg.dataloader_num_workers, generator=torch.Generator().manual_seed(0))
                for name, view in training.views.items() if name != "train"}
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or n.endswith(".bias")]
    decay = [p for n, p in model.named_parameters() if not (p.ndim < 2 or n.endswith(".bias"))]
    optimizer = _adamw([{"params": decay, "weight_decay": cfg.weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}], cfg.learning_rate)
    wrap_layers_only(accelerator, model)  # FSDP only
    model, optimizer, train_dl, *prepared_dls = accelerator.prepare(model, optimizer, train_dl, *eval_dls.values())
    eval_dls = dict(zip(eval_dls, prepared_dls))

    steps_per_epoch = max(1, math.ceil(len(train_dl) / cfg.gradient_accumulation_steps))
    state = _saved_state(resume_dir)
    total_steps, num_epochs = _plan(cfg, state, sampler, steps_per_epoch, world)
    state.schedule_steps = state.schedule_steps or total_steps
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * state.schedule_steps)
    # stepped by hand once per optimizer step (not prepared), so its length is simply the run's steps
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                              num_training_steps=state.schedule_steps)
    accelerator.register_for_checkpointing(scheduler)
    if resume_dir is None and cfg.resume_from_checkpoint and accelerator.is_main_process:
        run.truncate_events_after(0)  # resumed before any checkpoint: a restart, the first try's curves are gone
    _resume(accelerator, run, resume_dir, state, world, total_steps)
    _stretch(scheduler, state.lr_stretches)
    state.world_size, state.total_steps = world, total_steps
    loop = Loop(accelerator, run, task, prepared, model, optimizer, scheduler, train_dl, eval_dls, sampler,
                training.tokens, state, total_steps, num_epochs,
                Evaluator(accelerator, model, prepared.splits, cfg), _perf(accelerator, model, mixed_precision),
                # the label column is only read when weights need the training counts
                loss_fn=None if cfg.class_weights == "none" else prepared.splits.head.loss_fn(
                    cfg, prepared.splits.train["label"], prepared.splits.label_names, accelerator.device),
                start_step=state.step)
    _announce(cfg, loop, mixed_precision)
    return loop


def _saved_state(resume_dir) -> LoopState:
    if resume_dir is None:
        return LoopState()
    return LoopState(**json.loads((resume_dir / "trainer_state.json").read_text()))


def _plan(cfg, state: LoopState, sampler, steps_per_epoch: int, world: int) -> tuple[int, int]:
    """(total steps, epochs) of this session. The interrupted epoch continues after the global samples its checkpoint
    had consumed. Under another number of processes than the checkpoint's, a step takes another number of samples:
    max_steps stays, an epoch count gives the steps that now remain, and the LR schedule's rest is stretched over
    them (`lr_stretches`), so the rate continues where it stopped and ends where the schedule ends."""
    sampler.set_epoch(state.epoch)
    if state.batch_in_epoch and not state.samples_in_epoch:  # a checkpoint from before positions were in samples
        state.samples_in_epoch = sampler.samples_done(state.batch_in_epoch)
    sampler.resume_at(state.epoch, state.samples_in_epoch, state.epoch_world or world)
    state.batch_in_epoch = 0
    accum = cfg.gradient_accumulation_steps
    left = math.ceil(math.ceil(len(sampler) / world) / accum)  # optimizer steps left in the current epoch
    if not state.world_size or state.world_size == world:
        total = state.total_steps or (cfg.max_steps if cfg.max_steps > 0 else
                                      math.ceil(cfg.num_train_epochs * steps_per_epoch))
    elif cfg.max_steps > 0:
        total = cfg.max_steps
    else:
        total = state.step + left + max(0, math.ceil((cfg.num_train_epochs - state.epoch - 1) * steps_per_epoch))
    if state.total_steps and total != state.total_steps:
        state.lr_stretches.append([state.step, state.total_steps, total])
    return total, state.epoch + 1 + math.ceil(max(0, total - state.step - left) / steps_per_epoch)


def _stretch(scheduler, stretches: list) -> None:
    """Each [from_step, old_total, new_total]: the schedule after from_step runs over new_total - from_step steps."""
    for start, old, new in stretches:
        rate = (old - start) / max(1, new - start)
        scheduler.lr_lambdas = [lambda s, f=f, a=start, r=rate: f(a + (s - a) * r) if s > a else f(s)
                                for f in scheduler.lr_lambdas]


def _resume(accelerator, run: RunDir, resume_dir, state: LoopState, world: int, total_steps: int) -> None:
    if resume_dir is None:
        return
    before = state.world_size or world
    accelerator.load_state(str(resume_dir))
    log.info("resumed from %s at step %d (epoch %d, %d samples into it)", resume_dir, state.step, state.epoch,
             state.samples_in_epoch)
    if accelerator.is_main_process:
        run.truncate_events_after(state.step)
        if before != world:
            log.info("the checkpoint was written by %d process(es), this run has %d: %d steps in all (was %d)",
                     before, world, total_steps, state.total_steps)
            run.append_event({"type": "resume", "step": state.step, "epoch": state.epoch,
                              "samples_in_epoch": state.samples_in_epoch, "world_size_before": before,
                              "world_size": world, "total_steps_before": state.total_steps,
                              "total_steps": total_steps})


def _perf(accelerator, model, mixed_precision) -> dict:
    """MFU = achieved model FLOP/s over this machine's measured matmul peak in the training dtype (x processes);
    a 0.5 s burst, best of many, so a moment of load from other programs does not lower the peak; measured once per
    machine (engine/training/perf.py)."""
    from engine.training.perf import flop_terms, machine_peak

    peak_dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(mixed_precision, "float32")
    return {"terms": flop_terms(accelerator.unwrap_model(model)), "peak_dtype": peak_dtype,
            "peak": machine_peak(str(accelerator.device), peak_dtype) * accelerator.num_processes}


def _announce(cfg, loop: Loop, mixed_precision) -> None:
    """The start of training in status.json, events.jsonl, TensorBoard and the log."""
    accelerator, splits, state, world = loop.accelerator, loop.prepared.splits, loop.state, loop.accelerator.num_processes
    if accelerator.is_main_process:
        loop.run.write_status("running", pid=os.getpid(), world_size=world, step=state.step,
                              total_steps=loop.total_steps, phase="training", started_at=time.time(), error=None,
                              mixed_precision=mixed_precision, device=str(accelerator.device),
                              num_train_samples=len(splits.train), num_eval_samples=len(splits.validation),
                              labels=splits.label_names, task=loop.task.tag, problem_type=loop.head.problem_type)
        loop.run.append_event({"type": "start", "step": state.step, "total_steps": loop.total_steps,
                               "epochs": loop.num_epochs, "world_size": world, "mixed_precision": mixed_precision,
                               "train_samples": len(splits.train), "eval_samples": len(splits.validation)})
    if cfg.report_to == "tensorboard":
        accelerator.init_trackers("tensorboard", config={k: v for k, v in cfg.to_dict().items()
                                                          if isinstance(v, (int, float, str, bool))})
    log.info("training %s on %d examples (%d labels) for %d steps, %d process(es), mixed precision %s",
             cfg.model_name_or_path, len(splits.train), len(splits.label_names), loop.total_steps, world,
             mixed_precision)


def _adamw(groups, lr):
    """AdamW with the fused kernel (CPU and CUDA): one pass over all parameters. On MiniLM's 22.7M parameters a
    CPU step takes 18 ms fused vs 140 ms for the default per-tensor loop; Trainer's default optimizer is fused too."""
    import torch

    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel (a user's nn.Module)
        return torch.optim.AdamW(groups, lr=lr)


