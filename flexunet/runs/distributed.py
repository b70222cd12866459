"""Which process this is under torchrun, and the few collectives train, evaluate and infer share.

`torchrun --nproc_per_node=N -m flexunet train|evaluate|infer CONFIG` sets RANK/WORLD_SIZE/LOCAL_RANK; without
them this is a single process and every helper here is a no-op. Training's differentiable reductions stay in
flexunet/train/distributed.py.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Rank and world size of this process; rank 0 alone writes shared files and prints."""

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


def init_distributed(device_name: str | None) -> tuple[DistContext, torch.device | None]:
    """Join the process group torchrun set up: nccl with one GPU per process, gloo on CPU. (ctx, device or None)."""
    if not launched_by_torchrun():
        return DistContext(), None
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device_name not in ("cpu",)
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world, local), torch.device(f"cuda:{local}" if use_cuda else "cpu")


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This process's share of `items`: every world_size-th from its rank (items[rank::world_size]).

    Deterministic for a sorted list, so each item belongs to exactly one process, in every run of the same world size.
    """
    return list(items[ctx.rank :: ctx.world_size])


def gather_objects(value: T, ctx: DistContext) -> list[T]:
    """Every process's `value` (picklable), in rank order, on every process; [value] for one process."""
    if not ctx.enabled:
        return [value]
    out: list[T | None] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out  # type: ignore[return-value]  # filled by all_gather_object


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
