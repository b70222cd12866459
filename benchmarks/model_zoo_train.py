"""Which model to pick: test Dice/IoU per class of each architecture after the same training budget, on two real sets.

Every model trains through the real `flexunet train` path (train_from_config, random-init encoders: nothing can be
downloaded on the benchmark machine) with one recipe: Adam 1e-3, batch 4, the config's default augmentation, a
validation pass after every epoch, best.pt by val_loss. Training stops at the first epoch end after which the next
epoch would overrun the budget of *process CPU seconds* (1 torch thread, no loader workers: an idle core's wall-clock
seconds, and unaffected by other processes on the machine). `evaluate_from_config` then scores the test split:
dataset-level and per-image-mean Dice/IoU per class, background excluded.

Sets: the pap-smear images re-split by source cell (benchmarks/splits/pap_smear_grouped.csv, no cell in two splits;
binary, 128 px) and the cervical-cancer mini set (benchmarks/splits/cervical_mini.csv: 6 train / 3 valid / 3 test,
one image of each cell category per split; 4 classes by the seed's rgb_map, resized 512 -> 256 px). Three test
images are a smoke-level check of multi-class training, not a ranking.

    python benchmarks/model_zoo_train.py run --dataset pap-smear-grouped --model unet --budget 600   # one run
    python benchmarks/model_zoo_train.py all --budget 600 --jobs 2     # every pair, 2 single-thread runs at a time
    python benchmarks/model_zoo_train.py table                         # model_zoo_train.json + model_zoo.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
DATA = HERE.parent.parent / "shared" / "data"
RESULTS = HERE / "results"
RUNS = RESULTS / "model_zoo_runs"
MODELS = ["flexunet", "unet", "unetplusplus", "fpn", "deeplabv3plus", "deeplabv3", "segformer", "upernet", "manet"]
SMP = set(MODELS) - {"flexunet"}
ENCODER = "resnet34"  # every smp row on one encoder, so the rows compare decoders
DATASETS = ["pap-smear-grouped", "cervical-cancer"]
CERVICAL_CLASSES = ["background", "koilocytotic", "metaplastic", "parabasal"]  # blue, green, orange


def architecture(model: str) -> dict[str, object]:
    """The [model] keys that name the network as this benchmark trains it: smp rows on ENCODER, random init."""
    net: dict[str, object] = {"model": model}
    if model in SMP:
        net |= {"encoder": ENCODER, "encoder_weights": None}
    return net


def sections(dataset: str, model: str, work: Path) -> dict[str, dict[str, object]]:
    """The config of one run, as config_from_dict takes it."""
    train: dict[str, object] = {"epochs": 10_000, "patience": 10_000, "batch_size": 4, "seed": 1, "num_workers": 0,
                                "model_dir": str(work / "models"), "eval_dir": str(work / "eval"),
                                "epoch_change_infer": False}
    net = architecture(model) | {"learning_rate": 0.001}
    if dataset == "pap-smear-grouped":
        pap, split = DATA / "pap-smear", HERE / "splits" / "pap_smear_grouped.csv"
        files = {"images_dir": f"{pap}/*/images/", "masks_dir": f"{pap}/*/masks/", "split_file": str(split)}
        return {"model": net | {"image_width": 128, "image_height": 128, "num_classes": 1, "loss": "bce_dice_loss",
                                "metrics": ["iou_coef"]},
                "train": train | files | {"steps_per_epoch": 50, "validation_steps": 10},
                "valid": dict(files), "test": dict(files), "mask": {"threshold": 60}}
    folder, split = DATA / "mini_test" / "cervical-cancer", HERE / "splits" / "cervical_mini.csv"
    files = {"images_dir": str(folder / "images"), "masks_dir": str(folder / "masks"), "split_file": str(split)}
    return {"model": net | {"image_width": 256, "image_height": 256, "num_classes": 4, "loss": "dice_ce_loss",
                            "metrics": ["dice_coef_multiclass"]},
            "train": train | files | {"steps_per_epoch": 6},
            "valid": dict(files), "test": dict(files),
            "mask": {"rgb_map": {(0, 0, 0): 0, (0, 0, 255): 1, (0, 255, 0): 2, (0, 128, 255): 3},
                     "class_names": CERVICAL_CLASSES}}


def run_one(dataset: str, model: str, budget: float) -> dict[str, object]:
    """Train `model` on `dataset` for `budget` CPU seconds, evaluate on test, return the row."""
    import torch
    from machine import machine_info

    from flexunet.config.load import config_from_dict
    from flexunet.evaluate import evaluate_from_config
    from flexunet.train import train_from_config

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        values = sections(dataset, model, work)
        cfg = config_from_dict(values, base_dir=work)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        marks, curve, loads = [cpu0], [], [os.getloadavg()[0]]

        def within_budget(row: dict[str, float]) -> bool:
            now = time.process_time()
            last = now - marks[-1]
            marks.append(now)
            loads.append(os.getloadavg()[0])
            curve.append({"epoch": int(row["epoch"]), "cpu_s": round(now - cpu0, 1),
                          "wall_s": round(time.perf_counter() - wall0, 1), "loss": round(row["loss"], 4),
                          "val_loss": round(row["val_loss"], 4)})
            print(f"{dataset} {model} epoch {int(row['epoch'])} loss {row['loss']:.4f} val_loss {row['val_loss']:.4f}"
                  f" ({now - cpu0:.0f} cpu-s)", file=sys.stderr, flush=True)
            return now - cpu0 + last > budget

        fit = train_from_config(cfg, device="cpu", quiet=True, on_epoch_end=within_budget)
        train_cpu, train_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        result = evaluate_from_config(cfg, device="cpu", quiet=True, report=False)
        speeds = sorted(r["images_per_s"] for r in fit.history if "images_per_s" in r)
        return {
            "dataset": dataset, "model": model, "encoder": ENCODER if model in SMP else None,
            "epochs": fit.epochs_run, "best_epoch": fit.best_epoch,
            "images_seen": fit.epochs_run * cfg.train.steps_per_epoch * cfg.train.batch_size,
            "train_images_per_s_median_epoch": round(speeds[len(speeds) // 2], 2) if speeds else None,
            "train_cpu_s": round(train_cpu, 1), "train_wall_s": round(train_wall, 1), "budget_cpu_s": budget,
            "test_images": len(result.per_image),
            "per_class": {name: {k: round(v[k], 4) for k in ("dice", "iou", "dice_image_mean", "iou_image_mean")
                                 if v.get(k) is not None}
                          for name, v in result.per_class.items()},
            "curve": curve, "load_average_1m": [round(x, 2) for x in loads], "machine": machine_info(),
        }


def run_all(budget: float, jobs: int, models: list[str], datasets: list[str]) -> None:
    """Each (dataset, model) pair in its own process, `jobs` at a time; a finished pair's file is not re-run."""
    RUNS.mkdir(parents=True, exist_ok=True)
    pairs = [(d, m) for d in datasets for m in models if not (RUNS / f"{d}__{m}.json").is_file()]

    def launch(pair: tuple[str, str]) -> int:
        dataset, model = pair
        env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = (RUNS / f"{dataset}__{model}.log").open("w")
        return subprocess.call([sys.executable, __file__, "run", "--dataset", dataset, "--model", model,
                                "--budget", str(budget)], env=env, stdout=log, stderr=subprocess.STDOUT)

    with ThreadPoolExecutor(jobs) as pool:
        for pair, code in zip(pairs, pool.map(launch, pairs), strict=True):
            print(pair, "exit", code, flush=True)


