"""What the training process needs to know about how it was launched: FSDP on a CPU, which layers FSDP wraps,
full weights in and out of a sharded model, whether a multi-node run's output_dir is shared, and the debug log of
the samples each process consumed.

FSDP on CPU. accelerate 1.x enters FSDP mode only on an accelerator: a CPU launch of fsdp.yaml becomes plain DDP
(MULTI_CPU), while transformers, reading the launcher's FSDP environment (`ACCELERATE_USE_FSDP`,
`FSDP_CPU_RAM_EFFICIENT_LOADING`), already built rank > 0's new weights on the meta device for FSDP to fill in; DDP's
`.to(device)` then fails on rank 1 with "Cannot copy out of meta tensor; no data!". torch's FSDP2 runs on a CPU
device mesh over gloo, so such a launch is switched to FSDP before the Accelerator is built, and
cpu-RAM-efficient loading works as designed: rank 0 holds the weights, the others receive their shards from it in
`accelerator.prepare`.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from engine.errors import ConfigError

log = logging.getLogger("hubtune")
SAMPLE_LOG_ENV = "HUBTUNE_SAMPLE_LOG"  # a folder: each process appends the ids of the samples it trained on


def fsdp_launched() -> bool:
    """True when `accelerate launch` was given an FSDP config (it exports ACCELERATE_USE_FSDP to every process)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def enter_fsdp_on_cpu() -> None:
    """Before the Accelerator: a several-process FSDP launch without CUDA runs FSDP2 on the CPU (see the module doc).
    Accelerate's state promotes a MULTI_GPU process group to FSDP when the FSDP environment is set; on the CPU it
    made the group MULTI_CPU, which it never promotes."""
    import torch
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    if not fsdp_launched() or torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return
    state = PartialState(cpu=True)  # the gloo process group, on the CPU
    if state.distributed_type == DistributedType.MULTI_CPU:
        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU


def is_fsdp(accelerator) -> bool:
    return getattr(accelerator, "is_fsdp2", False) or str(accelerator.distributed_type).endswith("FSDP")


def wrap_layers_only(accelerator, model) -> None:
    """FSDP's TRANSFORMER_BASED_WRAP shards each class of the model's `_no_split_modules` as a unit. BERT-like models
    list their embeddings block there, and Accelerate shards the input embedding as a unit of its own too: its
    weight then belongs to two units and `fully_shard` fails (`TypeError: Invariant encountered`), on GPUs as here.
    Classes holding the input embedding are left to Accelerate's own unit. A config naming its classes wins."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None or plugin.transformer_cls_names_to_wrap is not None:
        return
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if getter else None
    names = []
    for name in getattr(model, "_no_split_modules", None) or []:
        blocks = [m for m in model.modules() if type(m).__name__ == name]
        if blocks and not any(embedding is not None and any(s is embedding for s in b.modules()) for b in blocks):
            names.append(name)
    plugin.transformer_cls_names_to_wrap = names


def save_full_weights(accelerator, model, path: Path) -> None:
    """The whole model's weights as one safetensors file, written by the main process. Every process calls it: a
    sharded model is gathered here."""
    from safetensors.torch import save_file, save_model

    if not is_fsdp(accelerator):
        if accelerator.is_main_process:
            save_model(accelerator.unwrap_model(model), str(path))
        return
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        seen, tensors = set(), {}
        for name, tensor in state.items():  # tied weights share storage, which safetensors refuses
            tensor = tensor.contiguous()
            tensors[name] = tensor.clone() if tensor.data_ptr() in seen else tensor
            seen.add(tensor.data_ptr())
        save_file(tensors, str(path))


def load_full_weights(accelerator, model, path: Path) -> None:
    """Load a whole-model safetensors file into the (possibly sharded) model; every process calls it."""
    from safetensors.torch import load_file, load_model

    if not is_fsdp(accelerator):
        load_model(accelerator.unwrap_model(model), str(path), device="cpu")  # copied onto the parameters' device
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = load_file(str(path)) if accelerator.is_main_process else {}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


# ------------------------------------------------------------------------------------------------------------
# several machines: is output_dir one folder for all of them?


def num_machines() -> int:
    """Machines in this launch: all processes over the processes of one machine (torchrun's LOCAL_WORLD_SIZE)."""
    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0)
    return world // local if local and world % local == 0 else 1


def check_shared_output_dir(accelerator, output_dir: str) -> None:
    """A multi-node run needs one output_dir seen by every machine: the main process writes the run directory
    (events, status, best weights, model/) and each process writes its part of a checkpoint into it, and a resume
    reads all of it back. Each machine's first process leaves a marker there; if a machine cannot see the others'
    markers, every process stops with the same line before anything else is written."""
    from accelerate.utils import broadcast_object_list, gather_object

    machines = num_machines()
    if machines < 2:
        return
    token = broadcast_object_list([uuid.uuid4().hex if accelerator.is_main_process else None])[0]
    folder, node = Path(output_dir), accelerator.process_index // (accelerator.num_processes // machines)
    mine = folder / f".hubtune-node-{node}-{token}"
    if accelerator.is_local_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        mine.touch()
    accelerator.wait_for_everyone()
    blind = gather_object([not all((folder / f".hubtune-node-{n}-{token}").exists() for n in range(machines))])
    accelerator.wait_for_everyone()
    if accelerator.is_local_main_process:
        mine.unlink(missing_ok=True)
    if any(blind):
        raise ConfigError(f"output_dir: '{output_dir}' is not one folder shared by the {machines} machines of this run "
                          "(a machine cannot see what the others write there, and checkpoints, resume and the final "
                          "model need that); put output_dir on a shared file system (e.g. NFS) mounted at the same "
                          "path on every machine")


# ------------------------------------------------------------------------------------------------------------
# debug: which samples each process trained on (HUBTUNE_SAMPLE_LOG=<folder>)


class IndexedView:
    """A dataset view whose rows carry their index, so the loop can log which samples each batch held."""

    def __init__(self, view):
        self.view = view

    def __len__(self):
        return len(self.view)

    def __getitem__(self, i):
        return {**self.view[i], "_sample_id": int(i)}

    def __getitems__(self, keys):
        return [self[i] for i in keys]


def with_sample_ids(dataset, collator):
    """(dataset, collator) that put each batch's sample ids in batch['sample_ids'], when HUBTUNE_SAMPLE_LOG is set."""
    if not os.environ.get(SAMPLE_LOG_ENV):
        return dataset, collator
    import torch

    def collate(features):
        ids = [f.pop("_sample_id") for f in features]
        batch = collator(features)
        batch["sample_ids"] = torch.tensor(ids)
        return batch

    return IndexedView(dataset), collate


def log_samples(accelerator, batch, step: int, epoch: int) -> None:
    """Append the batch's sample ids to <HUBTUNE_SAMPLE_LOG>/rank-<r>.jsonl (the step they count towards)."""
    import json

    ids = batch.pop("sample_ids", None)
    if ids is None:
        return
    folder = Path(os.environ[SAMPLE_LOG_ENV])
    folder.mkdir(parents=True, exist_ok=True)
    line = {"step": step, "epoch": epoch, "world": accelerator.num_processes, "rank": accelerator.process_index,
            "pid": os.getpid(), "ids": ids.tolist()}
    with open(folder / f"rank-{accelerator.process_index}.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
