"""`flexunet init --budget` against the best hand-written recipe trained for the same time (issue 29, item 3).

For each dataset and budget, two sides train on one thread, one after the other, and are scored on the same test
split by flexunet's evaluation (per class, background excluded):

    init   `flexunet init DATA --budget B` chooses network, input size, batch, epochs and augmentation on this
           machine; its config is trained as written, except that the benchmark's split file (and, on pap smear,
           the benchmark's mask threshold 60) replace init's own, so both sides meet the same test labels
    zoo    the best documented recipe (results/model_zoo.md: the 7.8 M FlexUNet, Adam 1e-3, batch 4, the recipe
           model_zoo_train.py trains) with `[train] time_budget = B`, so it too ends at the deadline

Wall-clock seconds are the budget's clock (the user's deadline); the 1-minute load average is sampled every 30 s
and recorded, since another process on the machine slows a side down. `finish_ratio` is the wall time of training
(train_from_config: data, model, epochs, the last saves) over the budget; init's own measuring time is reported
apart. Each run writes results/budget_runs/<dataset>__<minutes>m__<side>.json; a finished run on this machine is
not redone, and `table` refuses to mix machines.

    python benchmarks/budget.py run --dataset pap-smear-grouped --minutes 5     # both sides
    python benchmarks/budget.py all --minutes 5 15 45                           # every dataset, resumable
    python benchmarks/budget.py table                                           # budget.json + budget.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results"
RUNS = Path(os.environ.get("FLEXUNET_BUDGET_RUNS", RESULTS / "budget_runs"))  # another folder for smoke runs
DATA = Path(os.environ.get("FLEXUNET_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
DATASETS = {"pap-smear-grouped": ("pap-smear", "pap_smear_grouped.csv", ["mask.threshold=60"]),
            "cervical-cancer": ("mini_test/cervical-cancer", "cervical_mini.csv", [])}
SIDES = ("init", "zoo")


def _class_names_by_colour(cfg, zoo_cfg) -> list[str]:
    """init names classes by colour; give each of its labels the benchmark's name for that colour."""
    if zoo_cfg.model.num_classes == 1:
        return ["background", "class_1"]
    zoo = {colour: zoo_cfg.label_names[i] for colour, i in zoo_cfg.rgb_map.items()}
    names = ["background"] * max(cfg.model.num_classes, 2)
    for colour, i in cfg.rgb_map.items():
        names[i] = zoo[colour]
    return names


def run_side(dataset: str, minutes: float, side: str, work: Path) -> dict[str, object]:
    import torch
    from machine import LoadSampler, machine_info
    from model_zoo_train import sections

    from flexunet.config import load_config
    from flexunet.config.load import config_from_dict
    from flexunet.evaluate import evaluate_from_config
    from flexunet.init_project import init_project
    from flexunet.train import train_from_config

    torch.set_num_threads(1)
    folder, split_name, extra = DATASETS[dataset]
    split = HERE / "splits" / split_name
    budget = f"{minutes:g}m"
    zoo_values = sections(dataset, "flexunet", work)
    zoo_values["train"] |= {"time_budget": budget}
    zoo_cfg = config_from_dict(zoo_values, base_dir=work)
    plan_info: dict[str, object] = {}
    init_s = 0.0
    if side == "init":
        began = time.perf_counter()
        result = init_project(DATA / folder, work / "init.config", budget, "cpu", log=lambda _: None)
        init_s = time.perf_counter() - began
        plan = result.plan
        assert plan is not None
        plan_info = {"lines": list(result.lines), "model": plan.timing.candidate.label,
                     "parameters": plan.timing.parameters, "batch": plan.batch_size,
                     "steps_per_epoch": plan.steps_per_epoch, "validation_steps": plan.validation_steps,
                     "augment": plan.augment, "predicted_images": plan.images_seen,
                     "predicted_train_img_s": round(1 / plan.timing.train_s, 2)}
        overrides = [f"{s}.split_file={split}" for s in ("train", "valid", "test")] + extra
        cfg = load_config(work / "init.config", overrides)
        cfg = load_config(work / "init.config", [*overrides, f"mask.class_names={_class_names_by_colour(cfg, zoo_cfg)}"])
    else:
        cfg = zoo_cfg
    with LoadSampler() as load:
        began = time.perf_counter()
        fit = train_from_config(cfg, device="cpu", quiet=True)
        train_wall = time.perf_counter() - began
    evaluation = evaluate_from_config(cfg, device="cpu", quiet=True, report=False)
    images = sum(round(r["images_per_s"] * r["seconds"]) for r in fit.history)
    return {"dataset": dataset, "minutes": minutes, "side": side, "budget_s": minutes * 60,
            "train_wall_s": round(train_wall, 1), "finish_ratio": round(train_wall / (minutes * 60), 3),
            "init_s": round(init_s, 1), "plan": plan_info,
            "model": f"{cfg.model.model} base_filters {cfg.model.base_filters} num_layers {cfg.model.num_layers}",
            "input_size": [cfg.model.image_width, cfg.model.image_height], "batch": cfg.train.batch_size,
            "augment": cfg.model.generator, "epochs": fit.epochs_run, "best_epoch": fit.best_epoch,
            "stopped_by": fit.stopped_by, "images_seen": images, "test_images": len(evaluation.per_image),
            "per_class": {name: {k: round(v[k], 4) for k in ("dice", "iou", "dice_image_mean", "iou_image_mean")
                                 if v.get(k) is not None} for name, v in evaluation.per_class.items()},
            "mean_dice": round(evaluation.mean_dice, 4),
            "load_average_1m": load.samples, "machine": machine_info()}


