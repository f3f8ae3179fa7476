"""One process, or several under ``torchrun``: the process group, the device, the RNG states.

With ``WORLD_SIZE > 1`` (set by ``torchrun``) every process joins a process group (gloo on the
CPU, NCCL with ``--device cuda``), G and D are wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, every process draws its own batch and
noise, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import RunError
from .config import Config

__all__ = ["Process", "setup", "teardown", "wrap", "gather", "broadcast", "rng_state",
           "set_rng_state"]


@dataclass
class Process:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this code created the process group, and destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(config: Config) -> Process:
    """Join the process group when launched by torchrun; pick the device and thread count."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was requested but no CUDA device is available")
    if config.sync_bn and config.device != "cuda":
        raise RunError("--sync-bn needs --device cuda (SyncBatchNorm runs on GPUs only)")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank, owns = 0, 0, False
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if config.device == "cuda" else "gloo")
            owns = True
        rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if config.device == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return Process(rank, world, device, owns)


def teardown(process: Process, failed: bool = False) -> None:
    """Leave the process group this code created. After a failure, without the barrier: the
    other ranks may be waiting in a collective that this one will never join."""
    if process.owns_group and dist.is_initialized():
        # Free the DDP wrappers (held in reference cycles) while the group still exists: with
        # torch 2.13 + gloo, about 1 exit in 20 otherwise aborts ("terminate called without an
        # active exception") when they are collected after it is destroyed.
        gc.collect()
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def wrap(process: Process, module: nn.Module, sync_bn: bool = False) -> nn.Module:
    """``module`` itself for one process, else its DDP wrapper (with SyncBatchNorm if asked)."""
    if process.world == 1:
        return module
    if sync_bn:  # setup() has checked that the device is a GPU
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    device_ids = [process.device] if process.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def gather(process: Process, value: Any) -> list:
    """Every process's ``value``, in rank order (a list of one for one process)."""
    if process.world == 1:
        return [value]
    values = [None] * process.world
    dist.all_gather_object(values, value)
    return values


def broadcast(process: Process, value: Any) -> Any:
    """Rank 0's ``value`` in every process."""
    if process.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def rng_state(process: Process) -> dict:
    cuda = process.device.type == "cuda"
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(process.device) if cuda else None}


def set_rng_state(process: Process, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and process.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], process.device)
