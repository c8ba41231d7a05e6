"""The training loop: explicit Accelerate, resumable, measured.

    python -m engine.train --config run.yaml [--key value ...]
    accelerate launch --config_file accelerate_configs/cpu_ddp.yaml -m engine.train --config run.yaml

A run goes through named stages: prepare (every check that can fail on bad input: one line on stderr and exit
code 2, nothing written), set-up (the task's model, collator and data as dataloaders, optimizer, schedule, resume),
fit (the steps, with evaluations and checkpoints), finish (the best weights evaluated, model/, metrics.json and the
completion record). What differs between tasks comes from the run's task and head (engine/tasks/). The run
directory (engine/rundir.py) is the record: events.jsonl, status.json, checkpoints/, then metrics.json and model/.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from engine.config import ConfigError, TrainConfig, cli_logging, parse_args, report, resolve_mixed_precision
from engine.rundir import RunDir, atomic_write_json, atomic_write_text
from engine.training.checkpoint import (crash_point, push, push_checkpoint, remove_dir, resume_dir_for, save_best,
                                        save_checkpoint)
from engine.training.loop import Loop, setup

log = logging.getLogger("hubtune")
RUN_FILES = ("model", "checkpoints", "events.jsonl", "status.json", "metrics.json", "eval_predictions.jsonl", "logs",
             "samples", "precision.json")


class Cancelled(Exception):
    """Raised in the training process when it receives SIGTERM (the UI's Cancel)."""


def main(argv: list[str] | None = None, paused_gc: bool = False) -> int:
    """Command-line entry point; returns the exit code (2 for bad input, 1 for a failure during training).

    `paused_gc`: the caller (the command's entry, engine/train.py) turned Python's cyclic garbage collector off for
    the start-up; it is turned back on once the run is set up, before the first step.
    """
    cli_logging()
    try:
        cfg = parse_args(argv)
        cfg.validate()
    except ConfigError as e:
        return report(e)
    try:
        train(cfg, resume_gc=paused_gc)
    except ConfigError as e:
        # every process of a launch finds the same problem; the machine's first process says it. The others wait
        # first: torchrun stops the rest of a launch when one process exits, which would silence the first one if
        # another exited before it had printed (seen in fresh-check); still running after the wait, they say it too
        if os.environ.get("LOCAL_RANK", "0") != "0":
            time.sleep(5)
        return report(e)
    except Cancelled:
        latest = RunDir(cfg.output_dir).latest_checkpoint()
        print(f"hubtune: training cancelled; --resume_from_checkpoint latest continues from {latest.name}"
              if latest else "hubtune: training cancelled before its first checkpoint; --resume_from_checkpoint "
              "latest starts it again from the beginning", file=sys.stderr)
        return 130
    return 0


def _on_sigterm(signum, frame):
    raise Cancelled()


def train(cfg: TrainConfig, resume_gc: bool = False) -> dict:
    """Run one training job described by a validated config; returns the final metrics. `resume_gc`: turn the
    garbage collector back on after the set-up (see `main`)."""
    from engine.training.distributed import check_shared_output_dir
    from engine.training.launch import check_launch_environment

    check_launch_environment(cfg.model_name_or_path)  # before any process group or model is built
    accelerator, mixed_precision = _accelerator(cfg)
    check_shared_output_dir(accelerator, cfg.output_dir)  # several machines: one folder for all, or stop here
    run = RunDir(cfg.output_dir)
    try:
        task, prepared = _prepare(cfg, accelerator)
    except Exception as e:
        # a run the job runner prepared shows why it never started (the web app reads status.json); a bad command
        # line writes nothing (the error line on stderr says it all)
        if accelerator.is_main_process and (run.path / "job.json").is_file() and \
                run.read_status().get("state") != "done":
            run.write_status("failed", error=_error_line(e), finished_at=time.time())
        raise
    resume_dir = resume_dir_for(cfg, run)
    _open_run_dir(cfg, accelerator, run)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        loop = setup(cfg, accelerator, run, task, prepared, resume_dir, mixed_precision)
        if resume_gc:  # start-up's objects (modules, model, data) are made; from here on the collector runs as usual
            gc.enable()
        _fit(cfg, loop)
        return _finish(cfg, loop)
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


def _error_line(e: BaseException) -> str:
    return (e.problems[0] if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}".splitlines()[0])[:500]


# ------------------------------------------------------------------------------------------------------------
# prepare: everything that can fail on bad input, before anything is written


def _accelerator(cfg: TrainConfig):
    import torch
    from accelerate import Accelerator

    from engine.training.distributed import enter_fsdp_on_cpu

    mixed_precision = resolve_mixed_precision(cfg)
    _forget_previous_run_state()
    enter_fsdp_on_cpu()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with="tensorboard" if cfg.report_to == "tensorboard" else None,
        project_dir=str(Path(cfg.output_dir) / "logs"))
    if not accelerator.is_main_process:
        log.setLevel(logging.WARNING)
    return accelerator, mixed_precision


