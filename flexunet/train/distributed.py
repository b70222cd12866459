"""Multi-process training with torchrun + DistributedDataParallel: training's reductions.

Which process this is (DistContext, init_distributed, barrier) lives in flexunet/runs/distributed.py, shared with
evaluate and infer; it is re-exported here. Without torchrun every helper is a no-op.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from flexunet.errors import ConfigError
from flexunet.runs.distributed import DistContext, barrier, init_distributed, launched_by_torchrun, shutdown

__all__ = ["DistContext", "all_reduce_sum", "any_rank", "barrier", "gather_batch", "gather_uneven", "init_distributed",
           "launched_by_torchrun", "max_over_ranks", "per_rank_batch", "shutdown", "DrawnShardSampler"]


N = TypeVar("N", int, float)

def per_rank_batch(batch_size: int, ctx: DistContext) -> int:
    """[train] batch_size is the global batch; each of the world_size processes takes an equal share."""
    if batch_size % ctx.world_size:
        raise ConfigError(
            f"[train] batch_size = {batch_size}: must be divisible by the {ctx.world_size} torchrun processes"
        )
    return batch_size // ctx.world_size


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over all processes (identity for one process)."""
    if ctx.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class _GatherBatch(torch.autograd.Function):
    """Every process's share of the batch, concatenated in rank order; the gradient goes back to each share."""

    # ctx is Any: autograd contexts carry attributes set in forward (rows), which FunctionCtx does not declare
    @staticmethod
    def forward(ctx: Any, share: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(share) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, share.contiguous())
        ctx.rows = slice(dist.get_rank() * share.shape[0], (dist.get_rank() + 1) * share.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every process's loss depends on every share: sum their gradients, keep this one's rows
        return grad[ctx.rows]


def gather_batch(share: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The whole global batch from equal shares (identity for one process), differentiable.

    A loss over a whole batch (the seed's Dice/IoU sum over it) is not the mean of the losses of its halves: every
    process computes it on the gathered batch, so N processes train on the objective, and report the loss, of one.
    """
    return _GatherBatch.apply(share) if ctx.enabled else share


@torch.no_grad()
def gather_uneven(share: torch.Tensor | None, ctx: DistContext, device: torch.device) -> torch.Tensor | None:
    """Like gather_batch for shares of any size, or None where a process has no share left (not differentiable).

    The last validation batch splits unevenly over the processes. None on every process gives None.
    """
    if not ctx.enabled:
        return share
    shapes: list[tuple | None] = [None] * ctx.world_size
    dist.all_gather_object(shapes, None if share is None else (tuple(share.shape), share.dtype))
    known = [s for s in shapes if s is not None]
    if not known:
        return None
    (_, *tail), dtype = known[0]
    padded = torch.zeros((max(s[0][0] for s in known), *tail), dtype=dtype, device=device)
    if share is not None:
        padded[: share.shape[0]] = share
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: s[0][0]] for part, s in zip(parts, shapes, strict=True) if s is not None])


def max_over_ranks(value: N, ctx: DistContext, device: torch.device) -> N:
    """The largest `value` of all processes (how many validation batches the longest shard has, how much of the
    time budget is spent), of the type given."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64 if isinstance(value, float) else torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return type(value)(tensor.item())


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every process when it is true on any (stop decisions must agree, or the others hang)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


class DrawnShardSampler(Sampler[int]):
    """[train] steps_per_epoch under torchrun: the `num_samples` indices one process would draw this epoch (a
    RandomSampler's back-to-back permutations of the dataset from a generator seeded with seed + epoch), of which
    this process takes every world_size-th from its rank. Gathered, each global batch holds the same images as the
    one-process batch, as DistributedSampler gives for whole epochs."""

    def __init__(self, size: int, num_samples: int, ctx: DistContext, seed: int) -> None:
        self.size, self.num_samples, self.ctx, self.seed, self.epoch = size, num_samples, ctx, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn: list[int] = []
        while len(drawn) < self.num_samples:
            drawn += torch.randperm(self.size, generator=generator).tolist()
        return iter(drawn[: self.num_samples][self.ctx.rank:: self.ctx.world_size])

    def __len__(self) -> int:
        return len(range(self.ctx.rank, self.num_samples, self.ctx.world_size))

