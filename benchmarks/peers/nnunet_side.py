"""The nnU-Net v2 side of benchmarks/peers.py: nnU-Net's own CLI, as its documentation has a user run it.

1. the prepared 128-px PNGs become Dataset501_PapSmear in nnU-Net's raw format (train + valid in imagesTr,
   test in imagesTs, dataset.json by nnU-Net's generate_dataset_json);
2. `nnUNetv2_plan_and_preprocess -d 501 -c 2d -np 1 -npfp 1 --verify_dataset_integrity`;
3. splits_final.json with one fold equal to our split (train -> train, valid -> val);
4. `nnUNetv2_train 501 2d 0 -tr nnUNetTrainer_Budget -device cpu` (nnUNetTrainer_Budget.py: the default trainer with
   epochs that fit the budget, stopping at it, 1 thread); nnUNet_n_proc_DA=0, so augmentation runs in the training
   process on the one thread;
5. nnU-Net's predictor (nnUNetPredictor, what nnUNetv2_predict runs, from checkpoint_best.pth) on the test images,
   outside the budget: without test-time augmentation (test.npz, as every other side predicts) and, with
   `--mirroring`, with nnU-Net's default mirroring too (test_mirroring.npz, scored as an extra; 4 forward passes per
   image). Through the Python API on 1 thread, sequentially: the CLI sets torch to every core and starts worker
   processes, which on this shared 2-core machine took ~10 s per image.
Steps 1-4 are counted in the budget: CPU seconds of this process and of every CLI process it ran. Runs in the
nnU-Net venv (benchmarks/peers/setup_venvs.sh nnunet); no flexunet import.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DATASET_ID, DATASET = 501, "Dataset501_PapSmear"
TRAINER = "nnUNetTrainer_Budget"


def cpu_s() -> float:
    """CPU seconds of this process and of the CLI processes it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def install_trainer() -> None:
    """Copy the trainer variant into nnU-Net's package, where nnUNetv2_train looks trainers up by class name."""
    import nnunetv2

    target = Path(nnunetv2.__file__).parent / "training" / "nnUNetTrainer" / "variants" / f"{TRAINER}.py"
    source = HERE / f"{TRAINER}.py"
    if not target.is_file() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)


