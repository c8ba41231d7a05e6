"""The training loop: explicit Accelerate, resumable, measured.

    python -m engine.train --config run.yaml [--key value ...]
    accelerate launch --config_file accelerate_configs/cpu_ddp.yaml -m engine.train --config run.yaml

Every problem found before training (config, data, model) is one line on stderr and exit code 2, with nothing
written. During training the run directory (engine/events.py) is the record: events.jsonl, status.json,
checkpoints/, and finally metrics.json and model/.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from engine.config import ConfigError, TrainConfig, cli_logging, parse_args, report, resolve_mixed_precision
from engine.checkpoint import (LengthGroupedBatchSampler, LoopState, crash_point, push, push_checkpoint, remove_dir,
                               resume_dir_for, save_best, save_checkpoint)
from engine.events import RunDir, atomic_write_json, atomic_write_text

log = logging.getLogger("hubtune")
RUN_FILES = ("model", "checkpoints", "events.jsonl", "status.json", "metrics.json", "eval_predictions.jsonl", "logs")


class Cancelled(Exception):
    """Raised in the training process when it receives SIGTERM (the UI's Cancel)."""


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for bad input, 1 for a failure during training)."""
    cli_logging()
    try:
        cfg = parse_args(argv)
        cfg.validate()
    except ConfigError as e:
        return report(e)
    try:
        train(cfg)
    except ConfigError as e:
        return report(e)
    except Cancelled:
        print("hubtune: training cancelled; checkpoints are kept, resume with --resume_from_checkpoint latest",
              file=sys.stderr)
        return 130
    return 0


def _on_sigterm(signum, frame):
    raise Cancelled()


def train(cfg: TrainConfig) -> dict:
    """Run one training job described by a validated config; returns the final metrics."""
    import torch
    from accelerate import Accelerator

    mixed_precision = resolve_mixed_precision(cfg)
    _forget_previous_run_state()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with="tensorboard" if cfg.report_to == "tensorboard" else None,
        project_dir=str(Path(cfg.output_dir) / "logs"))
    if not accelerator.is_main_process:
        log.setLevel(logging.WARNING)
    run = RunDir(cfg.output_dir)

    try:
        model_path, tokenizer, splits, tokenized = _prepare(cfg, accelerator)
    except Exception as e:
        # a run the job runner prepared shows why it never started (the web app reads status.json); a bad command
        # line writes nothing (the error line on stderr says it all)
        if accelerator.is_main_process and (run.path / "job.json").is_file() and \
                run.read_status().get("state") != "done":
            run.write_status("failed", error=_error_line(e), finished_at=time.time())
        raise
    resume_dir = resume_dir_for(cfg, run)

    # --- the run directory ---------------------------------------------------------------------------------
    if accelerator.is_main_process:
        if cfg.overwrite_output_dir and not cfg.resume_from_checkpoint:
            for name in RUN_FILES:
                target = run.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        run.path.mkdir(parents=True, exist_ok=True)
        cfg.save(run.config)
    accelerator.wait_for_everyone()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _train(cfg, accelerator, run, model_path, tokenizer, splits, tokenized, resume_dir, mixed_precision)
    except Cancelled:
        # a signal after the completion record (a peer rank aborting at exit) never turns done into cancelled
        if accelerator.is_main_process and run.read_status().get("state") != "done":
            run.write_status("cancelled", error=None, finished_at=time.time())
        raise
    except Exception as e:
        if accelerator.is_main_process and run.read_status().get("state") != "done":
            run.write_status("failed", error=_error_line(e), finished_at=time.time())
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _prepare(cfg: TrainConfig, accelerator):
    """(model path, tokenizer or image processor, splits, tokenized splits): every check that can fail on bad input
    happens here, before anything is written."""
    from engine import custom_models, images
    from engine import data as data_mod
    from engine import modeling

    # models built from scratch (mlp, vit-tiny, pkg.mod:Class) have nothing to resolve
    model_path = None if custom_models.is_from_scratch(cfg.model_name_or_path) else \
        modeling.resolve_model(cfg.model_name_or_path, cfg.model_revision)
    if images.is_image_run(cfg, model_path):  # engine/images.py; `tokenizer` is then the image processor
        with accelerator.main_process_first():
            model_path, tokenizer, splits, tokenized = images.prepare_run(cfg, model_path)
    else:
        modeling.check_max_length(modeling.load_config(model_path), cfg.max_seq_length)
        tokenizer = modeling.load_tokenizer(model_path)
        # Hub datasets are cached on disk: rank 0 builds the cache first; in-memory data loads on every rank at once
        with accelerator.main_process_first() if data_mod.cached_on_disk(cfg) else contextlib.nullcontext():
            splits = data_mod.load_splits(cfg)
            images.refuse_images_for_text_model(cfg, splits)
            tokenized = data_mod.tokenize_splits(splits, tokenizer, cfg.max_seq_length)
    return model_path, tokenizer, splits, tokenized


def _error_line(e: BaseException) -> str:
    return (e.problems[0] if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}".splitlines()[0])[:500]


def _forget_previous_run_state() -> None:
    """A second run in the same single process (a notebook, the tests) may use another mixed precision; Accelerate
    keeps the first run's settings process-wide and would refuse it. A launched distributed process runs once."""
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()