def _prepare(cfg: TrainConfig, accelerator):
    """(the run's task, its prepared model source and data): the model resolved and checked, the data loaded,
    standardized, label-encoded and made ready by the task (engine/tasks/)."""
    from engine import modeling, tasks
    from engine.tasks.image_classification.models import is_from_scratch

    # models built from scratch (mlp, vit-tiny, pkg.mod:Class) have nothing to resolve
    model_path = None if is_from_scratch(cfg.model_name_or_path) else \
        modeling.resolve_model(cfg.model_name_or_path, cfg.model_revision)
    task = tasks.for_run(cfg, model_path)
    return task, task.prepare(cfg, model_path, accelerator.main_process_first, for_training=True)


def _open_run_dir(cfg: TrainConfig, accelerator, run: RunDir) -> None:
    if accelerator.is_main_process:
        if cfg.overwrite_output_dir and not cfg.resume_from_checkpoint:
            for name in RUN_FILES:
                target = run.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        run.path.mkdir(parents=True, exist_ok=True)
        cfg.save(run.config)
    accelerator.wait_for_everyone()


def _forget_previous_run_state() -> None:
    """A second run in the same single process (a notebook, the tests) may use another mixed precision; Accelerate
    keeps the first run's settings process-wide and would refuse it. A launched distributed process runs once."""
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()


# ------------------------------------------------------------------------------------------------------------
# fit: the optimizer steps, with evaluations and checkpoints


def set_phase(accelerator, run: RunDir, phase: str) -> None:
    """What the run is doing now, for the UI's progress line (training, evaluating, checkpointing, saving)."""
    if accelerator.is_main_process:
        run.write_status("running", phase=phase)


def _paused(loop: Loop, fn, *args):
    """Run `fn` with its time left out of throughput (evaluations and checkpoints are not training)."""
    t = time.perf_counter()
    fn(*args)
    loop.clock["paused"] += time.perf_counter() - t
    loop.clock["window_paused"] += time.perf_counter() - t


def _evaluate(cfg, loop: Loop) -> None:
    """One evaluation: the event, a better metric saves the best weights, too many worse ones stop early."""
    from engine.training.evaluation import metric_value

    accelerator, state = loop.accelerator, loop.state
    set_phase(accelerator, loop.run, "evaluating")
    value = metric_value(cfg, loop.evaluator.run(loop.eval_dls["validation"], state), loop.head)
    state.last_eval_step = state.step
    better = state.best_metric is None or (value > state.best_metric if loop.head.greater_is_better(
        loop.head.metric(cfg)) else value < state.best_metric)
    if better:
        state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
        save_best(accelerator, loop.model, loop.run)
    else:
        state.bad_evals += 1
        if cfg.early_stopping_patience and state.bad_evals >= cfg.early_stopping_patience:
            state.stopped_early = True
            log.info("early stopping: %d evaluations without improvement of %s", state.bad_evals,
                     loop.head.metric(cfg))
    set_phase(accelerator, loop.run, "training")
    loop.model.train()


