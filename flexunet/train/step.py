"""One training step and one validation pass: the optimiser, the step's device settings (clipping, autocast,
memory layout), the loaders, and the epoch of steps that `fit` and `flexunet init`'s timing both run."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, Subset

from flexunet.config.schema import Config, ModelSection
from flexunet.console import Bar, note
from flexunet.data.dataset import SegmentationDataset
from flexunet.errors import TrainingError
from flexunet.labels import LabelSpace
from flexunet.losses import LossFn, probs_and_targets
from flexunet.metrics import SEED_METRICS, Counts, confusion_counts, dice, iou, nanmean
from flexunet.runs.device import amp_dtype
from flexunet.train.distributed import (
    DistContext,
    DrawnShardSampler,
    all_reduce_sum,
    any_rank,
    gather_batch,
    gather_uneven,
    max_over_ranks,
)
from flexunet.train.param_groups import parameter_groups

Augment = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class StepSettings:
    """How one optimisation step runs on this device."""

    device: torch.device
    clipvalue: float | None
    amp: torch.dtype | None
    channels_last: bool


def make_optimizer(model: nn.Module, m: ModelSection) -> Optimizer:
    """Adam or AdamW with Keras' epsilon ([model] optimizer, learning_rate, weight_decay); the fused kernel where
    this PyTorch has it (3x faster step on CPU)."""
    params = parameter_groups(model, m)  # the encoder's own group: encoder_lr_scale, freezing (param_groups.py)
    kwargs: dict = {"lr": m.learning_rate, "eps": 1e-7}
    cls = torch.optim.AdamW if m.optimizer.lower() == "adamw" else torch.optim.Adam
    if cls is torch.optim.AdamW:
        kwargs["weight_decay"] = 0.004 if m.weight_decay is None else m.weight_decay
    elif m.weight_decay:
        kwargs["weight_decay"] = m.weight_decay
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kwargs)


def step_settings(cfg: Config, device: torch.device, quiet: bool = False) -> StepSettings:
    """[model] clipvalue and [train] amp / cpu_bf16 / channels_last resolved for `device`; a note (unless `quiet`)
    when cpu_bf16 is asked for but cannot be used."""
    t = cfg.train
    step = StepSettings(device, cfg.model.clipvalue or None, amp_dtype(device, t.cpu_bf16) if t.amp else None,
                        t.channels_last if t.channels_last is not None else device.type == "cuda")
    if t.cpu_bf16 and device.type == "cpu" and step.amp is None and not quiet:
        why = "[train] amp = False turns it off" if not t.amp else "this CPU has no native bf16 (avx512_bf16 / AMX)"
        note(f"{t.where('cpu_bf16')}: {why}; training in fp32")
    return step


def prepare_model(model: nn.Module, step: StepSettings, dist_ctx: DistContext) -> nn.Module:
    """Move `model` to the device in its memory layout; returns the module to train (DDP-wrapped under torchrun)."""
    layout = torch.channels_last if step.channels_last else torch.preserve_format
    model.to(step.device, memory_format=layout)  # type: ignore[call-overload]  # documented; the stub omits it
    device_ids = [step.device.index] if step.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids) if dist_ctx.enabled else model


def train_one_epoch(model: nn.Module, loss_fn: LossFn, loader: Iterable[tuple[Tensor, Tensor]], optim: Optimizer,
                    step: StepSettings,
                    seed_metrics: list[str], augment: Augment | None, generator: torch.Generator,
                    scaler: torch.amp.GradScaler | None, bar: Bar,
                    dist_ctx: DistContext = DistContext(),
                    on_step: Callable[[], bool] | None = None) -> dict[str, float]:
    """One pass over `loader`; returns the mean loss and the running means of the seed metrics (as Keras reports),
    averaged over all processes, and the images this process trained on. `on_step()` runs after every step (the
    time budget's learning rate, a break_training file); True ends the pass there."""
    model.train()
    totals = dict.fromkeys(["loss", *seed_metrics], 0.0)
    batches = images_seen = 0
    for images, labels in loader:
        x = to_input_batch(images, step)
        y = labels.to(step.device, non_blocking=True).long()
        if augment is not None:
            x, y = augment(x, y, generator)
        with torch.autocast(step.device.type, dtype=step.amp, enabled=step.amp is not None):
            logits = model(x)
        logits, y = gather_batch(logits.float(), dist_ctx), gather_batch(y, dist_ctx)  # the global batch, see there
        loss = loss_fn(logits, y)
        if any_rank(not torch.isfinite(loss).item(), dist_ctx, step.device):
            raise TrainingError(f"loss became {loss.item()} at batch {batches + 1}; lower [model] learning_rate or "
                                "check the masks; best.pt and last.pt stay as the last finished epoch wrote them")
        optim.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optim)
        else:
            loss.backward()
        if step.clipvalue:
            clip_gradients(model, step.clipvalue)
        if scaler is not None:
            scaler.step(optim)
            scaler.update()
        else:
            optim.step()
        batches += 1
        totals["loss"] += loss.item()
        if seed_metrics:
            with torch.no_grad():
                probs, target = probs_and_targets(logits.detach().float(), y)
                for name in seed_metrics:
                    totals[name] += SEED_METRICS[name](target, probs).item()
        bar.advance(len(images))
        bar.update(f"loss {totals['loss'] / batches:.4f}")
        images_seen += len(images)
        if on_step is not None and on_step():
            break
    means = torch.tensor([v / max(batches, 1) for v in totals.values()], dtype=torch.float64, device=step.device)
    means = all_reduce_sum(means, dist_ctx) / dist_ctx.world_size  # every process ran the same number of batches
    return dict(zip(totals, means.tolist(), strict=True)) | {"images": float(images_seen * dist_ctx.world_size)}