def _train(cfg, accelerator, run, model_path, tokenizer, splits, tokenized, resume_dir, mixed_precision) -> dict:
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding, get_scheduler

    from engine import modeling
    from engine.data import model_view
    from engine.images import is_image_splits

    set_seed(cfg.seed)
    image = is_image_splits(splits)
    if image:  # engine/image_inputs.py: images converted to the model's channels, augmented in training only
        from engine.image_inputs import tokens_per_image, training_parts

        model, collator, views = training_parts(cfg, model_path, splits, tokenized, tokenizer)
        lengths, image_tokens = [1] * len(views["train"]), tokens_per_image(model, tokenizer)
    else:
        model = modeling.load_for_training(model_path, splits.label_names, cfg.attention_dropout)
        collator = DataCollatorWithPadding(tokenizer,
                                           pad_to_multiple_of=8 if accelerator.device.type == "cuda" else None)
        views, lengths = {name: model_view(ds) for name, ds in tokenized.items()}, tokenized["train"]["length"]
    if cfg.torch_compile:
        model = torch.compile(model)
    batch_sampler = LengthGroupedBatchSampler(lengths, cfg.per_device_train_batch_size, cfg.seed,
                                              group=cfg.group_by_length and not image,
                                              world=accelerator.num_processes)
    if image:
        views["train"].epoch_of = batch_sampler  # augmentation seeded by (seed, epoch, index): exact resume
    # dedicated generators keep DataLoader start-up from drawing on the global RNG (dropout), for exact resume
    train_dl = DataLoader(views["train"], batch_sampler=batch_sampler, collate_fn=collator,
                          num_workers=cfg.dataloader_num_workers, generator=torch.Generator().manual_seed(cfg.seed))
    eval_dls = {name: DataLoader(view, batch_size=cfg.per_device_eval_batch_size, collate_fn=collator,
                                 num_workers=cfg.dataloader_num_workers, generator=torch.Generator().manual_seed(0))
                for name, view in views.items() if name != "train"}

    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or n.endswith(".bias")]
    decay = [p for n, p in model.named_parameters() if not (p.ndim < 2 or n.endswith(".bias"))]
    optimizer = _adamw([{"params": decay, "weight_decay": cfg.weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}], cfg.learning_rate)
    model, optimizer, train_dl, *prepared = accelerator.prepare(model, optimizer, train_dl, *eval_dls.values())
    eval_dls = dict(zip(eval_dls, prepared))

    steps_per_epoch = max(1, math.ceil(len(train_dl) / cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)
    # stepped by hand once per optimizer step (not prepared), so its length is simply total_steps
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_steps)
    accelerator.register_for_checkpointing(scheduler)

    state = LoopState()
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        state = LoopState(**json.loads((resume_dir / "trainer_state.json").read_text()))
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_dir, state.step, state.epoch,
                 state.batch_in_epoch)
        if accelerator.is_main_process:
            run.truncate_events_after(state.step)
    world = accelerator.num_processes
    if accelerator.is_main_process:
        run.write_status("running", pid=os.getpid(), world_size=world, step=state.step, total_steps=total_steps,
                         phase="training",
                         started_at=time.time(), error=None, mixed_precision=mixed_precision,
                         device=str(accelerator.device), num_train_samples=len(splits.train),
                         num_eval_samples=len(splits.validation), labels=splits.label_names)
        run.append_event({"type": "start", "step": state.step, "total_steps": total_steps, "epochs": num_epochs,
                          "world_size": world, "mixed_precision": mixed_precision,
                          "train_samples": len(splits.train), "eval_samples": len(splits.validation)})
    if cfg.report_to == "tensorboard":
        accelerator.init_trackers("tensorboard", config={k: v for k, v in cfg.to_dict().items()
                                                          if isinstance(v, (int, float, str, bool))})
    log.info("training %s on %d examples (%d labels) for %d steps, %d process(es), mixed precision %s",
             cfg.model_name_or_path, len(splits.train), len(splits.label_names), total_steps, world,
             mixed_precision)

    from engine.perf import flop_terms, matmul_peak

    # MFU = achieved model FLOP/s over this machine's measured matmul peak in the training dtype (x processes);
    # a 0.5 s burst, best of many, so a moment of load from other programs does not lower the peak
    peak_dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(mixed_precision, "float32")
    perf = {"terms": flop_terms(accelerator.unwrap_model(model)),
            "peak": matmul_peak(str(accelerator.device), peak_dtype, seconds=0.5) * world, "peak_dtype": peak_dtype}
    progress = tqdm(total=total_steps, initial=state.step, disable=not accelerator.is_local_main_process,
                    desc="training", dynamic_ncols=True)
    evaluator = _Evaluator(accelerator, model, splits, cfg)
    zero = torch.zeros((), device=accelerator.device)
    window = {"loss": zero.clone(), "batches": 0, "real": zero.clone(), "padded": 0, "samples": 0}
    t_start = t_window = time.perf_counter()
    start_step = state.step
    samples_seen = 0
    clock = {"paused": 0.0, "window_paused": 0.0}  # evaluation and checkpoint time, left out of throughput

    def paused(fn):
        def wrapper(*args):
            t = time.perf_counter()
            fn(*args)
            clock["paused"] += time.perf_counter() - t
            clock["window_paused"] += time.perf_counter() - t
        return wrapper

    @paused
    def do_eval():
        set_phase(accelerator, run, "evaluating")
        metrics = evaluator.run(eval_dls["validation"], state)
        state.last_eval_step = state.step
        value = metrics[cfg.metric_for_best_model.removeprefix("eval_")] if \
            cfg.metric_for_best_model.removeprefix("eval_") != "loss" else metrics["loss"]
        better = state.best_metric is None or (value > state.best_metric if cfg.greater_is_better
                                               else value < state.best_metric)
        if better:
            state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
            save_best(accelerator, model, run)
        else:
            state.bad_evals += 1
            if cfg.early_stopping_patience and state.bad_evals >= cfg.early_stopping_patience:
                state.stopped_early = True
                log.info("early stopping: %d evaluations without improvement of %s", state.bad_evals,
                         cfg.metric_for_best_model)
        set_phase(accelerator, run, "training")
        model.train()

    for epoch in range(state.epoch, num_epochs):
        if state.step >= total_steps or state.stopped_early:
            break
        batch_sampler.set_epoch(epoch)
        skip = state.batch_in_epoch if epoch == state.epoch else 0
        loader = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        state.epoch, batch_idx = epoch, skip
        model.train()
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            batch_idx += 1
            # accumulate on the device: reading the loss every step would synchronise the host with the device
            window["loss"] += loss.detach()
            n = batch["labels"].shape[0]
            if image:  # a fixed number of tokens (patches) per image and no padding
                window["real"] += n * image_tokens
                window["padded"] += n * image_tokens
            else:
                window["real"] += batch["attention_mask"].sum()
                window["padded"] += batch["attention_mask"].numel()
            window["batches"] += 1
            window["samples"] += n
            samples_seen += n
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.step, state.batch_in_epoch = state.step + 1, batch_idx
            progress.update(1)
            crash_point("after_step", state.step, accelerator.process_index)
            if state.step % cfg.logging_steps == 0 or state.step == total_steps:
                now = time.perf_counter()
                _log_window(accelerator, run, state, window, now - t_window - clock["window_paused"],
                            now - t_start, state.step - start_step, total_steps, scheduler, batch_idx,
                            len(train_dl), perf)
                window = {"loss": zero.clone(), "batches": 0, "real": zero.clone(), "padded": 0, "samples": 0}
                t_window, clock["window_paused"] = now, 0.0
            if cfg.eval_strategy == "steps" and state.step % cfg.eval_steps == 0:
                do_eval()
            if state.step % cfg.save_steps == 0:
                set_phase(accelerator, run, "checkpointing")
                paused(save_checkpoint)(accelerator, run, state, cfg.save_total_limit)
                set_phase(accelerator, run, "training")
                if cfg.push_to_hub and cfg.hub_push_checkpoints:
                    paused(push_checkpoint)(cfg, accelerator, run, model, tokenizer, state.step)
            if state.step >= total_steps or state.stopped_early:
                break
        else:
            state.epoch, state.batch_in_epoch = epoch + 1, 0
        if cfg.eval_strategy == "epoch" and state.last_eval_step != state.step and not state.stopped_early:
            do_eval()
    progress.close()
    if state.last_eval_step is None:
        do_eval()  # a run shorter than one evaluation period still gets evaluated (and a best model)
    train_seconds = time.perf_counter() - t_start - clock["paused"]
    throughput = {"train_seconds": round(train_seconds, 2),
                  "train_samples_per_second": round(samples_seen * world / max(train_seconds, 1e-9), 3)}
    # the validation split in evaluation order (text: length-sorted), for the error-analysis table and samples
    return _finish(cfg, accelerator, run, model, tokenizer, splits, eval_dls, evaluator, state, total_steps,
                   throughput, start_step, tokenized["validation"])