def _fit(cfg, loop: Loop) -> None:
    from tqdm.auto import tqdm

    from engine.training.distributed import log_samples
    from engine.training.evaluation import Window

    accelerator, state, model = loop.accelerator, loop.state, loop.model
    progress = tqdm(total=loop.total_steps, initial=state.step, disable=not accelerator.is_local_main_process,
                    desc="training", dynamic_ncols=True)
    window, t_start = Window(accelerator.device), time.perf_counter()
    loop.clock["t_start"] = loop.clock["t_window"] = t_start
    for epoch in range(state.epoch, loop.num_epochs):
        if state.step >= loop.total_steps or state.stopped_early:
            break
        # a resumed epoch continues after the global samples its checkpoint had consumed (loop.setup's resume_at)
        loop.sampler.set_epoch(epoch)
        state.epoch, batch_idx = epoch, 0
        model.train()
        for batch in loop.train_dl:
            log_samples(accelerator, batch, state.step + 1, epoch)  # a no-op unless HUBTUNE_SAMPLE_LOG is set
            with accelerator.accumulate(model):
                out = model(**batch)
                loss = out.loss if loop.loss_fn is None else loop.loss_fn(out.logits, batch["labels"])
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                loop.optimizer.step()
                loop.optimizer.zero_grad(set_to_none=True)
            batch_idx += 1
            n = batch["labels"].shape[0]
            window.add(loss, *loop.tokens(batch), n)
            loop.samples_seen += n
            if not accelerator.sync_gradients:
                continue
            loop.scheduler.step()
            state.step, state.batch_in_epoch = state.step + 1, batch_idx
            progress.update(1)
            if _after_step(cfg, loop, window, batch_idx):
                break
        else:
            state.epoch, state.batch_in_epoch, state.samples_in_epoch, state.epoch_world = epoch + 1, 0, 0, 0
        if cfg.eval_strategy == "epoch" and state.last_eval_step != state.step and not state.stopped_early:
            _paused(loop, _evaluate, cfg, loop)
    progress.close()
    if state.last_eval_step is None:
        _paused(loop, _evaluate, cfg, loop)  # a run shorter than one evaluation period still gets a best model


def _after_step(cfg, loop: Loop, window, batch_idx: int) -> bool:
    """Log, evaluate, checkpoint after an optimizer step as the config asks; True when training should stop."""
    from engine.training.evaluation import step_progress, train_event

    accelerator, state, clock = loop.accelerator, loop.state, loop.clock
    crash_point("after_step", state.step, accelerator.process_index)
    if state.step % cfg.logging_steps == 0 or state.step == loop.total_steps:
        now = time.perf_counter()
        train_event(accelerator, loop.run, state, window, now - clock["t_window"] - clock["window_paused"],
                    now - clock["t_start"], state.step - loop.start_step, loop.total_steps, loop.scheduler,
                    loop.sampler.samples_done(batch_idx), len(loop.sampler.lengths), loop.perf)
        window.reset()
        clock["t_window"], clock["window_paused"] = now, 0.0
    else:  # the train event writes the step into status.json; between them, this does
        step_progress(accelerator, loop.run, state, clock, state.step - loop.start_step, loop.total_steps)
    if cfg.eval_strategy == "steps" and state.step % cfg.eval_steps == 0:
        _paused(loop, _evaluate, cfg, loop)
    if state.step % cfg.save_steps == 0:
        state.samples_in_epoch = loop.sampler.samples_done(batch_idx)  # global samples: any world size resumes it
        state.epoch_world = loop.sampler.order_world()
        set_phase(accelerator, loop.run, "checkpointing")
        _paused(loop, save_checkpoint, accelerator, loop.run, state, cfg.save_total_limit)
        set_phase(accelerator, loop.run, "training")
        if cfg.push_to_hub and cfg.hub_push_checkpoints:
            _paused(loop, push_checkpoint, cfg, accelerator, loop.run, loop.model, loop.prepared.processor,
                    state.step)
    return state.step >= loop.total_steps or state.stopped_early


# ------------------------------------------------------------------------------------------------------------
# finish: the best weights evaluated and saved, the completion record


