"""`flexunet infer` in one process vs `torchrun --nproc_per_node=2` (gloo, CPU), one thread per process.

A small FlexUNet (128 px input, 16 filters, 5 levels) is trained for one epoch on generated disc images through
`train_from_config` (speed does not depend on the weights), then 1 and 2 processes segment the same folder of
generated 256×256 images, alternating, each timed as a whole command (start-up, model load, process group,
reading, writing masks and overlays): what a user waits for. Masks of the two are compared byte for byte.
The machine is shared (up to 4 agents on 2 cores): the load average is recorded beside every timing.
Writes benchmarks/results/distributed_infer.json.

    python benchmarks/distributed_infer.py [--images 240] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cv2
import numpy as np
from machine import machine_info  # noqa: E402

from flexunet.config import load_config
from flexunet.train import train_from_config

RESULT = Path(__file__).resolve().parent / "results" / "distributed_infer.json"
MODEL = {"image_width": 128, "image_height": 128, "num_classes": 1, "base_filters": 16, "num_layers": 5,
         "dropout_rate": 0.0, "loss": "bce_dice_loss", "metrics": ["iou_coef"]}


def write_pairs(folder: Path, count: int, size: int, seed: int) -> None:
    """Bright noisy discs on a dark noisy background, with their 0/255 masks."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
        cv2.circle(mask, (int(cx), int(cy)), int(rng.integers(size // 8, size // 4)), 255, -1)
        image = np.where(mask[..., None] > 0, 200, 40) + rng.normal(0, 12, (size, size, 3))
        cv2.imwrite(str(folder / "images" / f"img_{i:04d}.png"), image.clip(0, 255).astype(np.uint8))
        cv2.imwrite(str(folder / "masks" / f"img_{i:04d}.png"), mask)


def write_config(root: Path) -> Path:
    sections = {
        "model": MODEL,
        "train": {"epochs": 1, "batch_size": 4, "model_dir": str(root / "models"), "eval_dir": str(root / "eval"),
                  "images_dir": str(root / "train" / "images"), "masks_dir": str(root / "train" / "masks"),
                  "epoch_change_infer": False},
        "valid": {"images_dir": str(root / "train" / "images"), "masks_dir": str(root / "train" / "masks")},
        "infer": {"images_dir": str(root / "many" / "images"), "output_dir": str(root / "out"),
                  "merged_dir": str(root / "merged"), "batch_size": 4},
    }
    lines = []
    for section, entries in sections.items():
        lines += [f"[{section}]"] + [f"{k} = {v!r}" for k, v in entries.items()]
    path = root / "bench.config"
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed_infer(config: Path, procs: int, output: Path) -> dict[str, object]:
    launch = [sys.executable, "-m", "flexunet"]
    if procs > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                  "--master_port", str(free_port()), "-m", "flexunet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    subprocess.run(launch + ["infer", str(config), "-q", "--output", str(output)], env=env, check=True,
                   capture_output=True, text=True)
    seconds = time.perf_counter() - began
    return {"processes": procs, "seconds": round(seconds, 2), "load_average_1m_before": round(load_before, 2),
            "load_average_1m_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_pairs(root / "train", 8, 128, seed=0)
        write_pairs(root / "many", args.images, 256, seed=1)
        config = write_config(root)
        train_from_config(load_config(config), device="cpu", quiet=True)
        rows = []
        for repeat in range(args.repeats):
            order = (1, 2) if repeat % 2 == 0 else (2, 1)  # alternate which goes first
            for procs in order:
                row = timed_infer(config, procs, root / f"out_{procs}_{repeat}")
                row["images_per_s"] = round(args.images / float(row["seconds"]), 2)  # type: ignore[arg-type]
                rows.append({"repeat": repeat, **row})
                print(rows[-1])
        one = {p.name: p.read_bytes() for p in (root / "out_1_0").glob("*.png")}
        two = {p.name: p.read_bytes() for p in (root / "out_2_0").glob("*.png")}
    median = {procs: float(np.median([r["images_per_s"] for r in rows if r["processes"] == procs])) for procs in (1, 2)}
    info = machine_info()
    report = {
        "what": "flexunet infer (whole image, batch 4, masks + overlays) on a folder: 1 process vs torchrun 2 gloo "
                "processes, OMP_NUM_THREADS=1 each, whole-command wall clock (start-up included)",
        "images": args.images, "image_size": "256x256 RGB PNG", "model": MODEL,
        "weights": "1 epoch of train_from_config on 8 generated pairs (speed does not depend on them)",
        "masks_identical": one == two and len(one) == args.images,
        "runs": rows,
        "median_images_per_s": {"1_process": median[1], "2_processes": median[2]},
        "speedup_2_over_1": round(median[2] / median[1], 2),
        "caveat": "the machine has 2 cores shared by up to 4 agents: another agent's load takes cores from the "
                  "2-process run first; see each run's load average",
        "command": "python benchmarks/distributed_infer.py " + " ".join(sys.argv[1:]),
        "machine": info,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("masks_identical", "median_images_per_s", "speedup_2_over_1")}))


if __name__ == "__main__":
    main()
