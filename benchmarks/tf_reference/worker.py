"""TF reference side of benchmarks/run.py and benchmarks/quality.py; run with the TF venv's python.

    worker.py speed   --data DIR [--threads 2] [--warmup-steps 2] [--train-steps 12] [--b1-images 16] [--b16-batches 3]
    worker.py quality --data DIR --split grouped|leaky [--split-file CSV] --budget-s S --out NPZ [--threads 1]

Prints one JSON object on its last stdout line.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402

import reference as ref  # noqa: E402


def speed(args: argparse.Namespace) -> dict:
    ref.set_threads(args.threads)
    import tensorflow as tf

    cfg = ref.PAP_SMEAR
    batch = cfg["batch_size"]
    pairs = ref.list_pairs(Path(args.data), None)
    pairs = [p for p in pairs if p[0].parent.parent.name == "train"]
    n_train = (args.warmup_steps + args.train_steps) * batch
    t0 = time.perf_counter()
    x, y = ref.load_pairs(pairs[:n_train])
    load_s = time.perf_counter() - t0
    model = ref.compiled_model(cfg)
    params = ref.check(model)
    warm = args.warmup_steps * batch
    model.fit(x[:warm], y[:warm], batch_size=batch, epochs=1, shuffle=True, verbose=0)  # traces the train step
    t0 = time.perf_counter()
    model.fit(x[warm:], y[warm:], batch_size=batch, epochs=1, shuffle=True, verbose=0)
    train_s = time.perf_counter() - t0
    rss_train = ref.peak_rss_mb()

    infer = tf.function(lambda images: model(tf.cast(images, tf.float32), training=False), reduce_retracing=True)
    tests = [p for p in ref.list_pairs(Path(args.data), None) if p[0].parent.parent.name == "test"]
    need = max(args.b1_images, 16 * args.b16_batches)
    images = np.stack([ref.read_image(p[0]) for p in (tests * (need // max(len(tests), 1) + 1))[:need]])
    out = {}
    for b, n_batches in ((1, args.b1_images), (16, args.b16_batches)):
        infer(images[:b]).numpy()  # warm-up: trace for this shape
        t0 = time.perf_counter()
        for i in range(n_batches):
            infer(images[i * b:(i + 1) * b]).numpy()
        out[f"infer_img_s_b{b}"] = n_batches * b / (time.perf_counter() - t0)
    return {"side": "tf_reference", "parameters": params, "train_img_s": (n_train - warm) / train_s,
            "train_images_timed": n_train - warm, "peak_rss_mb_train": rss_train, "loader_img_s": n_train / load_s,
            **out, "versions": {"tensorflow": tf.__version__, "keras": __import__("keras").__version__,
                                "numpy": np.__version__}, "threads": args.threads}


def read_split(path: str) -> dict[str, str]:
    with open(path, newline="") as handle:
        return {row["stem"]: row["split"] for row in csv.DictReader(handle)}


def quality(args: argparse.Namespace) -> dict:
    ref.set_threads(args.threads)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    cfg = ref.PAP_SMEAR
    root = Path(args.data)
    if args.split == "leaky":  # the dataset's own folders: every valid/test cell also appears in train
        sets = {s: [p for p in ref.list_pairs(root, None) if p[0].parent.parent.name == s] for s in ("train", "valid", "test")}
    else:
        splits = read_split(args.split_file)
        sets = {s: ref.list_pairs(root, splits, s) for s in ("train", "valid", "test")}
    (xt, yt), (xv, yv) = ref.load_pairs(sets["train"]), ref.load_pairs(sets["valid"])
    model = ref.compiled_model(cfg)
    rng = np.random.default_rng(args.seed)
    per_epoch = args.steps_per_epoch * cfg["batch_size"]
    best, best_weights, history = float("inf"), None, []
    began = time.perf_counter()
    last = 0.0
    while True:
        t0 = time.perf_counter()
        idx = rng.permutation(len(xt))[:per_epoch]
        fit = model.fit(xt[idx], yt[idx], batch_size=cfg["batch_size"], epochs=1, shuffle=False, verbose=0)
        val = model.evaluate(xv, yv, batch_size=cfg["batch_size"], verbose=0, return_dict=True)
        last = time.perf_counter() - t0
        history.append({"loss": float(fit.history["loss"][-1]), "val_loss": float(val["loss"]),
                        "val_iou_coef": float(val["iou_coef"]), "seconds": last})
        print(json.dumps({"epoch": len(history), **history[-1]}), file=sys.stderr, flush=True)
        if val["loss"] < best:
            best, best_weights, best_epoch = float(val["loss"]), model.get_weights(), len(history)
        elapsed = time.perf_counter() - began
        if elapsed + last > args.budget_s:  # the next epoch would end past the budget: stop (same rule as flexunet)
            break
    train_seconds = time.perf_counter() - began
    model.set_weights(best_weights)
    xs, _ = ref.load_pairs(sets["test"])
    infer = tf.function(lambda images: model(tf.cast(images, tf.float32), training=False), reduce_retracing=True)
    probs = np.concatenate([infer(xs[i:i + 16]).numpy() for i in range(0, len(xs), 16)])[..., 0]
    np.savez_compressed(args.out, probs=probs.astype(np.float16), stems=np.array([p[0].stem for p in sets["test"]]))
    return {"side": "tf_reference", "split": args.split, "epochs": len(history), "steps_per_epoch": args.steps_per_epoch,
            "images_seen": len(history) * per_epoch, "train_seconds": train_seconds, "best_epoch": best_epoch,
            "best_val_loss": best, "history": history, "threads": args.threads, "test_images": len(xs),
            "train_images": len(xt), "valid_images": len(xv), "peak_rss_mb": ref.peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["speed", "quality"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=12)
    parser.add_argument("--b1-images", type=int, default=16)
    parser.add_argument("--b16-batches", type=int, default=3)
    parser.add_argument("--split", choices=["grouped", "leaky"], default="grouped")
    parser.add_argument("--split-file")
    parser.add_argument("--budget-s", type=float, default=600)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=137)
    parser.add_argument("--out")
    args = parser.parse_args()
    result = speed(args) if args.mode == "speed" else quality(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