def _finish(cfg, loop: Loop) -> dict:
    accelerator, run, state = loop.accelerator, loop.run, loop.state
    result = _final_metrics(cfg, loop)
    head = loop.head  # as tuned on the validation outputs (multi-label thresholds)
    scores, labels, _ = loop.evaluator.last
    state_dict = accelerator.get_state_dict(loop.model)  # every process takes part: a sharded model gathers here
    if accelerator.is_main_process:
        names = loop.prepared.splits.label_names
        validation = loop.prepared.parts["validation"]  # in evaluation order (text: sorted by length)
        rows = head.rows(validation["text"], labels.numpy(), scores.numpy(), names)
        set_phase(accelerator, run, "saving")
        # model/ appears whole by one rename; metrics.json after it, so metrics never describe a missing model
        tmp = run.path / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        config = getattr(accelerator.unwrap_model(loop.model), "config", None)
        for key, value in head.saved_settings().items():  # thresholds, label range: saved in config.json
            setattr(config, key, value)
        accelerator.unwrap_model(loop.model).save_pretrained(tmp, safe_serialization=True,
                                                             state_dict=state_dict)
        crash_point("mid_final_save", state.step)
        loop.prepared.processor.save_pretrained(tmp)
        loop.task.after_training(run, loop.prepared, labels.numpy(), scores.numpy())
        remove_dir(run.model)
        os.replace(tmp, run.model)
        atomic_write_text(run.predictions, "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write_json(run.metrics, result)
        run.append_event({"type": "done", "step": state.step, **{f"eval_{k}": result[k] for k in head.headline},
                          "eval_loss": result["loss"]})
        # the completion record, written last: a run is done only if this says so
        run.write_status("done", step=state.step, total_steps=loop.total_steps, finished_at=time.time(),
                         **{k: result[k] for k in head.headline}, best_step=state.best_step, eta_seconds=0,
                         hub_push="pushing" if cfg.push_to_hub else None,  # push() records how the push ended
                         phase="pushing" if cfg.push_to_hub else None)
        log.info("done: validation %s; model saved to %s", head.summary(result["validation"]), run.model)
        if cfg.push_to_hub:
            push(cfg, run, state.step)
    accelerator.wait_for_everyone()
    crash_point("after_done", state.step, accelerator.process_index)
    accelerator.end_training()
    return result


def _final_metrics(cfg, loop: Loop) -> dict:
    """metrics.json: the best weights' validation (and test) metrics, extras, the run's counts and throughput."""
    from engine.metrics import extra_metrics
    from engine.training.distributed import load_full_weights

    accelerator, state, head = loop.accelerator, loop.state, loop.head
    set_phase(accelerator, loop.run, "evaluating")
    train_seconds = time.perf_counter() - loop.clock.get("t_start", time.perf_counter()) - loop.clock["paused"]
    best = loop.run.checkpoints / "best.safetensors"
    accelerator.wait_for_everyone()
    if best.exists():
        load_full_weights(accelerator, loop.model, best)
    metrics = loop.evaluator.run(loop.eval_dls["validation"], state, log_event=False)
    scores, labels, _ = loop.evaluator.last
    # what the head sets from the validation outputs (multi-label thresholds) applies to everything after
    splits = loop.prepared.splits
    splits.head = loop.evaluator.head = head = head.tuned(labels.numpy(), scores.numpy(), splits.label_names)
    metrics = {**metrics, **head.metrics(labels.numpy(), scores.numpy(), splits.label_names)}
    metrics.update(extra_metrics(cfg.extra_metrics, *head.extra_inputs(labels.numpy(), scores.numpy())))
    # best_metric: what the saved model delivers (multi-label: at its tuned thresholds); best_eval_metric: the
    # evaluation during training that picked best_step (multi-label: at 0.5 thresholds, usually lower)
    result = {"validation": metrics, "best_step": state.best_step, "best_metric": metrics[head.metric(cfg)],
              "best_eval_metric": state.best_metric, "metric_for_best_model": head.metric(cfg),
              "problem_type": head.problem_type, "steps": state.step, "total_steps": loop.total_steps,
              "stopped_early": state.stopped_early, "train_seconds": round(train_seconds, 2),
              "train_samples_per_second": round(loop.samples_seen * accelerator.num_processes
                                                / max(train_seconds, 1e-9), 3),
              "train_steps_this_session": state.step - loop.start_step}
    weights = None if cfg.class_weights == "none" else head.weights(cfg, splits.train["label"], splits.label_names)
    if weights:  # recorded for the model card
        result["class_weights"] = dict(zip(splits.label_names, weights))
    if "test" in loop.eval_dls:
        result["test"] = loop.evaluator.run(loop.eval_dls["test"], state, log_event=False)
        loop.evaluator.last = (scores, labels, None)  # the validation outputs are the ones written out
    # flat headline numbers for cards and tables
    result.update({k: metrics[k] for k in head.metrics_names if k in metrics})
    return result


def exit_now(code: int) -> None:
    """Leave without the interpreter's teardown once everything is on disk: freeing the torch/transformers modules
    takes ~1.5 s per process, and the teardown is where gloo now and then aborts a rank whose peer has gone."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
