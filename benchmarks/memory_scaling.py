"""Peak RSS of `flexunet train` does not grow with the dataset: 2,000 vs 20,000 generated image/mask pairs.

    python benchmarks/memory_scaling.py [--sizes 2000 20000] [--steps 20] [--keep DIR]

Generates small (32x32) PNG pairs, then trains each dataset in its own process through `train_from_config` (the
`flexunet train` API) for a fixed number of steps and records the process's peak RSS (ru_maxrss). flexunet streams
pairs from disk, so only the file list grows with the dataset. Writes benchmarks/results/memory_scaling.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = 32


def generate(root: Path, n: int, seed: int = 0) -> None:
    """`n` random-noise images with a filled circle mask each (PNG); skipped if already there."""
    import cv2
    import numpy as np

    images, masks = root / "images", root / "masks"
    if images.is_dir() and len(os.listdir(images)) == n:
        return
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        cv2.circle(mask, (int(rng.integers(8, 24)), int(rng.integers(8, 24))), int(rng.integers(3, 8)), 255, -1)
        cv2.imwrite(str(images / f"{i:06d}.png"), image)
        cv2.imwrite(str(masks / f"{i:06d}.png"), mask)


def child(train_dir: Path, valid_dir: Path, steps: int, work: Path) -> dict:
    import torch

    from flexunet.config import config_from_dict
    from flexunet.train import train_from_config

    torch.set_num_threads(1)
    cfg = config_from_dict({
        "model": {"image_width": SIZE, "image_height": SIZE, "base_filters": 8, "num_layers": 3, "num_classes": 1,
                  "loss": "bce_iou_loss", "metrics": ["iou_coef"]},
        "train": {"images_dir": str(train_dir / "images"), "masks_dir": str(train_dir / "masks"), "epochs": 1,
                  "batch_size": 4, "steps_per_epoch": steps, "model_dir": str(work / "models"),
                  "eval_dir": str(work / "eval"), "epoch_change_infer": False},
        "valid": {"images_dir": str(valid_dir / "images"), "masks_dir": str(valid_dir / "masks")},
    })
    t0 = time.perf_counter()
    train_from_config(cfg, device="cpu", quiet=True)
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", help="folder for the generated data (default: a temporary folder)")
    parser.add_argument("--out", default=str(HERE / "results" / "memory_scaling.json"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        train_dir, valid_dir, work = map(Path, args.child)
        print(json.dumps(child(train_dir, valid_dir, args.steps, work)))
        return
    with tempfile.TemporaryDirectory(prefix="flexunet-memscale-") as tmp:
        root = Path(args.keep or tmp)
        generate(root / "valid", 64, seed=1)
        for n in args.sizes:
            t0 = time.perf_counter()
            generate(root / f"train_{n}", n)
            print(f"{n} pairs generated in {time.perf_counter() - t0:.0f} s", flush=True)
        runs: dict[str, list[dict]] = {str(n): [] for n in args.sizes}
        for r in range(args.repeats):
            for n in (args.sizes if r % 2 == 0 else args.sizes[::-1]):
                cmd = [sys.executable, __file__, "--steps", str(args.steps), "--child", str(root / f"train_{n}"),
                       str(root / "valid"), str(Path(tmp) / f"run_{n}_{r}")]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[str(n)].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(n, runs[str(n)][-1], flush=True)
    peaks = {n: max(x["peak_rss_mb"] for x in v) for n, v in runs.items()}
    small, large = str(min(args.sizes)), str(max(args.sizes))
    result = {"what": "peak RSS of train_from_config (flexunet train) on generated 32x32 PNG pairs, 8 filters, 3 levels",
              "steps": args.steps, "batch_size": 4, "peak_rss_mb": peaks, "ratio_large_to_small": peaks[large] / peaks[small],
              "within_10_percent": abs(peaks[large] / peaks[small] - 1) <= 0.10, "runs": runs,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(["python", "benchmarks/memory_scaling.py", *sys.argv[1:]])}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("peak_rss_mb", "ratio_large_to_small", "within_10_percent")}))


if __name__ == "__main__":
    main()