def to_raw(data: Path, raw: Path) -> dict[str, list[str]]:
    """nnU-Net's raw layout: <stem>_0000.png images (RGB in one file), <stem>.png labels 0/1."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    stems = {}
    for split, images_dir in (("train", "imagesTr"), ("valid", "imagesTr"), ("test", "imagesTs")):
        (raw / images_dir).mkdir(parents=True, exist_ok=True)
        (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
        stems[split] = sorted(p.stem for p in (data / split / "images").glob("*.png"))
        for stem in stems[split]:
            shutil.copyfile(data / split / "images" / f"{stem}.png", raw / images_dir / f"{stem}_0000.png")
            if split != "test":
                shutil.copyfile(data / split / "masks" / f"{stem}.png", raw / "labelsTr" / f"{stem}.png")
    generate_dataset_json(str(raw), {0: "R", 1: "G", 2: "B"}, {"background": 0, "cell": 1},
                          len(stems["train"]) + len(stems["valid"]), ".png", dataset_name=DATASET)
    return stems


def run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)


def predict(fold: Path, images: Path, folder: Path, mirroring: bool, stems: list[str]) -> np.ndarray:
    """Labels (N, H, W) from nnU-Net's predictor on checkpoint_best.pth, 1 thread, one image after another."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    predictor = nnUNetPredictor(use_mirroring=mirroring, perform_everything_on_device=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(fold), (0,), "checkpoint_best.pth")
    predictor.predict_from_files_sequential(str(images), str(folder))
    return np.stack([np.asarray(Image.open(folder / f"{s}.png")) for s in stems]).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=600.0, help="CPU seconds, preprocessing included")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1, help="unused: nnU-Net seeds nothing by default")
    parser.add_argument("--split-file", help="unused: the prepared folders are the split")
    parser.add_argument("--mirroring", action="store_true", help="also score nnU-Net's default mirroring TTA")
    args = parser.parse_args()
    wall0, epoch0 = time.perf_counter(), time.time()
    bin_dir = Path(sys.executable).parent  # the venv's nnUNetv2_* commands
    work = args.out / "nnunet"
    if work.exists():
        shutil.rmtree(work)
    env = os.environ | {"nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "preprocessed"),
                        "nnUNet_results": str(work / "results"), "nnUNet_n_proc_DA": "0",
                        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    os.environ.update(env)  # generate_dataset_json reads nothing from it, but nnunetv2.paths does on import
    log = args.out / "nnunet.log"
    log.unlink(missing_ok=True)
    install_trainer()

    stems = to_raw(args.data, work / "raw" / DATASET)
    # the planner sets torch's threads to nnUNet_n_proc_DA, which must be positive there
    run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1",
         "--verify_dataset_integrity"], env | {"nnUNet_n_proc_DA": "1"}, log)
    preprocessed = work / "preprocessed" / DATASET
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": stems["train"], "val": stems["valid"]}]))
    prep_cpu, prep_wall = cpu_s(), time.perf_counter() - wall0

    curve_file = args.out / "nnunet_curve.jsonl"
    curve_file.unlink(missing_ok=True)
    train_env = env | {"PEERS_BUDGET_CPU_S": str(args.budget), "PEERS_CPU_BEFORE": str(prep_cpu),
                       "PEERS_CURVE": str(curve_file), "PEERS_WALL0": str(epoch0)}
    run([str(bin_dir / "nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu"], train_env, log)
    train_cpu, train_wall = cpu_s(), time.perf_counter() - wall0

    import torch

    fold = work / "results" / DATASET / f"{TRAINER}__nnUNetPlans__2d"
    predict_cpu = {}
    for name, mirroring in (("test.npz", False), ("test_mirroring.npz", True))[:2 if args.mirroring else 1]:
        cpu1 = cpu_s()
        labels = predict(fold, work / "raw" / DATASET / "imagesTs", work / name.removesuffix(".npz"), mirroring,
                         stems["test"])
        np.savez_compressed(args.out / name, labels=labels, stems=np.array(stems["test"]))
        predict_cpu[name.removesuffix(".npz")] = round(cpu_s() - cpu1, 1)

    curve = [json.loads(line) for line in curve_file.read_text().splitlines()]
    best = torch.load(fold / "fold_0" / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    weights = best["network_weights"]
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())["configurations"]["2d"]
    ema = [row["val_dice_ema"] for row in curve]
    best_epoch = int(np.argmax(ema)) + 1 if ema else 0
    iters = int(os.environ.get("PEERS_NNUNET_ITERS", "25"))
    batch = curve[0]["batch_size"] if curve else None
    (args.out / "side.json").write_text(json.dumps({
        "recipe": "nnU-Net v2 defaults through its CLI (plan_and_preprocess -c 2d, nnUNetTrainer: its planned "
                  f"network, Dice+CE with deep supervision, SGD 1e-2 poly, its augmentation) with epochs of {iters} "
                  f"iterations x batch {batch} (planned: {plans['batch_size']}) fitted to the budget "
                  "(nnUNetTrainer_Budget); validation: nnU-Net's pseudo Dice on validation patches each epoch, best "
                  "by its EMA; test predicted without test-time augmentation, as every side",
        # the decoder keeps a reference to the encoder, so the state dict lists the encoder twice
        "parameters": int(sum(v.numel() for k, v in weights.items() if not k.startswith("decoder.encoder."))),
        "batch_size": batch, "patch_size": plans["patch_size"], "curve": curve,
        "best_epoch": best_epoch, "images_seen": len(curve) * iters * batch,
        "train_cpu_s": round(train_cpu, 1), "train_wall_s": round(train_wall, 1),
        "preprocess_cpu_s": round(prep_cpu, 1), "preprocess_wall_s": round(prep_wall, 1),
        "predict_cpu_s": predict_cpu,
        "extra_predictions": {"with_mirroring_tta": "test_mirroring.npz"} if args.mirroring else {},
        "plan": {k: plans.get(k) for k in ("batch_size", "patch_size", "spacing", "normalization_schemes")}
        | {"features_per_stage": plans.get("architecture", {}).get("arch_kwargs", {}).get("features_per_stage")},
        "notes": [f"planning + preprocessing {prep_cpu:.0f} CPU s ({prep_wall:.0f} wall s), counted in the budget",
                  "validation Dice is nnU-Net's pseudo Dice on random validation patches (pooled per epoch); the "
                  "best checkpoint is by its exponential moving average"],
        "versions": {"nnunetv2": nnunetv2_version(), "torch": torch.__version__, "numpy": np.__version__},
    }, indent=2))


def nnunetv2_version() -> str:
    from importlib.metadata import version

    return version("nnunetv2")


if __name__ == "__main__":
    main()
