"""One model against the ensemble of 5 fold models (issue 30, item 3): at equal epochs per fold and at equal compute.

Sides, each trained on one thread and scored on the same test split by `flexunet evaluate` (per class, background
excluded, intervals from the group bootstrap over test sources):

    single         one model: [train] for training, [valid] for choosing the best epoch, EPOCHS epochs
    folds_epochs   `train --folds 5` over [train] + [valid] (by source group), each fold EPOCHS epochs over its
                   4/5; the test scored by `--ensemble` of the 5 best.pt (5x the single model's training images)
    folds_compute  the same 5 folds, each with a fifth of the single model's training steps (steps_per_epoch), so
                   the 5 together see as many training images as `single`: equal training time on one machine for
                   one network, which (unlike wall seconds on a shared machine) does not move with the load

Inference cost: seconds per test image of one model and of the 5-model ensemble (the Predictor, whole image, batch
4, one thread), median of 3 passes, measured in one process one after the other.

Datasets: the grouped pap-smear split (benchmarks/splits/pap_smear_grouped.csv, no cell in two splits) and the
cervical mini set (9 train + valid images, 3 test images: a smoke check, not a ranking; trained with the default
augmentation, since without it every side predicted background after 150 epochs).

Each side writes results/folds_runs/<dataset>__<side>.json; a side done on this machine is not redone; `table`
writes results/folds.json and folds.md and refuses to mix machines.

    python benchmarks/folds.py run --dataset pap-smear-grouped            # every side, resumable
    python benchmarks/folds.py run --dataset cervical-cancer
    python benchmarks/folds.py table
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results"
RUNS = Path(os.environ.get("FLEXUNET_FOLDS_RUNS", RESULTS / "folds_runs"))  # another folder for smoke runs
SIDES = ("single", "folds_epochs", "folds_compute")
FOLDS = 5
# dataset -> (epochs, steps per epoch of the single model: None = every training image once)
SETTINGS = {"pap-smear-grouped": (2, None), "cervical-cancer": (150, None)}
AUGMENT = {"cervical-cancer"}  # 6 training images: without augmentation every side predicted background
NETWORK = {"model": "flexunet", "base_filters": 8, "num_layers": 5}  # what `flexunet init` picks for 5 CPU minutes


def _config(dataset: str, work: Path, epochs: int, steps: int | None, smoke: bool):
    from model_zoo_train import sections

    from flexunet.config.load import config_from_dict

    values = sections(dataset, "flexunet", work)
    values["model"] |= NETWORK
    values["train"] |= {"epochs": epochs, "patience": 10_000, "steps_per_epoch": steps, "validation_steps": None}
    values["model"] |= {"generator": dataset in AUGMENT}
    if smoke:  # the script's own check: a few steps at 32 px
        values["model"] |= {"image_width": 32, "image_height": 32}
        values["train"] |= {"epochs": 1, "steps_per_epoch": 2}
    return config_from_dict(values, base_dir=work)


def _scores(evaluation) -> dict[str, dict[str, float]]:
    keys = ("dice", "dice_ci_low", "dice_ci_high", "dice_image_mean", "iou", "iou_image_mean")
    return {name: {k: round(v[k], 4) for k in keys if isinstance(v.get(k), float) and math.isfinite(v[k])}
            for name, v in evaluation.per_class.items()}


def _inference_cost(cfg, single: Path, members: list[Path]) -> dict[str, float]:
    """Seconds per test image: the checkpoint `single`, then the ensemble of `members`; median of 3 passes each."""
    import torch

    from flexunet.data.dataset import make_dataset, pairs_for
    from flexunet.predict import for_inference, predictor_from_config
    from flexunet.runs.checkpoint import load_trained_model
    from flexunet.runs.ensemble import load_ensemble

    device = torch.device("cpu")
    data = make_dataset(cfg, pairs_for(cfg, "test"))
    images = [data.load_original(i)[0] for i in range(len(data))]
    out = {}
    for name, model in (("one_model_s_per_image", load_trained_model(single, device, cfg)[0]),
                        (f"ensemble_of_{len(members)}_s_per_image", load_ensemble(members, device, cfg))):
        predictor = predictor_from_config(cfg, for_inference(model, device), device, tta=False, batch_size=4)
        predictor.probs(images[:4])  # warm-up
        times = []
        for _ in range(3):
            began = time.perf_counter()
            predictor.probs(images)
            times.append((time.perf_counter() - began) / len(images))
        out[name] = round(statistics.median(times), 5)
    return out


def run_side(dataset: str, side: str, work: Path, smoke: bool = False) -> dict[str, object]:
    import torch
    from machine import LoadSampler, machine_info

    from flexunet.data.dataset import pairs_for
    from flexunet.evaluate import evaluate_from_config
    from flexunet.train import train_folds, train_from_config

    torch.set_num_threads(1)
    epochs, steps = SETTINGS[dataset]
    base = _config(dataset, work, epochs, steps, smoke)
    batch = base.train.batch_size
    single_steps = base.train.steps_per_epoch or math.ceil(len(pairs_for(base, "train", warn=False)) / batch)
    if side == "folds_compute":  # a fifth of the single model's steps each: fewer steps per epoch, else epochs
        fold_steps = max(1, round(single_steps / FOLDS))
        cfg = _config(dataset, work, max(1, round(epochs * single_steps / (FOLDS * fold_steps))), fold_steps, smoke)
    else:
        cfg = base
    with LoadSampler() as load:
        began, cpu0 = time.perf_counter(), time.process_time()
        if side == "single":
            fits = [train_from_config(cfg, device="cpu", quiet=True)]
        else:
            fits = train_folds(cfg, device="cpu", quiet=True, folds=FOLDS)
        train_wall, train_cpu = time.perf_counter() - began, time.process_time() - cpu0
    images = sum(round(r["images_per_s"] * r["seconds"]) for fit in fits for r in fit.history)
    members = [Path(cfg.train.model_dir) / f"fold_{k}" / "best.pt" for k in range(FOLDS)]
    evaluation = evaluate_from_config(cfg, device="cpu", quiet=True, report=False,
                                      ensemble=None if side == "single" else members)
    row: dict[str, object] = {
        "dataset": dataset, "side": side, "folds": 1 if side == "single" else FOLDS,
        "model": f"{cfg.model.model} base_filters {cfg.model.base_filters} num_layers {cfg.model.num_layers}",
        "augment": cfg.model.generator,
        "input_size": [cfg.model.image_width, cfg.model.image_height], "batch": batch,
        "epochs_per_model": cfg.train.epochs, "steps_per_epoch": cfg.train.steps_per_epoch,  # None: every image
        "training_images_seen": images, "train_wall_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
        "best_epochs": [fit.best_epoch for fit in fits], "test_images": len(evaluation.per_image),
        "per_class": _scores(evaluation), "load_average_1m": load.samples, "machine": machine_info(), "smoke": smoke,
    }
    if side == "folds_epochs":  # one checkpoint and the 5, on this machine, one after the other
        row["inference"] = _inference_cost(cfg, members[0], members)
    return row


def path_for(dataset: str, side: str) -> Path:
    return RUNS / f"{dataset}__{side}.json"


def table() -> None:
    from machine import same_machine

    rows = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    if not rows:
        sys.exit(f"{RUNS}: no runs yet")
    machine = rows[0]["machine"]
    if any(not same_machine(r["machine"], machine) for r in rows):
        sys.exit(f"{RUNS}: runs from more than one machine; move one machine's runs aside")
    flags = ", ".join(machine["cpu_flags"])
    lines = [
        "# One model against the 5-fold ensemble",
        "",
        f"Written by `benchmarks/folds.py table` ({machine['cpu_model']}, flags {flags}, {machine['cores_usable']} "
        f"cores, torch {machine['torch']}, 1 thread per run). Network: {rows[0]['model']}, Adam 1e-3, batch "
        f"{rows[0]['batch']} (cervical: with the default augmentation). `single` trains on [train] and picks its epoch on [valid]; the fold sides train 5 "
        "models over [train] + [valid] by source group and score [test] with their mean probability. "
        "`folds_compute` gives each fold a fifth of `single`'s steps (equal training images = equal time for one "
        "network on one machine); `folds_epochs` gives each fold `single`'s epochs (5x the images). Test Dice per "
        "class, background excluded: pooled over pixels [95% interval, bootstrap over test source groups] and the "
        "per-image mean. Pap smear: grouped split, no cell in two splits. Cervical: 3 test images, a smoke check.",
        "",
        "| dataset | side | models x epochs x steps | training images seen | train s (wall / CPU) | "
        "test Dice pooled [95% CI] / per-image | load avg (min-max) |",
        "|---|---|---|---|---|---|---|",
    ]
    costs = []
    for r in sorted(rows, key=lambda r: (r["dataset"], SIDES.index(r["side"]))):
        dice = "; ".join(f"{name} {v.get('dice', float('nan')):.3f} [{v.get('dice_ci_low', float('nan')):.3f}-"
                         f"{v.get('dice_ci_high', float('nan')):.3f}] / {v.get('dice_image_mean', float('nan')):.3f}"
                         for name, v in r["per_class"].items())
        loads = [x for _, x in r["load_average_1m"]] or [float("nan")]
        steps = round(r["training_images_seen"] / (r["folds"] * r["epochs_per_model"] * r["batch"]))  # as trained
        lines.append(f"| {r['dataset']} | {r['side']} | {r['folds']} x {r['epochs_per_model']} x "
                     f"{steps} | {r['training_images_seen']:,} | {r['train_wall_s']:.0f} / "
                     f"{r['train_cpu_s']:.0f} | {dice} | {min(loads):.1f}-{max(loads):.1f} |")
        if "inference" in r:
            costs.append((r["dataset"], r["inference"]))
    if costs:
        lines += ["", "Inference, seconds per test image (whole image, batch 4, 1 thread, median of 3 passes):", "",
                  "| dataset | one model | 5-model ensemble | ratio |", "|---|---|---|---|"]
        for dataset, c in costs:
            one, five = c["one_model_s_per_image"], c[f"ensemble_of_{FOLDS}_s_per_image"]
            lines.append(f"| {dataset} | {one:.4f} | {five:.4f} | {five / one:.1f}x |")
    (RESULTS / "folds.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "folds.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run")
    one.add_argument("--dataset", choices=list(SETTINGS), required=True)
    one.add_argument("--sides", nargs="*", default=list(SIDES), choices=SIDES)
    one.add_argument("--smoke", action="store_true", help="2 steps at 32 px, into a temporary folder")
    sub.add_parser("table")
    args = parser.parse_args()
    if args.command == "table":
        table()
        return
    from machine import machine_info, same_machine

    here = machine_info()
    RUNS.mkdir(parents=True, exist_ok=True)
    for side in args.sides:
        path = path_for(args.dataset, side)
        if not args.smoke and path.is_file() and same_machine(json.loads(path.read_text())["machine"], here):
            print(f"{path.name}: done on this machine, skipped", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            row = run_side(args.dataset, side, Path(tmp), args.smoke)
        if args.smoke:
            print(json.dumps({k: v for k, v in row.items() if k != "load_average_1m"}), flush=True)
            continue
        path.write_text(json.dumps(row, indent=1) + "\n")
        print(path.name, json.dumps(row["per_class"]), flush=True)


if __name__ == "__main__":
    main()
