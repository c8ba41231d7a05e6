"""The set-up stage of a training run (engine/train.py): the task's model, collator and data as dataloaders, the
optimizer and schedule, all prepared by Accelerate, and the state to resume from, bundled as one `Loop`."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

from engine.checkpoint import LengthGroupedBatchSampler, LoopState
from engine.events import RunDir

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

    from engine.evaluation import Evaluator

    set_seed(cfg.seed)
    training = task.training(cfg, prepared, accelerator.device.type)
    model = torch.compile(training.model) if cfg.torch_compile else training.model
    sampler = LengthGroupedBatchSampler(training.lengths, cfg.per_device_train_batch_size, cfg.seed,
                                        group=training.group_by_length, world=accelerator.num_processes)
    if training.on_epoch:
        training.on_epoch(sampler)
    # dedicated generators keep DataLoader start-up from drawing on the global RNG (dropout), for exact resume
    train_dl = DataLoader(training.views["train"], batch_sampler=sampler, collate_fn=training.collator,
                          num_workers=cfg.dataloader_num_workers, generator=torch.Generator().manual_seed(cfg.seed))
    eval_dls = {name: DataLoader(view, batch_size=cfg.per_device_eval_batch_size, collate_fn=training.collator,
                                 num_workers=cfg.dataloader_num_workers, generator=torch.Generator().manual_seed(0))
                for name, view in training.views.items() if name != "train"}
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or n.endswith(".bias")]
    decay = [p for n, p in model.named_parameters() if not (p.ndim < 2 or n.endswith(".bias"))]
    optimizer = _adamw([{"params": decay, "weight_decay": cfg.weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}], cfg.learning_rate)
    model, optimizer, train_dl, *prepared_dls = accelerator.prepare(model, optimizer, train_dl, *eval_dls.values())
    eval_dls = dict(zip(eval_dls, prepared_dls))

    steps_per_epoch = max(1, math.ceil(len(train_dl) / cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)
    # stepped by hand once per optimizer step (not prepared), so its length is simply total_steps
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_steps)
    accelerator.register_for_checkpointing(scheduler)
    state = _resume(accelerator, run, resume_dir)
    loop = Loop(accelerator, run, task, prepared, model, optimizer, scheduler, train_dl, eval_dls, sampler,
                training.tokens, state, total_steps, math.ceil(total_steps / steps_per_epoch),
                Evaluator(accelerator, model, prepared.splits, cfg), _perf(accelerator, model, mixed_precision),
                # the label column is only read when weights need the training counts
                loss_fn=None if cfg.class_weights == "none" else prepared.splits.head.loss_fn(
                    cfg, prepared.splits.train["label"], prepared.splits.label_names, accelerator.device),
                start_step=state.step)
    _announce(cfg, loop, mixed_precision)
    return loop


def _resume(accelerator, run: RunDir, resume_dir) -> LoopState:
    if resume_dir is None:
        return LoopState()
    accelerator.load_state(str(resume_dir))
    state = LoopState(**json.loads((resume_dir / "trainer_state.json").read_text()))
    log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_dir, state.step, state.epoch,
             state.batch_in_epoch)
    if accelerator.is_main_process:
        run.truncate_events_after(state.step)
    return state


def _perf(accelerator, model, mixed_precision) -> dict:
    """MFU = achieved model FLOP/s over this machine's measured matmul peak in the training dtype (x processes);
    a 0.5 s burst, best of many, so a moment of load from other programs does not lower the peak."""
    from engine.perf import flop_terms, matmul_peak

    peak_dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(mixed_precision, "float32")
    return {"terms": flop_terms(accelerator.unwrap_model(model)), "peak_dtype": peak_dtype,
            "peak": matmul_peak(str(accelerator.device), peak_dtype, seconds=0.5) * accelerator.num_processes}


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


