"""Out-of-fold evaluation of `flexunet train --folds`: each fold's model scores the images its fold held out, and
the parts make one evaluation, reported as any other (eval_dir/out_of_fold/) with a per-fold table."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flexunet.config.folders import protected_inputs
from flexunet.config.schema import Config
from flexunet.console import Bar, progress_bars
from flexunet.data.dataset import make_dataset
from flexunet.errors import CheckpointError
from flexunet.evaluate.groups import resampling_from_labels
from flexunet.evaluate.leakage import LeakSummary
from flexunet.evaluate.measure import Evaluation, Example, evaluate_details, keep_extremes
from flexunet.evaluate.settings import EvalSettings
from flexunet.evaluate.write import EvalResult, eval_dir_outputs, write_evaluation
from flexunet.files import check_outputs, guarded
from flexunet.metrics import Counts
from flexunet.metrics.objects import ObjectCounts
from flexunet.postprocess import choice_for_run, postprocess_hook
from flexunet.predict import for_inference, predictor_from_config
from flexunet.runs.checkpoint import load_trained_model
from flexunet.runs.device import choose_device
from flexunet.runs.distributed import DistContext
from flexunet.runs.folds import FOLD_FILE, fold_config, folds_for_run, recorded_count
from flexunet.runs.rundir import locked_folders, run_dir_for


def merge_evaluations(parts: list[Evaluation], examples: int) -> Evaluation:
    """One Evaluation of the images of every part, in order (the folds of an out-of-fold evaluation)."""
    sizes = [len(p.names) for p in parts]
    worst: list[Example] = []
    best: list[Example] = []
    for part in parts:
        worst = keep_extremes(worst, part.worst, examples, worst=True)
        best = keep_extremes(best, part.best, examples, worst=False)
    hd95 = [p.hd95 for p in parts if p.hd95 is not None]
    diagonals = [p.diagonals for p in parts if p.diagonals is not None]
    objects = [p.objects for p in parts if p.objects is not None and p.objects.tp.size]
    return Evaluation(
        float(np.average([p.loss for p in parts], weights=sizes)),
        {k: float(np.average([p.seed_metrics[k] for p in parts], weights=sizes)) for k in parts[0].seed_metrics},
        Counts(*(torch.cat([getattr(p.counts, f) for p in parts]) for f in ("tp", "fp", "fn"))),
        [n for p in parts for n in p.names], sum((p.confusion for p in parts), torch.zeros_like(parts[0].confusion)),
        torch.cat(hd95) if len(hd95) == len(parts) else None, worst, best,
        torch.cat(diagonals) if len(diagonals) == len(parts) else None,
        ObjectCounts(*(np.concatenate([getattr(o, f) for o in objects]) for f in ("tp", "fp", "fn", "iou")))
        if len(objects) == len(parts) else None)


def class_dice(confusion: Tensor, names: list[str]) -> dict[str, float]:
    """Pooled Dice per foreground class from a (K, K) confusion matrix (rows = true label)."""
    out = {}
    for c in range(1, confusion.shape[0]):
        both = float(confusion[c, :].sum() + confusion[:, c].sum())
        out[names[c]] = round(2 * float(confusion[c, c]) / both, 4) if both else float("nan")
    return out


def evaluate_folds_from_config(cfg: Config, device: str | None = None, quiet: bool = False, tta: bool | None = None,
                               examples: int = 4, report: bool = True) -> EvalResult:
    """Out-of-fold evaluation of `flexunet train --folds K`: every [train] + [valid] pair is scored by the model of
    the fold that held its source group out, and the scores go into one report (eval_dir/out_of_fold/: the usual
    CSVs, metrics.json with a "folds" table, report.html), with intervals from a bootstrap over the folds' source
    groups. [test] is not used. The API of `flexunet evaluate --folds`."""
    run = run_dir_for(cfg)
    fold_file = run.model_dir / FOLD_FILE
    if not fold_file.is_file():
        raise CheckpointError(f"{fold_file}: no folds were trained here; train them first: "
                              f"flexunet train {cfg.source or 'CONFIG'} --folds 5")
    count = recorded_count(fold_file)
    plan = folds_for_run(cfg, count, run.model_dir, write=False)
    checkpoints = [run_dir_for(fold_config(cfg, k)).checkpoint() for k in range(count)]
    missing = [f"fold {k} ({c})" for k, c in enumerate(checkpoints) if not c.is_file()]
    if missing:
        raise CheckpointError(f"{missing[0]}: not trained yet ({len(missing)} of {count} folds missing); train it with "
                              f"flexunet train {cfg.source or 'CONFIG'} --folds {count} --fold {missing[0].split()[1]}")
    eval_dir = run.eval_dir / "out_of_fold"
    tta = cfg.eval.tta if tta is None else tta
    cfg, postprocess = choice_for_run(cfg, run.model_dir)
    settings = EvalSettings.from_config(cfg)
    with guarded(protected_inputs(cfg, [(c, "a fold checkpoint this command reads") for c in checkpoints])):
        check_outputs(eval_dir_outputs(eval_dir, report))
        torch_device = choose_device(device)
        parts, order, table = [], [], []
        with locked_folders({eval_dir: run.eval_key}), progress_bars(quiet) as progress:
            for k, checkpoint in enumerate(checkpoints):
                held_out = plan.split(k)[1]
                model = for_inference(load_trained_model(checkpoint, torch_device, cfg)[0], torch_device)
                predictor = predictor_from_config(cfg, model, torch_device, tta=tta, batch_size=cfg.eval.batch_size,
                                                  postprocess=postprocess_hook(postprocess))
                part = evaluate_details(predictor, make_dataset(cfg, held_out), settings,
                                        Bar(progress, f"fold {k}", len(held_out)), hd95=True,
                                        examples=examples if report else 0, postprocess=postprocess)
                parts.append(part)
                order += held_out
                table.append({"fold": k, "checkpoint": str(checkpoint), "images": len(held_out),
                              "dice": class_dice(part.confusion, cfg.label_names)})
            ev = merge_evaluations(parts, examples)
            resampling = resampling_from_labels([plan.group[plan.key(p)] for p in order],
                                                f"the folds' source groups ({plan.source})")
            leaks = LeakSummary("not checked", (
                f"out of fold: each image is scored by the model of the fold that held its source group out "
                f"(groups: {plan.source}); [test] is not used",), str(fold_file))
            name = f"{count} fold models, each on the images it did not train on ({fold_file})"
            return write_evaluation(ev, order, resampling, cfg, settings, eval_dir, "out-of-fold", name, quiet, tta,
                                    None, report, None, DistContext(), None, postprocess, leaks, {"folds": table})
