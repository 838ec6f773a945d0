"""Data-parallel training across processes (``torchrun``): process group, shards, reductions.

Launched as ``torchrun --nproc-per-node N -m ser.train --store S --model M ...``: every rank
reads its own shard of the training rows from the store, gradients are averaged by
DistributedDataParallel, and rank 0 alone validates, logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); pick this rank's device."""
    if not launched_by_torchrun():
        return DistContext(), torch.device("cpu")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return DistContext(rank, world, local), torch.device("cuda", local)
    return DistContext(rank, world, local), torch.device("cpu")


def shard_rows(rows: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's rows: a strided slice (keeps class and order mix), padded by wrapping so every
    rank has the same count (DDP needs the same number of steps on every rank)."""
    rows = np.asarray(rows)
    if not ctx.enabled:
        return rows
    per_rank = -(-rows.shape[0] // ctx.world_size)
    padded = np.resize(rows, per_rank * ctx.world_size)
    return np.sort(padded[ctx.rank::ctx.world_size])


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over ranks (a no-op in one process)."""
    if ctx.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_flag(value: bool, ctx: DistContext, device: torch.device) -> bool:
    """Rank 0's decision (e.g. early stop), seen by every rank."""
    if not ctx.enabled:
        return value
    t = torch.tensor([1 if value else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
