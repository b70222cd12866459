"""Time to a good model: flexunet against the tools a user would pick instead, at the same budget (issue 28).

Six sides train on the grouped pap-smear split (benchmarks/splits/pap_smear_grouped.csv: 197 source cells x 13
flips/rotations, split by cell, so no cell is in two splits) at 128 x 128 for the same budget, 1 thread each:

    tf_reference   the seed's UNet in TF/Keras (benchmarks/tf_reference), bce_iou_loss, Adam 1e-4, batch 4
    smp            what an smp user writes: smp.Unet("resnet34", encoder_weights=None), DiceLoss + BCE, Adam, a plain
                   PyTorch loop and DataLoader (benchmarks/peers/smp_side.py; no flexunet import)
    monai          MONAI BasicUNet, DiceCELoss, MONAI transforms and DiceMetric (benchmarks/peers/monai_side.py)
    nnunet         nnU-Net v2 through its own CLI: plan_and_preprocess, train 2d fold 0 with a splits_final.json equal
                   to our split, a trainer variant that stops at the budget (benchmarks/peers/nnunet_side.py)
    flexunet_seed  flexunet with the seed's recipe (the pap-smear seed config: 31 M UNet, lr 1e-4, bce_iou_loss)
    flexunet_best  flexunet with its best documented recipe (results/model_zoo.md: 7.8 M FlexUNet, lr 1e-3,
                   bce_dice_loss, as model_zoo_train.py trains it); both flexunet sides through train_from_config

The budget is counted in *the side's own CPU seconds* (its process and every child it waited for: nnU-Net's CLI
calls, preprocessing included). On an idle core that equals wall-clock seconds, and unlike wall-clock seconds it stays
fair when other work loads the machine (this 2-core machine is shared and runs two sides at a time). Each side stops
at the first validation after which another interval as long as the last would pass the budget, keeps its
best-validation weights (by its own library's usual criterion), and predicts the test images. Wall seconds and the
1-minute load average (every 30 s) are recorded beside the CPU seconds.

Every side is scored here by one function, `score`, on flexunet's decoded test labels with flexunet's metric code:
foreground Dice/IoU per image (mean) and pooled over the test set, with 95% intervals from a bootstrap that resamples
the source cells of the split file's `group` column (the 13 copies of a cell are one draw, not 13).

    python benchmarks/peers.py run --side smp --budget 20             # one side (smoke); writes peers_runs/smp.json
    python benchmarks/peers.py all --budget 600 --jobs 2 --resume     # every side, two at a time
    python benchmarks/peers.py table                                  # peers.json, peers.md, peers.png
    FLEXUNET_PEERS_RUNS=benchmarks/results/peers_runs_1800 python benchmarks/peers.py all --budget 1800 --jobs 1 \
        --sides flexunet_best monai smp --resume && ... table --stem peers_1800   # the longer budget, its own table

Venvs (git-ignored): benchmarks/peers/setup_venvs.sh makes .venv-peers (torch, smp, MONAI, flexunet) and
.venv-nnunet; benchmarks/tf_reference/setup_venv.sh makes .venv-tf. Run this script with .venv-peers' python.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
DATA = Path(os.environ.get("FLEXUNET_PAP_SMEAR", "/work/shared/data/pap-smear"))
SPLIT_FILE = HERE / "splits" / "pap_smear_grouped.csv"
RESULTS = HERE / "results"
RUNS = Path(os.environ.get("FLEXUNET_PEERS_RUNS", RESULTS / "peers_runs"))  # another folder for smoke runs
WORK = Path(os.environ.get("FLEXUNET_PEERS_WORK", "/tmp/flexunet-peers"))  # prepared data, checkpoints, predictions
SIDES = ["flexunet_best", "smp", "monai", "tf_reference", "flexunet_seed", "nnunet", "flexunet_best_aug"]
PYTHON = {"tf_reference": HERE / ".venv-tf" / "bin" / "python", "nnunet": HERE / ".venv-nnunet" / "bin" / "python"}
SCRIPT = {"tf_reference": HERE / "peers" / "tf_side.py", "smp": HERE / "peers" / "smp_side.py",
          "monai": HERE / "peers" / "monai_side.py", "nnunet": HERE / "peers" / "nnunet_side.py",
          "flexunet_seed": HERE / "peers" / "flexunet_side.py", "flexunet_best": HERE / "peers" / "flexunet_side.py",
          "flexunet_best_aug": HERE / "peers" / "flexunet_side.py"}
LOAD_EVERY_S = 30
MACHINE_KEYS = ("cpu_model", "cpu_flags", "cores_usable")  # sides that differ in these are not put in one table


def grouped_config(work: Path, overrides: tuple[str, ...] = ()):
    """The seed config on the grouped split: what flexunet decodes the masks with (blur, threshold 60)."""
    from flexunet.config import load_config

    data = [f"{s}.images_dir={DATA}/*/images/" for s in ("train", "valid", "test")]
    data += [f"{s}.masks_dir={DATA}/*/masks/" for s in ("train", "valid", "test")]
    data += [f"{s}.split_file={SPLIT_FILE}" for s in ("train", "valid", "test")]
    return load_config(HERE.parent.parent / "shared" / "data" / "configs" / "pap-smear.config",
                       [*data, f"train.model_dir={work}/models", f"train.eval_dir={work}/eval", *overrides])


def prepare(work: Path) -> Path:
    """<work>/data/{train,valid,test}/{images,masks}/<stem>.png: RGB images and 0/1 label masks decoded by flexunet.

    The PyTorch peers and nnU-Net read these, so every side learns the same labels that `score` tests against
    (the TF reference decodes the JPEG masks itself, the same way: 3x3 blur, > 60). Written once; not in any budget.
    """
    from PIL import Image

    from flexunet.data.dataset import make_dataset, pairs_for

    root = work / "data"
    if (root / "done").is_file():
        return root
    cfg = grouped_config(work)
    for split in ("train", "valid", "test"):
        dataset = make_dataset(cfg, pairs_for(cfg, split))
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i, pair in enumerate(dataset.pairs):
            image, labels, _ = dataset.load(i)  # (H, W, 3) uint8, (H, W) uint8 in {0, 1}
            Image.fromarray(image).save(root / split / "images" / f"{pair.stem}.png")
            Image.fromarray(labels).save(root / split / "masks" / f"{pair.stem}.png")
    (root / "done").write_text("ok\n")
    return root


def score(predictions: dict[str, object], work: Path, resamples: int = 2000) -> dict[str, object]:
    """Foreground Dice/IoU of `predictions` (stem -> (H, W) probabilities, > 0.5 is foreground, or 0/1 labels) on
    the test split, with flexunet's labels and metric code; 95% intervals by resampling the split file's groups."""
    import numpy as np
    import torch

    from flexunet.data.dataset import make_dataset, pairs_for
    from flexunet.data.split_file import read_split_groups
    from flexunet.evaluate.groups import image_resampling
    from flexunet.metrics.bootstrap import bootstrap_counts_metric, bootstrap_mean
    from flexunet.metrics.counts import confusion_counts, dice, iou, nanmean

    cfg = grouped_config(work)
    dataset = make_dataset(cfg, pairs_for(cfg, "test"))
    stems = [p.stem for p in dataset.pairs]
    missing = [s for s in stems if s not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} test images have no prediction, e.g. {missing[0]}")
    truth = torch.stack([dataset[i][1] for i in range(len(dataset))]).long()  # (N, H, W)
    pred = torch.from_numpy(np.stack([np.asarray(predictions[s], dtype=np.float32) > 0.5 for s in stems])).long()
    counts = confusion_counts(pred, truth, 2).foreground()  # (N, 1)
    groups = image_resampling(stems, read_split_groups(SPLIT_FILE), str(SPLIT_FILE.name))
    out: dict[str, object] = {"test_images": len(stems), "resampling": groups.to_dict(), "resamples": resamples}
    for name, metric in (("dice", dice), ("iou", iou)):
        per_image = metric(counts)  # (N, 1)
        pooled = bootstrap_counts_metric(counts, metric, resamples, groups=groups.groups)
        mean = bootstrap_mean(per_image, resamples, groups=groups.groups)
        out[f"{name}_image_mean"] = round(float(nanmean(per_image[:, 0])), 4)
        out[f"{name}_image_mean_ci95"] = [round(float(mean.low[0]), 4), round(float(mean.high[0]), 4)]
        out[f"{name}_dataset"] = round(float(metric(counts.total())[0]), 4)
        out[f"{name}_dataset_ci95"] = [round(float(pooled.low[0]), 4), round(float(pooled.high[0]), 4)]
    return out


def load_predictions(npz: Path) -> dict[str, object]:
    import numpy as np

    saved = np.load(npz)
    values = saved["probs"] if "probs" in saved else saved["labels"]
    return dict(zip(saved["stems"].tolist(), values, strict=True))


def same_machine(a: dict[str, object], b: dict[str, object]) -> bool:
    return all(a.get(k) == b.get(k) for k in MACHINE_KEYS)


def run_side(side: str, budget: float, work: Path, seed: int) -> dict[str, object]:
    """Prepare the data, run one side in its own process (1 thread) with load samples, score its test predictions."""
    from machine import machine_info

    data = prepare(work)
    out = work / "runs" / side
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("side.json", "test.npz"):
        (out / stale).unlink(missing_ok=True)
    python = PYTHON.get(side, Path(sys.executable))
    if not python.is_file():
        raise FileNotFoundError(f"{python}: the {side} venv is missing (benchmarks/peers/setup_venvs.sh)")
    cmd = [str(python), str(SCRIPT[side]), "--data", str(data), "--split-file", str(SPLIT_FILE),
           "--budget", str(budget), "--out", str(out), "--seed", str(seed)]
    if side.startswith("flexunet_"):
        cmd += ["--recipe", side.removeprefix("flexunet_")]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                        "PYTHONPATH": str(HERE.parent)}
    loads: list[list[float]] = []
    done = threading.Event()
    began = time.perf_counter()

    def sample_load() -> None:
        while True:
            loads.append([round(time.perf_counter() - began, 1), round(os.getloadavg()[0], 2)])
            if done.wait(LOAD_EVERY_S):
                return

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code = subprocess.call(cmd, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - began
    done.set()
    sampler.join()
    loads.append([round(wall, 1), round(os.getloadavg()[0], 2)])
    if code != 0:
        raise RuntimeError(f"{side}: exit {code}")
    result = json.loads((out / "side.json").read_text())
    extras = result.get("extra_predictions", {})
    extra = {name: score(load_predictions(out / npz), work) for name, npz in extras.items()}
    return {"side": side, "budget_cpu_s": budget, "seed": seed, **result, "test_extra": extra,
            "process_cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "process_wall_s": round(wall, 1), "test": score(load_predictions(out / "test.npz"), work),
            "load_average_1m": loads, "machine": machine_info(), "command": " ".join(sys.argv)}


def run_all(budget: float, jobs: int, sides: list[str], resume: bool, seed: int) -> None:
    """Each side in its own `run` process, `jobs` at a time; with `resume`, a side done on this machine is skipped."""
    from machine import machine_info

    RUNS.mkdir(parents=True, exist_ok=True)
    prepare(WORK)  # once, before two sides race to write it
    here = machine_info()
    todo = []
    for side in sides:
        path = RUNS / f"{side}.json"
        if resume and path.is_file():
            done = json.loads(path.read_text())
            if same_machine(done["machine"], here) and done["budget_cpu_s"] == budget:
                print(f"{side}: done on this machine ({path}), skipped", flush=True)
                continue
        todo.append(side)

    def launch(side: str) -> int:
        with (RUNS / f"{side}.log").open("w") as log:
            return subprocess.call([sys.executable, __file__, "run", "--side", side, "--budget", str(budget),
                                    "--seed", str(seed)], stdout=log, stderr=subprocess.STDOUT)

    with ThreadPoolExecutor(jobs) as pool:
        for side, code in zip(todo, pool.map(launch, todo), strict=True):
            print(side, "exit", code, flush=True)


def table(stem: str = "peers") -> None:
    """<stem>.json, .md and .png from the per-side files in RUNS; refuses sides from different machines (the
    1,800-s runs: FLEXUNET_PEERS_RUNS=results/peers_runs_1800 ... table --stem peers_1800)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    if not rows:
        sys.exit(f"{RUNS}: no side has run")
    first = rows[0]["machine"]
    for r in rows[1:]:
        if not same_machine(first, r["machine"]):
            sys.exit(f"{r['side']} ran on {[r['machine'].get(k) for k in MACHINE_KEYS]}, {rows[0]['side']} on "
                     f"{[first.get(k) for k in MACHINE_KEYS]}: not one table (re-run one of them on the other)")
    budgets = sorted({r["budget_cpu_s"] for r in rows})
    rows.sort(key=lambda r: -r["test"]["dice_image_mean"])
    (RESULTS / f"{stem}.json").write_text(json.dumps({"budgets_cpu_s": budgets, "sides": rows}, indent=2) + "\n")

    def ci(t: dict, key: str) -> str:
        return f"{t[key]:.3f} [{t[key + '_ci95'][0]:.3f}, {t[key + '_ci95'][1]:.3f}]"

    lines = ["# Time to a good model: flexunet against the tools users would pick instead", "",
             f"Written by `benchmarks/peers.py table` from results/{RUNS.name}/ ({first.get('cpu_model')}, flags "
             f"{', '.join(first.get('cpu_flags', []))}, {first.get('cores_usable')} cores, "
             f"{first.get('date', '')[:10]}). Budget {', '.join(f'{b:g}' for b in budgets)} CPU seconds per side "
             "(the side's process and its children; 1 thread; one or two sides at a time on the 2 cores). CPU seconds, not "
             "wall seconds: on an idle core they are equal, and when other work shares the machine a side's wall time "
             "grows (column wall s, load average beside it) while its budget of computation stays the same.",
             "Grouped pap-smear split (197 cells x 13 flips/rotations; no cell in two splits): "
             f"{rows[0]['test']['test_images']} test images of "
             f"{rows[0]['test']['resampling']['count']} cells, 128 px. Test Dice/IoU of the foreground at the side's "
             "best-validation weights, scored by one function (flexunet's labels and metric code); [95% interval] "
             "from a bootstrap over the test cells.", "",
             "| side | parameters | test Dice, per-image mean | test Dice, pooled | test IoU, per-image mean "
             "| training CPU s | wall s | validations (best) | images seen | load avg (min–max) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, load = r["test"], [x[1] for x in r["load_average_1m"]]
        lines.append(f"| {r['side']} | {r.get('parameters', 0):,} | {ci(t, 'dice_image_mean')} | "
                     f"{ci(t, 'dice_dataset')} | {ci(t, 'iou_image_mean')} | {r['train_cpu_s']:.0f} | "
                     f"{r['train_wall_s']:.0f} | {len(r['curve'])} ({r['best_epoch']}) | {r['images_seen']:,} | "
                     f"{min(load):.2f}–{max(load):.2f} |")
    lines += ["", "Recipes, as each side's file says:", ""]
    lines += [f"- **{r['side']}**: {r['recipe']}" for r in rows]
    notes = [f"- {r['side']}: {n}" for r in rows for n in r.get("notes", [])]
    notes += [f"- {r['side']}, {name.replace('_', ' ')}: test Dice per-image mean {ci(t, 'dice_image_mean')}, pooled "
              f"{ci(t, 'dice_dataset')}" for r in rows for name, t in r.get("test_extra", {}).items()]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", "Versions: " + "; ".join(f"{r['side']}: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items())
                                            for r in rows), "",
              "Validation Dice per side is each library's own measure on the validation split (written in `recipe`); "
              f"the curves ({stem}.png, {stem}.json) are for time-to-quality, the test columns for comparing sides."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, clock, label in ((axes[0], "cpu_s", "CPU seconds of the side (budget clock)"),
                             (axes[1], "wall_s", "wall-clock seconds (one or two sides at a time on 2 shared cores)")):
        for r in rows:
            label_ = f"{r['side']} (test Dice {r['test']['dice_image_mean']:.3f})"
            ax.plot([c[clock] for c in r["curve"]], [c["val_dice"] for c in r["curve"]], marker=".", label=label_)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation Dice (each library's own measure)")
    lows = [min(r["curve"], key=lambda c: c["val_dice"])["val_dice"] for r in rows if r["curve"]]
    axes[0].set_ylim(max(0.0, min(lows) - 0.05) if lows else 0, 1.0)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Grouped pap-smear split, 128 px, 1 thread per side, {', '.join(f'{b:g}' for b in budgets)} CPU-s "
                 "budget")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}.png", dpi=110)
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("run")
    one.add_argument("--side", choices=SIDES, required=True)
    one.add_argument("--budget", type=float, default=600.0)
    one.add_argument("--seed", type=int, default=1)
    every = sub.add_parser("all")
    every.add_argument("--budget", type=float, default=600.0)
    every.add_argument("--jobs", type=int, default=2)
    every.add_argument("--sides", nargs="*", default=SIDES, choices=SIDES)
    every.add_argument("--resume", action="store_true", help="skip a side whose JSON exists for this machine")
    every.add_argument("--seed", type=int, default=1)
    tab = sub.add_parser("table")
    tab.add_argument("--stem", default="peers", help="file names of the table: <stem>.json, .md, .png")
    args = parser.parse_args()
    if args.what != "table" and not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data is not there")
    if args.what == "run":
        row = run_side(args.side, args.budget, WORK, args.seed)
        RUNS.mkdir(parents=True, exist_ok=True)
        (RUNS / f"{args.side}.json").write_text(json.dumps(row, indent=2) + "\n")
        print(json.dumps(row["test"]), flush=True)
    elif args.what == "all":
        run_all(args.budget, args.jobs, args.sides, args.resume, args.seed)
    else:
        table(args.stem)


if __name__ == "__main__":
    main()
