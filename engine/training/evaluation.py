"""Measuring a run while it trains: evaluation passes through the run's head, and the throughput window behind
every `train` event (loss, learning rate, samples/s, tokens/s, padding, MFU, ETA)."""

from __future__ import annotations

import logging
import time

from engine.rundir import RunDir

log = logging.getLogger("hubtune")


class Evaluator:
    """Evaluation over a prepared dataloader; every sample counted once under DDP (gather_for_metrics). What the
    outputs mean (scores, per-example losses, metrics) is the head's (engine/tasks/heads/)."""

    def __init__(self, accelerator, model, splits, cfg):
        self.accelerator, self.model, self.splits, self.cfg = accelerator, model, splits, cfg
        self.head = splits.head
        self.last = None

    def predict(self, dl):
        """(scores, labels, per-example losses) over `dl`, on the CPU."""
        import torch

        self.model.eval()
        scores, labels, losses = [], [], []
        with torch.no_grad():
            for batch in dl:
                logits = self.model(**batch).logits.float()
                loss = self.head.losses(logits, batch["labels"])
                s, y, l = self.accelerator.gather_for_metrics((self.head.scores(logits), batch["labels"], loss))
                scores.append(s.cpu())
                labels.append(y.cpu())
                losses.append(l.cpu())
        return torch.cat(scores), torch.cat(labels), torch.cat(losses)

    def run(self, dl, state, log_event: bool = True) -> dict:
        from engine.metrics import scalar_metrics

        scores, labels, losses = self.last = self.predict(dl)
        metrics = self.head.metrics(labels.numpy(), scores.numpy(), self.splits.label_names)
        metrics["loss"] = float(losses.mean()) if len(losses) else 0.0
        if log_event:
            event = {"type": "eval", "step": state.step, "epoch": state.epoch, **scalar_metrics(metrics)}
            if self.accelerator.is_main_process:
                RunDir(self.cfg.output_dir).append_event(event)
            self.accelerator.log({k: v for k, v in event.items() if k.startswith("eval_")}, step=state.step)
            log.info("step %d: eval %s", state.step, self.head.summary(metrics))
        return metrics


def metric_value(cfg, metrics: dict, head) -> float:
    """The value of metric_for_best_model ('auto': the head's default) in an evaluation's metrics."""
    return metrics[head.metric(cfg)]


class Window:
    """Loss, batches, real and padded tokens and samples since the last `train` event, kept on the device:
    reading the loss every step would synchronise the host with the device."""

    def __init__(self, device):
        import torch

        self.zero = torch.zeros((), device=device)
        self.reset()

    def reset(self) -> None:
        self.loss, self.real, self.batches, self.padded, self.samples = self.zero.clone(), self.zero.clone(), 0, 0, 0

    def add(self, loss, real, padded, samples: int) -> None:
        self.loss += loss.detach()
        self.real += real
        self.padded += padded
        self.batches += 1
        self.samples += samples

    def totals(self, accelerator) -> list[float]:
        """(loss sum, batches, real tokens, padded tokens, samples) summed over every process."""
        import torch

        device = self.loss.device
        stats = torch.stack([self.loss.float(), torch.tensor(float(self.batches), device=device), self.real.float(),
                             torch.tensor(float(self.padded), device=device),
                             torch.tensor(float(self.samples), device=device)])
        return accelerator.reduce(stats, reduction="sum").tolist()


PROGRESS_SECONDS = 0.5  # status.json's step at most this often between train events: each write replaces a file


def step_progress(accelerator, run: RunDir, state, clock: dict, steps_done: int, total_steps: int) -> None:
    """status.json's step (and ETA) after an optimizer step, so the web app's progress line follows the steps as
    they happen: train events come only every logging_steps, which in a short run can be most of it. The first
    step of a session is written at once, later ones at most every PROGRESS_SECONDS (a fast GPU step would
    otherwise pay a file write each)."""
    now = time.perf_counter()
    if not accelerator.is_main_process or (steps_done > 1 and now - clock.get("progress", 0.0) < PROGRESS_SECONDS):
        return
    clock["progress"] = now
    eta = (total_steps - state.step) * (now - clock["t_start"]) / max(steps_done, 1)
    run.write_status("running", step=state.step, total_steps=total_steps, eta_seconds=round(eta, 1))


def train_event(accelerator, run: RunDir, state, window: Window, dt, elapsed, steps_done, total_steps, scheduler,
                epoch_done, epoch_size, perf) -> dict:
    """Log one `train` event from the window (every process takes part in the reduction); the epoch's fraction is
    `epoch_done` of its `epoch_size` samples (global counts, the same under any number of processes)."""
    loss, batches, real, padded, samples = window.totals(accelerator)
    dense, attention = perf["terms"]
    flops = real * (dense + attention * padded / max(samples, 1))  # attention at the batches' mean length
    event = {
        "type": "train", "step": state.step,
        "epoch": round(state.epoch + epoch_done / max(1, epoch_size), 4),
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
    return event