def set_phase(accelerator, run: RunDir, phase: str) -> None:
    """What the run is doing now, for the UI's progress line (training, evaluating, checkpointing, saving)."""
    if accelerator.is_main_process:
        run.write_status("running", phase=phase)


def _adamw(groups, lr):
    """AdamW with the fused kernel (CPU and CUDA): one pass over all parameters. On MiniLM's 22.7M parameters a
    CPU step takes 18 ms fused vs 140 ms for the default per-tensor loop; Trainer's default optimizer is fused too."""
    import torch

    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel (a user's nn.Module)
        return torch.optim.AdamW(groups, lr=lr)


def _log_window(accelerator, run, state, window, dt, elapsed, steps_done, total_steps, scheduler, batch_idx,
                batches_per_epoch, perf):
    import torch

    stats = torch.stack([window["loss"].float(), torch.tensor(float(window["batches"]), device=window["loss"].device),
                         window["real"].float(),
                         torch.tensor(float(window["padded"]), device=window["loss"].device),
                         torch.tensor(float(window["samples"]), device=window["loss"].device)])
    stats = accelerator.reduce(stats, reduction="sum").tolist()
    loss, batches, real, padded, samples = stats
    dense, attention = perf["terms"]
    flops = real * (dense + attention * padded / max(samples, 1))  # attention at the batches' mean length
    event = {
        "type": "train", "step": state.step,
        "epoch": round(state.epoch + batch_idx / max(1, batches_per_epoch), 4),
        "loss": round(loss / max(batches, 1), 6), "learning_rate": scheduler.get_last_lr()[0],
        "samples_per_second": round(samples / max(dt, 1e-9), 3),
        "tokens_per_second": round(real / max(dt, 1e-9), 1),
        "padding_waste": round(1 - real / max(padded, 1), 4),
        # model FLOPs are counted on real tokens only: padding is work the model did for nothing
        "flops_per_second": round(flops / max(dt, 1e-9)),
        "mfu": round(flops / max(dt, 1e-9) / perf["peak"], 4),
        "eta_seconds": round((total_steps - state.step) * elapsed / max(steps_done, 1), 1),
        "total_steps": total_steps,
    }
    if accelerator.is_main_process:
        run.append_event(event)
        run.write_status("running", step=state.step, total_steps=total_steps, eta_seconds=event["eta_seconds"])
    accelerator.log({k: v for k, v in event.items() if k not in ("type", "step")}, step=state.step)


class _Evaluator:
    """Evaluation over a prepared dataloader; every sample counted once under DDP (gather_for_metrics)."""

    def __init__(self, accelerator, model, splits, cfg):
        self.accelerator, self.model, self.splits, self.cfg = accelerator, model, splits, cfg

    def predict(self, dl):
        import torch
        import torch.nn.functional as F

        self.model.eval()
        probs, labels, losses = [], [], []
        with torch.no_grad():
            for batch in dl:
                logits = self.model(**batch).logits.float()
                loss = F.cross_entropy(logits, batch["labels"], reduction="none")
                p, y, l = self.accelerator.gather_for_metrics((logits.softmax(-1), batch["labels"], loss))
                probs.append(p.cpu())
                labels.append(y.cpu())
                losses.append(l.cpu())
        return torch.cat(probs), torch.cat(labels), torch.cat(losses)

    def run(self, dl, state, log_event: bool = True) -> dict:
        from engine.metrics import classification_metrics, scalar_metrics

        probs, labels, losses = self.last = self.predict(dl)
        metrics = classification_metrics(labels.numpy(), probs.argmax(-1).numpy(), self.splits.label_names)
        metrics["loss"] = float(losses.mean()) if len(losses) else 0.0
        if log_event:
            event = {"type": "eval", "step": state.step, "epoch": state.epoch, **scalar_metrics(metrics)}
            if self.accelerator.is_main_process:
                RunDir(self.cfg.output_dir).append_event(event)
            self.accelerator.log({k: v for k, v in event.items() if k.startswith("eval_")}, step=state.step)
            log.info("step %d: eval accuracy %.4f, f1 %.4f, loss %.4f", state.step, metrics["accuracy"],
                     metrics["f1"], metrics["loss"])
        return metrics


def _finish(cfg, accelerator, run, model, tokenizer, splits, eval_dls, evaluator, state, total_steps,
            throughput, start_step, validation) -> dict:
    from safetensors.torch import load_model

    from engine.metrics import extra_metrics

    set_phase(accelerator, run, "evaluating")
    unwrapped = accelerator.unwrap_model(model)
    best = run.checkpoints / "best.safetensors"
    accelerator.wait_for_everyone()
    if best.exists():
        load_model(unwrapped, str(best), device="cpu")  # copied onto the parameters' device
    metrics = evaluator.run(eval_dls["validation"], state, log_event=False)
    probs, labels, _ = evaluator.last
    metrics.update(extra_metrics(cfg.extra_metrics, labels.numpy(), probs.argmax(-1).numpy()))
    result = {"validation": metrics, "best_step": state.best_step, "best_metric": state.best_metric,
              "metric_for_best_model": cfg.metric_for_best_model, "steps": state.step, "total_steps": total_steps,
              "stopped_early": state.stopped_early, **throughput,
              "train_steps_this_session": state.step - start_step}
    if "test" in eval_dls:
        result["test"] = evaluator.run(eval_dls["test"], state, log_event=False)
    # flat headline numbers for cards and tables
    result.update({k: metrics[k] for k in ("accuracy", "f1", "precision", "recall", "loss")})

    if accelerator.is_main_process:
        lines = []
        for text, y, p in zip(validation["text"], labels.tolist(), probs.tolist()):
            pred = max(range(len(p)), key=p.__getitem__)
            lines.append(json.dumps({"text": text[:2000], "label": splits.label_names[y],
                                     "prediction": splits.label_names[pred], "score": round(p[pred], 6)}))
        set_phase(accelerator, run, "saving")
        # model/ appears whole by one rename; metrics.json after it, so metrics never describe a missing model
        tmp = run.path / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped.save_pretrained(tmp, safe_serialization=True, state_dict=accelerator.get_state_dict(model))
        crash_point("mid_final_save", state.step)
        tokenizer.save_pretrained(tmp)
        if "image" in validation.column_names:  # pictures of examples and mistakes for the UI (text has its texts)
            from engine.images import save_samples

            save_samples(run.path / "samples", validation, labels.tolist(), probs.numpy(), splits.label_names)
        remove_dir(run.model)
        os.replace(tmp, run.model)
        atomic_write_text(run.predictions, "\n".join(lines) + "\n")
        atomic_write_json(run.metrics, result)
        run.append_event({"type": "done", "step": state.step, **{f"eval_{k}": result[k] for k in
                                                                  ("accuracy", "f1", "loss")}})
        # the completion record, written last: a run is done only if this says so
        run.write_status("done", step=state.step, total_steps=total_steps, finished_at=time.time(),
                         accuracy=metrics["accuracy"], f1=metrics["f1"], best_step=state.best_step, eta_seconds=0,
                         hub_push="pushing" if cfg.push_to_hub else None,  # push() records how the push ended
                         phase="pushing" if cfg.push_to_hub else None)
        log.info("done: validation accuracy %.4f, macro F1 %.4f; model saved to %s", metrics["accuracy"],
                 metrics["f1"], run.model)
        if cfg.push_to_hub:
            push(cfg, run, state.step)
    accelerator.wait_for_everyone()
    crash_point("after_done", state.step, accelerator.process_index)
    accelerator.end_training()
    return result


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown once everything is on disk: freeing the torch/transformers modules
    takes ~1.5 s per process, and the teardown is where gloo now and then aborts a rank whose peer has gone."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