def path_for(dataset: str, minutes: float, side: str) -> Path:
    return RUNS / f"{dataset}__{minutes:g}m__{side}.json"


def run_all(datasets: list[str], minutes: list[float], sides: list[str]) -> None:
    """Each run in its own process (1 thread), one at a time; a run done on this machine is skipped."""
    from machine import machine_info, same_machine

    RUNS.mkdir(parents=True, exist_ok=True)
    here = machine_info()
    for m in minutes:
        for dataset in datasets:
            for side in sides:
                path = path_for(dataset, m, side)
                if path.is_file() and same_machine(json.loads(path.read_text())["machine"], here):
                    print(f"{path.name}: done on this machine, skipped", flush=True)
                    continue
                env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                with path.with_suffix(".log").open("w") as log:
                    code = subprocess.call([sys.executable, __file__, "run", "--dataset", dataset, "--minutes",
                                            str(m), "--sides", side], env=env, stdout=log, stderr=subprocess.STDOUT)
                print(path.name, "exit", code, flush=True)


def table() -> None:
    from machine import same_machine

    rows = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    if not rows:
        sys.exit(f"{RUNS}: nothing has run")
    for r in rows[1:]:
        if not same_machine(rows[0]["machine"], r["machine"]):
            sys.exit(f"{r['dataset']} {r['minutes']}m {r['side']} ran on another machine than the first row: "
                     "not one table")
    rows.sort(key=lambda r: (r["dataset"], r["minutes"], r["side"]))
    (RESULTS / "budget.json").write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    m = rows[0]["machine"]
    out = ["# `flexunet init --budget` against the best hand-written recipe at the same time", "",
           f"Written by `benchmarks/budget.py table` ({m['cpu_model']}, flags {', '.join(m['cpu_flags'])}, "
           f"{m['cores_usable']} cores, torch {m['torch']}, 1 thread per run, {m['date'][:10]}). Wall-clock budget; "
           "training time is train_from_config's (data, model, epochs, last saves); init's own timing apart. "
           "Test scores per class, background excluded: dataset Dice (pooled pixels) and per-image mean. "
           "Pap smear: grouped split (benchmarks/splits/pap_smear_grouped.csv, no cell in two splits). "
           "Cervical: the 12-image mini set, 3 test images: a smoke check, not a ranking.", "",
           "| dataset | budget | side | model, input, batch, augmentation | training s (x budget) | init s | "
           "images seen | epochs | test Dice per class (pooled / per-image) | load avg (min-max) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        dice = "; ".join(f"{n} {v['dice']:.3f} / {v.get('dice_image_mean', float('nan')):.3f}"
                         for n, v in sorted(r["per_class"].items()))
        loads = [x for _, x in r["load_average_1m"]] or [0.0]
        what = (f"{r['plan'].get('model', 'model zoo: ' + r['model'])}, {r['input_size'][0]}x{r['input_size'][1]}, "
                f"batch {r['batch']}, aug {'on' if r['augment'] else 'off'}")
        out.append(f"| {r['dataset']} | {r['minutes']:g} min | {r['side']} | {what} | {r['train_wall_s']:.0f} "
                   f"({r['finish_ratio']:.2f}) | {r['init_s']:.0f} | {r['images_seen']:,} | {r['epochs']} | {dice} | "
                   f"{min(loads):.1f}-{max(loads):.1f} |")
    (RESULTS / "budget.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run")
    one.add_argument("--dataset", choices=list(DATASETS), required=True)
    one.add_argument("--minutes", type=float, required=True)
    one.add_argument("--sides", nargs="*", default=list(SIDES), choices=SIDES)
    every = sub.add_parser("all")
    every.add_argument("--minutes", type=float, nargs="+", default=[5, 15, 45])
    every.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    every.add_argument("--sides", nargs="*", default=list(SIDES), choices=SIDES)
    sub.add_parser("table")
    args = parser.parse_args()
    if args.command == "run":
        RUNS.mkdir(parents=True, exist_ok=True)
        for side in args.sides:
            with tempfile.TemporaryDirectory() as tmp:
                row = run_side(args.dataset, args.minutes, side, Path(tmp))
            path_for(args.dataset, args.minutes, side).write_text(json.dumps(row, indent=2) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k not in ("load_average_1m", "plan")}), flush=True)
    elif args.command == "all":
        run_all(args.datasets, args.minutes, args.sides)
    else:
        table()


if __name__ == "__main__":
    main()