def clip_gradients(model: nn.Module, value: float) -> None:
    """Keras' clipvalue: clamp every gradient element to [-value, value] in place, one pass per tensor
    (clip_grad_value_ makes two passes, clamp_min_ then clamp_max_: half the memory traffic, ~2% of a CPU step)."""
    for p in model.parameters():
        if p.grad is not None:
            p.grad.clamp_(-value, value)


def to_input_batch(images: Tensor, step: StepSettings) -> Tensor:
    """uint8 (N, C, H, W) from the loader -> float in [0, 1] on the device (converted there, not in the workers)."""
    x = images.to(step.device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if step.channels_last else x


@torch.no_grad()
def validate(model: nn.Module, loss_fn: LossFn, loader: DataLoader, space: LabelSpace, step: StepSettings,
             seed_metrics: list[str], max_batches: int | None = None,
             dist_ctx: DistContext = DistContext(), bar: Bar | None = None) -> dict[str, float]:
    """Validation loss, seed metrics, and per-class Dice/IoU over the whole set (background excluded), on labels
    taken by `space` as evaluation and infer take them (binary models: the [infer] threshold).

    Under torchrun each process predicts a disjoint shard of every batch; the loss and the seed metrics are taken
    on the gathered batch (batch-global, as in one process) and the confusion counts are summed over processes.
    """
    model.eval()
    num_labels = space.num_labels
    totals = dict.fromkeys(["loss", *seed_metrics], 0.0)
    tp = fp = fn = torch.zeros(num_labels, dtype=torch.float64)
    steps = max_over_ranks(len(loader), dist_ctx, step.device)  # the last batch may leave a process without a share
    steps = steps if max_batches is None else min(steps, max_batches)
    shares = iter(loader)
    for _ in range(steps):
        share = next(shares, None)  # None: this process's shard has no batch left
        logits: Tensor | None = None
        y: Tensor | None = None
        if share is not None:
            images, labels = share
            x = to_input_batch(images, step)
            y = labels.to(step.device).long()
            with torch.autocast(step.device.type, dtype=step.amp, enabled=step.amp is not None):
                logits = model(x).float()
            counts = confusion_counts(space.labels(space.probabilities(logits)), y, num_labels).total()
            tp, fp, fn = tp + counts.tp.cpu(), fp + counts.fp.cpu(), fn + counts.fn.cpu()
            if bar is not None:
                bar.advance(len(images))
        logits, y = gather_uneven(logits, dist_ctx, step.device), gather_uneven(y, dist_ctx, step.device)
        assert logits is not None and y is not None  # steps <= the longest shard: some process had a batch
        totals["loss"] += loss_fn(logits, y).item()
        if seed_metrics:
            probs, target = probs_and_targets(logits, y)
            for name in seed_metrics:
                totals[name] += SEED_METRICS[name](target, probs).item()
    packed = torch.cat([torch.tensor([*totals.values(), steps], dtype=torch.float64), tp, fp, fn]).to(step.device)
    packed = all_reduce_sum(packed, dist_ctx).cpu()
    k = len(totals)
    batches = int(packed[k].item())
    out = {name: float(v) / max(batches, 1) for name, v in zip(totals, packed[:k], strict=True)}
    tp, fp, fn = packed[k + 1 :].reshape(3, num_labels)
    c = Counts(tp[1:], fp[1:], fn[1:])  # background excluded
    per_dice, per_iou = dice(c), iou(c)
    out["dice"], out["iou"] = float(nanmean(per_dice)), float(nanmean(per_iou))
    for i, (d, j) in enumerate(zip(per_dice.tolist(), per_iou.tolist(), strict=True), start=1):
        out[f"dice_{i}"], out[f"iou_{i}"] = d, j
    return out


def make_loader(dataset: SegmentationDataset, batch_size: int, shuffle: bool, device: torch.device,
                num_workers: int | None, generator: torch.Generator | None = None,
                num_samples: int | None = None, dist_ctx: DistContext = DistContext(), seed: int = 0) -> DataLoader:
    """Streams pairs from disk. `num_samples` draws that many training samples per epoch (steps_per_epoch).

    Under torchrun, training uses a DistributedSampler (the same permutation as one process, seeded by seed + epoch,
    so the global batches are the same) and validation a disjoint shard per process.
    """
    workers = (4 if device.type == "cuda" else 0) if num_workers is None else num_workers
    sampler: Sampler | None = None
    source: Dataset = dataset
    if dist_ctx.enabled and shuffle and num_samples is not None:
        sampler = DrawnShardSampler(len(dataset), num_samples, dist_ctx, seed)
    elif dist_ctx.enabled and shuffle:
        sampler = DistributedSampler(dataset, dist_ctx.world_size, dist_ctx.rank, shuffle=True, seed=seed)
    elif dist_ctx.enabled:
        source = Subset(dataset, range(dist_ctx.rank, len(dataset), dist_ctx.world_size))
    elif shuffle:
        sampler = RandomSampler(dataset, num_samples=num_samples, generator=generator)
    return DataLoader(source, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=False)