def measure_cost(model: str) -> dict[str, object]:
    """Parameters and GFLOPs per image of `model` as it was trained here (smp rows on ENCODER), 1 class, 256x256."""
    from flexunet.config.load import config_from_dict
    from flexunet.models.inspect import inspect_model

    net = architecture(model) | {"image_height": 256, "image_width": 256, "num_classes": 1}
    summary = inspect_model(config_from_dict({"model": net}))
    return {"params": summary.params, "gflops": round(summary.flops / 1e9, 2)}


def table() -> None:
    """Gather the per-run files into model_zoo_train.json and the markdown table model_zoo.md."""
    rows = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    cost = {m: measure_cost(m) for m in sorted({r["model"] for r in rows})}
    budget = rows[0]["budget_cpu_s"] if rows else 0
    out = {"command": "python benchmarks/model_zoo_train.py all --budget %g --jobs 2" % budget,
           "budget_cpu_s": budget, "encoder_weights": "none (random init: no network on the benchmark machine)",
           "runs": rows}
    (RESULTS / "model_zoo_train.json").write_text(json.dumps(out, indent=2) + "\n")
    machine = rows[0]["machine"] if rows else {}
    lines = [
        "# Model zoo: size, cost, CPU training speed, and test Dice/IoU per class after an equal budget", "",
        f"Written by `benchmarks/model_zoo_train.py` ({machine.get('cpu_model')}, flags "
        f"{', '.join(machine.get('cpu_flags', []))}, torch {machine.get('torch')}, {machine.get('date', '')[:10]}).",
        f"Budget: {budget:g} CPU seconds of training per model (1 torch thread, no loader workers; two runs side by",
        "side on the 2 cores), validation after every epoch included; best.pt by val_loss is evaluated. Adam 1e-3,",
        f"batch 4, default augmentation, **random-init encoders** (smp rows on {ENCODER}; no pretrained",
        "weights can be downloaded on the benchmark machine, so what `encoder_weights = \"imagenet\"` adds is not",
        "measured here).",
        "Parameters and GFLOPs per image at 256×256 (1 class) of each model as trained (flexunet.models.inspect).", "",
    ]
    for dataset in DATASETS:
        these = [r for r in rows if r["dataset"] == dataset]
        if not these:
            continue
        classes = [c for c in these[0]["per_class"] if c not in ("background", "class_0")]
        lines += [{"pap-smear-grouped": "## Pap smear, grouped split (binary, 128 px; 260 test images of cells "
                                        "never seen in training)",
                   "cervical-cancer": "## Cervical-cancer mini set (4 classes, 256 px; 6 train / 3 valid / 3 test "
                                      "images — a smoke check, not a ranking)"}[dataset], ""]
        head = ("| model | encoder | parameters | GFLOPs (256²) | train img per CPU-s (1 thread) | epochs "
                "| images seen |")
        head += "".join(f" Dice {c} | IoU {c} |" for c in classes)
        lines += [head, "|" + "---|" * (6 + 2 * len(classes) + 1)]
        for r in sorted(these, key=lambda r: -sum(r["per_class"][c]["dice"] for c in classes)):
            c0 = cost.get(r["model"], {})
            cells = "".join(f" {r['per_class'][c]['dice']:.4f} | {r['per_class'][c]['iou']:.4f} |" for c in classes)
            lines.append(f"| {r['model']} | {r['encoder'] or '—'} | {c0.get('params', 0):,} | {c0.get('gflops', '')} | "
                         f"{r['images_seen'] / r['train_cpu_s']:.2f} | {r['epochs']} | {r['images_seen']:,} |{cells}")
        lines.append("")
    lines += ["Dice/IoU are dataset-level (all test pixels pooled) per class, background excluded; per-image means and "
              "the validation curves (CPU seconds, loss, val_loss per epoch) are in model_zoo_train.json.",
              "Speed is training images per CPU second of the run, validation included: unlike wall-clock img/s it "
              "does not change when other processes share the cores.",
              "Load averages during each run are recorded there too."]
    (RESULTS / "model_zoo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("run")
    one.add_argument("--dataset", choices=DATASETS, required=True)
    one.add_argument("--model", required=True)
    one.add_argument("--budget", type=float, default=600.0)
    every = sub.add_parser("all")
    every.add_argument("--budget", type=float, default=600.0)
    every.add_argument("--jobs", type=int, default=2)
    every.add_argument("--models", nargs="*", default=MODELS)
    every.add_argument("--datasets", nargs="*", default=DATASETS)
    sub.add_parser("table")
    args = parser.parse_args()
    if args.what != "table" and not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data is not there")
    if args.what == "run":
        row = run_one(args.dataset, args.model, args.budget)
        RUNS.mkdir(parents=True, exist_ok=True)
        (RUNS / f"{args.dataset}__{args.model}.json").write_text(json.dumps(row, indent=2) + "\n")
    elif args.what == "all":
        run_all(args.budget, args.jobs, args.models, args.datasets)
    else:
        table()


if __name__ == "__main__":
    main()
