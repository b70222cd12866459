"""Training: from a Config to a run folder with checkpoints, logs and previews."""
from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

from flexunet.augment import build_augmenter
from flexunet.config.folders import check_output_folders, protected_inputs
from flexunet.config.load import config_to_ini
from flexunet.config.schema import Config
from flexunet.console import note, progress_bars, say
from flexunet.data.dataset import build_datasets, make_dataset
from flexunet.data.pairing import Pair
from flexunet.errors import CheckpointError, ConfigError, OutputError
from flexunet.files import atomic_write_bytes, atomic_write_text, guarded
from flexunet.losses import build_loss
from flexunet.models import build_model
from flexunet.postprocess import CHOICE_FILE
from flexunet.runs.device import choose_device, keep_freed_memory, seed_everything
from flexunet.runs.folds import FOLD_FILE, Folds, fold_config, folds_for_run
from flexunet.runs.rundir import RunDir, run_dir_for
from flexunet.train.distributed import barrier, init_distributed, shutdown
from flexunet.train.loop import EpochCallback, FitResult, fit
from flexunet.train.postprocess_choice import choice_summary, choose_on_validation, choose_out_of_fold

__all__ = ["EpochCallback", "FitResult", "RunDir", "fit", "train_folds", "train_from_config"]



def _where(cfg: Config, label: str) -> str:
    """"[train] model_dir" -> "my.config [train] model_dir"."""
    section, key = label.removeprefix("[").split("] ")
    return getattr(cfg, section).where(key)


def train_from_config(cfg: Config, device: str | None = None, resume: bool = False, quiet: bool = False,
                      on_epoch_end: EpochCallback | None = None) -> FitResult:
    """Build data, model and loss from `cfg` and train. The documented Python API behind `flexunet train`.

    `on_epoch_end(row)` gets each epoch's history.csv row once that epoch is saved; returning True stops training
    there, cleanly, as early stopping does (`FitResult.stopped_by == "on_epoch_end"`).

    Under torchrun (WORLD_SIZE > 1) each process trains a DistributedDataParallel replica on its share of every
    batch; rank 0 alone prepares the folders, writes files and prints.
    """
    with guarded(protected_inputs(cfg)):
        return _train(cfg, device, resume, quiet, on_epoch_end)


def train_folds(cfg: Config, device: str | None = None, resume: bool = False, quiet: bool = False,
                folds: int | None = None, fold: int | None = None) -> list[FitResult]:
    """K-fold cross-validation (train/folds.py): `folds` (default [train] folds) runs by source group over [train]
    + [valid], each in model_dir/fold_<k>/; `fold` trains that one only (folds on several machines). The API of
    `flexunet train --folds K [--fold k]`."""
    count = folds or cfg.train.folds
    if not count:
        raise ConfigError(f"{cfg.train.where('folds')}: not set; give --folds K (K >= 2)")
    if fold is not None and not 0 <= fold < count:
        raise ConfigError(f"--fold {fold}: the folds are numbered 0 to {count - 1}")
    with guarded(protected_inputs(cfg)):
        model_dir = Path(cfg.train.model_dir)
        check_output_folders(cfg, [(cfg.train.where("model_dir"), model_dir)])
        plan = folds_for_run(cfg, count, model_dir, write=os.environ.get("RANK", "0") == "0")
        if not quiet and os.environ.get("RANK", "0") == "0":
            sizes = ", ".join(str(len(plan.split(k)[1])) for k in range(count))
            say(f"{count} folds of {len(plan.pairs)} [train] + [valid] pairs by {len(set(plan.group.values()))} "
                f"source groups ({plan.source}); validation pairs per fold: {sizes}; assignment in "
                f"{model_dir / FOLD_FILE}")
        results = []
        # one process group for every fold (each _train joins it and leaves it standing): destroyed and joined again
        # between folds, both ranks hung under load
        dist_ctx, _ = init_distributed(device)
        try:
            for k in range(count) if fold is None else [fold]:
                if not quiet and os.environ.get("RANK", "0") == "0":
                    say(f"fold {k}: training on {len(plan.split(k)[0])} pairs, validating on {len(plan.split(k)[1])}")
                results.append(_train(fold_config(cfg, k), device, resume, quiet, None, plan.split(k),
                                      keep_group=True))
        finally:
            shutdown(dist_ctx)
        if cfg.postprocess.auto and os.environ.get("RANK", "0") == "0":
            _choose_out_of_fold(cfg, plan, device, quiet)
        return results


