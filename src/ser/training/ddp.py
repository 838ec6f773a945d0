"""Data-parallel training across processes (``torchrun``): process group, shards, reductions.

Launched as ``torchrun --nproc-per-node N -m ser train --store S --model M ...``: every rank
reads its own shard of the training rows from the store, gradients are averaged by
DistributedDataParallel, and rank 0 alone validates, logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

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
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but no CUDA device is available")
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) here: "
                               "use at most one process per GPU (--nproc-per-node)")
        torch.cuda.set_device(local)  # before NCCL starts, so each rank binds its own GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        return DistContext(rank, world, local), torch.device("cuda", local)
    return DistContext(rank, world, local), torch.device("cpu")


def local_world_size() -> int:
    """Processes on this node (torchrun's LOCAL_WORLD_SIZE; 1 outside torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def shard_rows(rows: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's rows: a strided slice (keeps class and order mix), padded by wrapping so every
    rank has the same count (DDP needs the same number of steps on every rank)."""
    rows = np.asarray(rows)
    if not ctx.enabled:
        return rows
    per_rank = -(-rows.shape[0] // ctx.world_size)
    padded = np.resize(rows, per_rank * ctx.world_size)
    return np.sort(padded[ctx.rank::ctx.world_size])


def unpadded_shard(rows: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's rows without the wrap-around padding: the shards of all ranks partition
    ``rows`` exactly, so sums over them add up to sums over every row (global statistics)."""
    rows = np.asarray(rows)
    if not ctx.enabled:
        return rows
    return np.sort(rows[ctx.rank::ctx.world_size])


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over ranks (a no-op in one process)."""
    if ctx.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_sum_on(device: torch.device, ctx: DistContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """``t -> sum over ranks`` on ``device`` (NCCL reduces CUDA tensors only); the result comes
    back on ``t``'s own device and dtype."""
    def reduce(t: torch.Tensor) -> torch.Tensor:
        if not ctx.enabled:
            return t
        return all_reduce_sum(t.to(device), ctx).to(t.device)
    return reduce


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
