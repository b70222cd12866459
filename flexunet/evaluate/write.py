"""The files an evaluation writes (evaluation.csv, per_image.csv, per_class.csv, metrics.json, report.html), all through
the writer seam, and what they record."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexunet.config.schema import Config
from flexunet.console import note
from flexunet.data.pairing import Pair
from flexunet.evaluate.groups import Resampling
from flexunet.evaluate.leakage import LeakSummary, leak_summary
from flexunet.evaluate.measure import Evaluation
from flexunet.evaluate.provenance import provenance_record
from flexunet.evaluate.settings import EvalSettings
from flexunet.evaluate.summary import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, summarise
from flexunet.files import atomic_write_text, check_outputs, json_safe, make_folder
from flexunet.metrics import dice
from flexunet.metrics.objects import (
    OBJECT_METRICS,
)
from flexunet.postprocess import (
    CHOICE_FILE,
    PostprocessSettings,
    separation_notes,
)
from flexunet.runs.checkpoint import (
    TrainingConfig,
)
from flexunet.runs.distributed import DistContext, barrier
from flexunet.runs.rundir import run_dir_for


@dataclass(frozen=True)
class EvalResult:
    """Numbers of one evaluation and where they were written."""

    loss: float
    seed_metrics: dict[str, float]  # the seed's own (batch-global, soft) metrics, for comparison
    per_class: dict[str, dict[str, float]]  # class name -> dice/iou/precision/recall (dataset-level) + per-image means
    per_image: list[dict[str, float | str]]
    files: tuple[Path, ...]
    leaks: LeakSummary | None = None  # what the dataset doctor says about the evaluated split
    resampling: Resampling | None = None  # what the bootstrap intervals resampled (source groups or images)

    @property
    def mean_dice(self) -> float:
        """Mean over foreground classes of the dataset-level Dice."""
        return float(np.nanmean([v["dice"] for v in self.per_class.values()]))


def _fmt(value: float | int | str) -> str:
    if isinstance(value, (str, int)):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.4f}"


def bootstrap_record(resampling: Resampling) -> dict[str, object]:
    """metrics.json's "bootstrap": what was resampled (source groups or images), how many, and from where."""
    return {**resampling.to_dict(), "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95}


REPORT_FILES = ("evaluation.csv", "per_image.csv", "per_class.csv", "metrics.json")  # and report.html


def write_reports(result_dir: Path, loss_name: str, loss: float, seed: dict[str, float],
                  per_class: dict[str, dict[str, float]], rows: list[dict], extra: dict | None = None,
                  resampling: Resampling | None = None) -> tuple[Path, ...]:
    """evaluation.csv (seed format: `<loss>,<value>` then `<metrics[0]>,<value>`), per_image.csv, per_class.csv,
    metrics.json (with `extra` entries added). `resampling` says what the intervals resampled (images if None)."""
    make_folder(result_dir)
    seed_lines = [f"{loss_name},{loss:.4f}"] + [f"{metric},{value:.4f}" for metric, value in list(seed.items())[:1]]
    files = [result_dir / name for name in REPORT_FILES]
    atomic_write_text(files[0], "\n".join(seed_lines) + "\n")
    keys = list(rows[0]) if rows else ["image"]
    atomic_write_text(files[1], "\n".join([",".join(keys)] + [",".join(_fmt(r[k]) for k in keys) for r in rows]) + "\n")
    columns = ["dice", "iou", "precision", "recall", "dice_image_mean", "iou_image_mean", "images_with_class"]
    added = [f"{m}_ci_{end}" for m in ("dice", "iou", "precision", "recall") for end in ("low", "high")]
    added += ["hd95", "hd95_ci_low", "hd95_ci_high", "hd95_one_sided"]
    added += ["dice_image_mean_ci_low", "dice_image_mean_ci_high"]
    added += [f"{m}{end}" for m in (*OBJECT_METRICS, "count_mae") for end in ("", "_ci_low", "_ci_high")]
    added += ["true_objects", "predicted_objects"]
    # appended: old readers keep working
    columns += [c for c in added if per_class and c in next(iter(per_class.values()))]
    unit = f"{resampling.count} {resampling.unit}" if resampling else "images"
    lines = ["class," + ",".join(columns)]
    lines += [f"{c}," + ",".join(_fmt(v[k]) for k in columns) for c, v in per_class.items()]
    atomic_write_text(files[2], "\n".join(lines) + "\n")
    atomic_write_text(files[3], json.dumps(json_safe({
        "loss": {loss_name: loss}, "per_class": per_class,
        "seed_metrics": {"note": "the seed's batch-global soft metrics; dice_coef_multiclass counts background",
                         **seed},
        "images": len(rows),
        "notes": {
            "ci": f"95% percentile bootstrap over {unit} ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}) "
                  f"of the pooled metric; dice_image_mean_ci_* of the per-image mean",
            "size": "Dice/IoU/precision/recall and HD95 are scored at each image's original size, on the masks "
                    "`flexunet infer` writes; loss and seed_metrics at the model's input size",
            "hd95": "pixels at the original size; mean over images with the class in truth or prediction; "
                    "hd95_one_sided images (class in only one of them) count as that image's diagonal",
            "objects": "objects are 8-connected components of each class in truth and prediction (predictions "
                       "watershed-separated where [postprocess] separate says so); a pair matches at IoU >= 0.5; "
                       "object_precision/recall/f1, sq, pq (= sq x rq, rq = f1) and count_ratio (predicted / true "
                       "objects) pooled over images; count_mae the mean over images of |predicted - true| objects",
        },
        **(extra or {}),
    }), indent=2, allow_nan=False))
    return tuple(files)


def postprocess_record(cfg: Config, postprocess: PostprocessSettings, model_dir: Path) -> dict[str, object]:
    """metrics.json's "postprocess": what was applied per class and, with auto, the validation choice it came from."""
    names = cfg.label_names
    record: dict[str, object] = {
        "auto": cfg.postprocess.auto,
        "threshold": cfg.infer.threshold if cfg.model.num_classes == 1 else None,  # binary: foreground probability
        "classes": {names[c]: postprocess[c].describe() for c in sorted(postprocess)},
        "separate": {names[c]: postprocess[c].separate for c in sorted(postprocess)
                     if postprocess[c].separate != "none"},
    }
    if cfg.postprocess.auto:
        record["choice"] = json.loads((model_dir / CHOICE_FILE).read_text())
    return record


def fold_rows(extra: dict[str, object] | None) -> list[dict] | None:
    """The out-of-fold table that `extra` carries into metrics.json, for the report."""
    rows = (extra or {}).get("folds")
    return rows if isinstance(rows, list) else None


def model_record(files: dict[str, object] | None) -> dict[str, object]:
    """metrics.json's provenance entry for a model that is not one checkpoint: "onnx" or "ensemble"."""
    if not files:
        return {}
    return {"ensemble" if "ensemble" in files else "onnx": files}


def eval_dir_outputs(eval_dir: Path, report: bool) -> list[Path]:
    """The files an evaluation writes into `eval_dir`."""
    return [Path(eval_dir) / name for name in REPORT_FILES + (("report.html",) if report else ())]


def write_evaluation(ev: Evaluation, pairs: list[Pair], resampling: Resampling, cfg: Config,
                     settings: EvalSettings, eval_dir: Path, section: str, checkpoint: str, quiet: bool, tta: bool,
                     doctor: Path | None, report: bool,
                     training: TrainingConfig | None, dist_ctx: DistContext, model_files: dict[str, object] | None,
                     postprocess: PostprocessSettings, leaks: LeakSummary | None,
                     extra: dict[str, object] | None = None) -> EvalResult:
    """The CSVs, metrics.json and (with `report`) report.html of one evaluation `ev` of `pairs`; `leaks` None: the
    doctor's verdict on the evaluated files. `extra` goes into metrics.json as it is (the out-of-fold table)."""
    from flexunet.evaluate.figures import read_history
    from flexunet.evaluate.report import ReportData, write_report

    per_class, rows = summarise(ev.counts, ev.names, settings, ev.hd95, diagonals=ev.diagonals,
                                groups=resampling.groups, objects=ev.objects)
    if not dist_ctx.is_main:
        barrier(dist_ctx)  # rank 0 writes the reports
        return EvalResult(ev.loss, ev.seed_metrics, per_class, rows, (), None, resampling)
    applied = postprocess_record(cfg, postprocess, run_dir_for(cfg).model_dir)
    predicted = {name: int(v.get("predicted_objects", 0)) for name, v in per_class.items()}
    for line in separation_notes(postprocess, list(settings.space.names), predicted):
        if not quiet:
            note(line)
    check_outputs(eval_dir_outputs(eval_dir, report))  # before anything is written (evaluate_run from the API too)
    if leaks is None:
        leaks = leak_summary(cfg, section, eval_dir, doctor, run_doctor=report, evaluated=[p.image for p in pairs])
    files = write_reports(eval_dir, settings.loss_name, ev.loss, ev.seed_metrics, per_class, rows,
                          {"section": section, "leakage": {"status": leaks.status, "lines": list(leaks.lines),
                                                           "source": leaks.source},
                           "tta": tta, "bootstrap": bootstrap_record(resampling),
                           "provenance": provenance_record(training, cfg) | model_record(model_files),
                           "postprocess": applied} | (extra or {}),
                          resampling)
    if report:
        curve_pngs = tuple(p.read_bytes() for p in (eval_dir / "train_losses.png", eval_dir / "train_metrics.png")
                           if p.is_file())
        shown_worst = {w.name for w in ev.worst}
        data = ReportData(
            cfg=cfg, settings=settings, section=section, checkpoint=checkpoint, images=len(ev.names),
            loss_name=settings.loss_name, loss=ev.loss, per_class=per_class,
            per_image_dice=dice(ev.counts.foreground()).numpy(), seed_metrics=ev.seed_metrics,
            confusion=ev.confusion if not settings.space.binary else None,
            worst=ev.worst, best=[x for x in ev.best if x.name not in shown_worst],  # small splits: no repeats
            leaks=leaks, history=read_history(eval_dir), curve_pngs=curve_pngs, files=tuple(str(f) for f in files),
            resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED, resampling=resampling, training=training,
            postprocess=applied, folds=fold_rows(extra))
        files += (write_report(eval_dir / "report.html", data),)
    barrier(dist_ctx)
    return EvalResult(ev.loss, ev.seed_metrics, per_class, rows, files, leaks, resampling)