def _choose_out_of_fold(cfg: Config, plan: Folds, device: str | None, quiet: bool) -> None:
    """`[postprocess] auto` over folds: once every fold has its best.pt (folds trained here or on other machines),
    choose the threshold and postprocessing on the out-of-fold predictions, in model_dir/postprocess.json."""
    runs = [run_dir_for(fold_config(cfg, k)) for k in range(plan.count)]
    missing = [k for k, run in enumerate(runs) if not run.best.is_file()]
    if missing:
        if not quiet:
            note(f"[postprocess] auto: chosen on the out-of-fold predictions once every fold is trained (fold "
                 f"{missing[0]} is not yet: {runs[missing[0]].best})")
        return
    held_out = [make_dataset(cfg, plan.split(k)[1]) for k in range(plan.count)]
    chosen = choose_out_of_fold(cfg, [run.best for run in runs], held_out, choose_device(device),
                                Path(cfg.train.model_dir) / CHOICE_FILE)
    if not quiet:
        say(f"[postprocess] auto, out of fold ({len(plan.pairs)} pairs): {choice_summary(chosen)} ({chosen})")


def _train(cfg: Config, device: str | None, resume: bool, quiet: bool,
           on_epoch_end: EpochCallback | None, pairs: tuple[list[Pair], list[Pair]] | None = None,
           keep_group: bool = False) -> FitResult:
    dist_ctx, dist_device = init_distributed(device)
    try:
        torch_device = dist_device or choose_device(device)
        seed_everything(cfg.train.seed)
        if torch_device.type == "cpu":
            keep_freed_memory()
        quiet = quiet or not dist_ctx.is_main
        log = (lambda *_: None) if quiet else say
        run = run_dir_for(cfg)
        check_output_folders(cfg, [(_where(cfg, key), folder) for folder, key in run.named_folders().items()])
        if resume and not run.last.is_file():
            raise CheckpointError(f"{run.last}: nothing to resume (no last.pt in [train] model_dir)")
        foreign = [] if resume else run.foreign_folders() + run.held_inputs()
        if foreign:  # before the lock creates model_dir: a refused run writes nothing
            raise OutputError("\n".join(foreign))
        barrier(dist_ctx)  # every rank has looked at the folders before rank 0 creates them (a slow rank saw a
        # half-written marker as a foreign file)
        data = build_datasets(cfg, pairs)  # before touching any folder: a data error leaves earlier runs as they are
        model = build_model(cfg.model)
        loss_fn = build_loss(cfg.model)
        augment = build_augmenter(cfg)  # None unless [model] generator is on
        with run.locked() if dist_ctx.is_main else nullcontext():
            if dist_ctx.is_main:
                for text in data.notes:
                    if not quiet:
                        note(text)
                for moved in run.prepare(resume):
                    if not quiet:
                        note(f"an earlier run was moved aside to {moved}")
                atomic_write_text(run.resolved_config, config_to_ini(cfg))
                copy = run.model_dir / Path(cfg.source or "").name
                if cfg.source and Path(cfg.source).is_file() and not copy.resolve() == Path(cfg.source).resolve():
                    atomic_write_bytes(copy, Path(cfg.source).read_bytes())  # the seed kept a copy of its config too
            barrier(dist_ctx)
            processes = f" x {dist_ctx.world_size} processes" if dist_ctx.enabled else ""
            params = sum(p.numel() for p in model.parameters())
            log(f"training {cfg.model.model} ({params:,} parameters) on {torch_device}{processes}"
                f": {len(data.train)} training and {len(data.valid)} validation pairs")
            with progress_bars(quiet) as progress:
                try:
                    result = fit(model, loss_fn, data, cfg, run, torch_device, resume=resume, augment=augment,
                                 progress=progress, log=log, dist_ctx=dist_ctx,
                                 on_epoch_end=on_epoch_end)
                except OutputError as exc:  # e.g. a full disk: say how to go on once there is space again
                    hint = " with --resume (last.pt holds the last saved epoch)" if run.last.is_file() else ""
                    raise OutputError(f"{exc}{hint}") from None
            if cfg.postprocess.auto and dist_ctx.is_main and run.best.is_file():
                chosen = choose_on_validation(cfg, run, data.valid, torch_device)
                log(f"[postprocess] auto: {choice_summary(chosen)} ({chosen})")
            barrier(dist_ctx)  # every rank finishes before any tears the group down (gloo aborted on an early exit)
        return result
    finally:
        if not keep_group:  # train_folds keeps one group for all its folds
            shutdown(dist_ctx)
