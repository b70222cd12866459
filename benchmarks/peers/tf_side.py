"""The TF reference side of benchmarks/peers.py; runs in benchmarks/.venv-tf, no flexunet import.

The seed's Pap-Smear UNet in Keras (benchmarks/tf_reference/reference.py: 31 M parameters, bce_iou_loss, Adam 1e-4
clipvalue 0.5, batch 4, its own data pipeline with the images in memory, no augmentation), as
benchmarks/tf_reference/worker.py's quality mode trains it: epochs of 100 random batches with `model.fit`, then a
validation pass. The validation pass predicts the validation split once: its Dice (pooled, threshold 0.5) is the
curve, and its bce_iou_loss (per batch of 4, averaged, as Keras' evaluate) picks the best weights, as the seed's
ModelCheckpoint does on val_loss. Training stops when another epoch as long as the last would pass `--budget` CPU
seconds of this process.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tf_reference"))
import numpy as np  # noqa: E402
import reference as ref  # noqa: E402


def bce_iou_loss(y: np.ndarray, p: np.ndarray, batch: int) -> float:
    """The seed's loss on predictions, per batch of `batch` images and averaged (what keras' evaluate reports)."""
    losses = []
    for i in range(0, len(y), batch):
        t, q = y[i:i + batch].astype(np.float64), np.clip(p[i:i + batch].astype(np.float64), 1e-7, 1 - 1e-7)
        bce = -np.mean(t * np.log(q) + (1 - t) * np.log(1 - q))
        inter = np.sum(t * q)
        losses.append((bce + 1.0 - inter / np.sum(t + q - t * q)) / 2.0)
    return float(np.mean(losses))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, help="unused: the reference reads the JPEGs through the split file")
    parser.add_argument("--split-file", required=True)
    parser.add_argument("--budget", type=float, default=600.0, help="CPU seconds of this process")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--images", type=Path, default=Path("/work/shared/data/pap-smear"))
    args = parser.parse_args()
    wall0 = time.perf_counter()
    ref.set_threads(1)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    cfg = ref.PAP_SMEAR
    import csv

    with open(args.split_file, newline="") as handle:
        splits = {row["stem"]: row["split"] for row in csv.DictReader(handle)}
    sets = {s: ref.list_pairs(args.images, splits, s) for s in ("train", "valid", "test")}
    (xt, yt), (xv, yv) = ref.load_pairs(sets["train"]), ref.load_pairs(sets["valid"])
    model = ref.compiled_model(cfg)
    infer = tf.function(lambda images: model(tf.cast(images, tf.float32), training=False), reduce_retracing=True)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([infer(x[i:i + 16]).numpy() for i in range(0, len(x), 16)])  # (N, H, W, 1)

    rng = np.random.default_rng(args.seed)
    batch = cfg["batch_size"]
    per_epoch = args.steps_per_epoch * batch
    curve, best, best_weights, mark = [], float("inf"), None, time.process_time()
    while True:
        idx = rng.permutation(len(xt))[:per_epoch]
        fit = model.fit(xt[idx], yt[idx], batch_size=batch, epochs=1, shuffle=False, verbose=0)
        probs = predict(xv)
        val_loss = bce_iou_loss(yv, probs, batch)
        pred, truth = probs > 0.5, yv > 0.5
        dice = 2 * np.sum(pred & truth) / (np.sum(pred) + np.sum(truth))
        now = time.process_time()  # from this process's start: imports and loading the arrays included
        curve.append({"epoch": len(curve) + 1, "cpu_s": round(now, 1), "wall_s": round(time.perf_counter() - wall0, 1),
                      "loss": round(float(fit.history["loss"][-1]), 4), "val_loss": round(val_loss, 4),
                      "val_dice": round(float(dice), 4)})
        print(json.dumps(curve[-1]), flush=True)
        if val_loss < best:
            best, best_weights, best_epoch = val_loss, model.get_weights(), len(curve)
        last, mark = now - mark, now
        if now + last > args.budget:
            break
    train_cpu, train_wall = time.process_time(), time.perf_counter() - wall0

    model.set_weights(best_weights)
    cpu1 = time.process_time()
    xs, _ = ref.load_pairs(sets["test"])
    np.savez_compressed(args.out / "test.npz", probs=predict(xs)[..., 0].astype(np.float16),
                        stems=np.array([p[0].stem for p in sets["test"]]))
    (args.out / "side.json").write_text(json.dumps({
        "recipe": f"the seed's UNet in TF/Keras (benchmarks/tf_reference), bce_iou_loss, Adam {cfg['learning_rate']:g} "
                  f"clipvalue {cfg['clipvalue']}, batch {batch}, no augmentation, model.fit epochs of "
                  f"{args.steps_per_epoch} random batches; validation (pooled Dice, all {len(xv)} images) after each, "
                  "best by val_loss",
        "parameters": int(model.count_params()), "batch_size": batch, "curve": curve, "best_epoch": best_epoch,
        "images_seen": len(curve) * per_epoch, "train_cpu_s": round(train_cpu, 1), "train_wall_s": round(train_wall, 1),
        "predict_cpu_s": round(time.process_time() - cpu1, 1),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
