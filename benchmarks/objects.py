"""Pixel Dice and object F1 / PQ / count error with [postprocess] off and `auto`, after a short training.

    python benchmarks/objects.py --budget-s 360 480 480      # what benchmarks/results/objects.json holds
    python benchmarks/objects.py --only breast-cancer-cell   # one dataset (merged into the file); --timing-only

Datasets (/work/shared/data): pap-smear on the grouped split (benchmarks/splits/pap_smear_grouped.csv: no test cell
is seen in training; never the dataset's own leaky split), and the cervical-cancer and breast-cancer-cell mini sets
split 60/20/20 by `flexunet split` (seed 137), every labelled category mapped to one "cell" class (Dice+CE loss).
Each trains a small FlexUNet through `train_from_config` with `[postprocess] auto = True` for a wall-clock budget
(on_epoch_end stops it), which chooses the postprocessing on the validation split with best.pt; then
`evaluate_from_config` scores the test split twice, postprocessing off and auto. The mini sets' masks label only
some of the cells (unlabelled cells count as background), so their object precision and count ratio punish correct
detections of unlabelled cells: recall on the labelled objects is the fair figure.
Writes benchmarks/results/objects.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
DATA = Path(os.environ.get("FLEXUNET_SHARED_DATA", "/work/shared/data"))
SPLIT_FILE = HERE / "splits" / "pap_smear_grouped.csv"
KEPT = ("dice", "dice_ci_low", "dice_ci_high", "object_precision", "object_recall", "object_recall_ci_low",
        "object_recall_ci_high", "object_f1", "object_f1_ci_low", "object_f1_ci_high", "pq", "pq_ci_low",
        "pq_ci_high", "count_mae", "count_mae_ci_low", "count_mae_ci_high", "count_ratio", "true_objects",
        "predicted_objects")
SMALL_MODEL = {"model": "FlexUNet", "base_filters": 8, "num_layers": 5, "dropout_rate": 0.05, "learning_rate": 0.001,
               "clipvalue": 0.5, "normalization": True}


def sections(name: str, work: Path) -> dict[str, dict[str, object]]:
    """The config of one dataset as sections: data, a small model, training without previews, postprocess auto."""
    train = {"epochs": 1000, "patience": 1000, "batch_size": 4, "model_dir": str(work / "models"),
             "eval_dir": str(work / "eval"), "epoch_change_infer": False, "steps_per_epoch": 40, "seed": 137}
    if name == "pap-smear-grouped":
        pap = DATA / "pap-smear"
        data = {s: {"images_dir": f"{pap}/*/images/", "masks_dir": f"{pap}/*/masks/", "split_file": str(SPLIT_FILE)}
                for s in ("train", "valid", "test")}
        return {"model": {**SMALL_MODEL, "image_width": 128, "image_height": 128, "num_classes": 1,
                          "loss": "bce_dice_loss", "metrics": ["iou_coef"]},
                "train": {**train, **data["train"]}, "valid": data["valid"], "test": data["test"],
                "mask": {"blur": True, "threshold": 60}, "postprocess": {"auto": True}}
    from flexunet.prepare.split import split_dataset

    folder = DATA / "mini_test" / name
    split = split_dataset(folder / "images", folder / "masks", work / "split", (0.6, 0.2, 0.2), seed=137).split_file
    data = {s: {"images_dir": str(folder / "images"), "masks_dir": str(folder / "masks"), "split_file": str(split)}
            for s in ("train", "valid", "test")}
    # every labelled cell is one "cell" class: the objects to count and recall are the labelled cells, whatever
    # their category (a category per image, 1-2 labelled cells each, is not learnable from 7 training images)
    colours = {"cervical-cancer": [(0, 0, 255), (0, 255, 0), (0, 128, 255)],
               "breast-cancer-cell": [(0, 255, 0), (255, 0, 0)]}[name]
    mask = {"rgb_map": {(0, 0, 0): 0, **{c: 1 for c in colours}}, "class_names": ["background", "cell"]}
    return {"model": {**SMALL_MODEL, "image_width": 256, "image_height": 256, "num_classes": 2,
                      "loss": "dice_ce_loss", "metrics": ["dice_coef_multiclass"]},
            "train": {**train, **data["train"], "steps_per_epoch": 10}, "valid": data["valid"], "test": data["test"],
            "mask": mask, "postprocess": {"auto": True}}


def run(name: str, budget_s: float, work: Path) -> dict:
    from benchmarks.machine import machine_info
    from flexunet.config.load import config_from_dict
    from flexunet.evaluate import evaluate_from_config
    from flexunet.train import train_from_config

    values = sections(name, work)
    cfg = config_from_dict(values, base_dir=work)
    began = time.perf_counter()
    marks = [began]
    loads = [os.getloadavg()[0]]

    def within_budget(row: dict[str, float]) -> bool:
        now = time.perf_counter()
        last = now - marks[-1]
        marks.append(now)
        loads.append(os.getloadavg()[0])
        print(f"{name} epoch {int(row['epoch'])} loss {row['loss']:.4f} val_loss {row['val_loss']:.4f} "
              f"({now - began:.0f}s)", file=sys.stderr, flush=True)
        return now - began + last > budget_s

    result = train_from_config(cfg, device="cpu", quiet=True, on_epoch_end=within_budget)
    train_s = time.perf_counter() - began
    choice = json.loads((result.run.model_dir / "postprocess.json").read_text())
    scores = {}
    for mode, auto in (("off", False), ("auto", True)):
        began_eval = time.perf_counter()
        evaluated = evaluate_from_config(config_from_dict({**values, "postprocess": {"auto": auto}}, base_dir=work),
                                         device="cpu", quiet=True, report=False)
        scores[mode] = {"per_class": {c: {k: v.get(k) for k in KEPT} for c, v in evaluated.per_class.items()},
                        "images": len(evaluated.per_image), "seconds": round(time.perf_counter() - began_eval, 1),
                        "intervals": evaluated.resampling.to_dict() if evaluated.resampling else None}
    return {"dataset": name, "train": {"epochs": result.epochs_run, "best_epoch": result.best_epoch,
                                       "steps_per_epoch": cfg.train.steps_per_epoch, "batch_size": cfg.train.batch_size,
                                       "seconds": round(train_s, 1), "budget_s": budget_s,
                                       "load_average_1m": [round(x, 2) for x in loads]},
            "model": values["model"], "choice": choice["classes"], "validation_images": choice["images"],
            **scores, "machine": machine_info()}


def timing() -> dict:
    """Seconds for the object steps on a 1000 x 1000 label map holding 10,000 discs (r = 3 px, 10 px apart), and on
    an empty one: postprocessing, numbering (components / watershed), matching against itself, objects.csv rows."""
    import numpy as np

    from flexunet.infer.objects import image_objects
    from flexunet.metrics.objects import object_counts
    from flexunet.postprocess import ClassPostprocess, instance_labels, postprocess_labels

    yy, xx = np.mgrid[:10, :10]
    cell = ((yy - 4.5) ** 2 + (xx - 4.5) ** 2 <= 9).astype(np.int64)
    labels = np.tile(cell, (100, 100))
    probs = np.stack([1.0 - labels, labels]).astype(np.float32)
    names = ["background", "cell"]
    out: dict = {"image": "1000 x 1000", "objects": int(instance_labels(labels, {}, 2)[0].max()),
                 "load_average_1m": round(os.getloadavg()[0], 2)}
    steps = {
        "postprocess (min_object_px, fill_holes)": lambda lab: postprocess_labels(
            lab, probs, {1: ClassPostprocess(min_object_px=5, fill_holes=True)}),
        "instances (connected components)": lambda lab: instance_labels(lab, {}, 2),
        "instances (watershed)": lambda lab: instance_labels(lab, {1: ClassPostprocess(separate="watershed",
                                                                                       min_distance=2)}, 2),
        "object matching (truth = prediction)": lambda lab: object_counts(lab, lab, 2),
        "objects.csv rows": lambda lab: image_objects("x", lab, probs, {}, names),
    }
    for kind, lab in (("10000_objects", labels), ("empty", np.zeros_like(labels))):
        out[kind] = {}
        for step, fn in steps.items():
            began = time.perf_counter()
            fn(lab)
            out[kind][step] = round(time.perf_counter() - began, 3)
    return out


def finite(value: object) -> object:
    """NaN (a class absent from truth and prediction) as null, as metrics.json writes it."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, nargs=3, default=[360, 480, 480])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--timing-only", action="store_true", help="only the 10,000-object timing")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    names = ["pap-smear-grouped", "cervical-cancer", "breast-cancer-cell"]
    out_path = HERE / "results" / "objects.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() and (args.only or args.timing_only) \
        else {"datasets": {}}
    results["timing"] = timing()
    if args.timing_only:
        names = []
    for name, budget in zip(names, args.budget_s[: len(names)], strict=True):
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results["datasets"][name] = run(name, budget, Path(tmp))
        results["note"] = (
            "Short CPU trainings (budget per dataset, small FlexUNet); numbers are for comparing postprocessing off "
            "vs auto on the same checkpoint, not for quoting as model quality. pap-smear uses the grouped split. "
            "The cervical-cancer and breast-cancer-cell masks label only some cells (unlabelled cells count as "
            "background): object recall on the labelled objects is the fair figure there; precision, F1, PQ and "
            "the count ratio count detections of unlabelled cells as false positives.")
        out_path.write_text(json.dumps(finite(results), indent=2, allow_nan=False) + "\n")
        print(f"wrote {out_path} ({name})", file=sys.stderr)


if __name__ == "__main__":
    main()
