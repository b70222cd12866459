"""Tiled (sliding-window) inference on CPU: megapixels/s for the pap-smear FlexUNet, peak RSS for an 8000×8000 image.

Throughput: the pap-smear model (128 px tiles, 16 filters, 7 levels, 31.1 M parameters, random weights: speed does
not depend on them) on one image at several overlaps; megapixels/s counts image pixels, so overlap costs show.
Memory: each case runs in a fresh process that reads a PNG, runs `predict_folder` with a tiled Predictor and writes the mask,
and reports its peak RSS (VmHWM, reset after a warm-up call) and the RSS before the image was read. The 8000×8000 case uses a one-layer
stand-in model (the pap-smear model would take most of an hour on 2 cores), so it measures what grows with the
image; the pap-smear model's own share at the same tile batch is measured on a small image and adds to it.
No GPU was available in the session that wrote the results. Writes benchmarks/results/tiled_infer.json.

    python benchmarks/tiled_infer.py [--side 8000] [--throughput-size 384]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

import cv2
import numpy as np
import torch
from torch import nn

from flexunet.config import config_from_dict
from flexunet.infer.predict import FileSettings, predict_folder
from flexunet.predict import predictor_from_config
from flexunet.predict.tiling import tile_boxes
from flexunet.models import build_model

RESULT = Path(__file__).resolve().parent / "results" / "tiled_infer.json"
PAP_MODEL = {"image_width": 128, "image_height": 128, "image_channels": 3, "num_classes": 1, "base_filters": 16,
             "num_layers": 7, "dropout_rate": 0.07, "base_kernels": (3, 3), "dilation": (1, 1)}
TILE_BATCH = 4

def reset_peak_rss() -> None:
    """Start the peak over: ru_maxrss survives exec, so a child would report its parent's peak (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """VmHWM: the peak resident set size since the last reset."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def synthetic_image(height: int, width: int) -> np.ndarray:
    """Smooth blobs and gradients: compresses well as PNG, so writing an 8000² input stays quick."""
    y, x = np.ogrid[:height, :width]
    r = (128 + 100 * np.sin(x / 211.0) * np.cos(y / 157.0)).astype(np.uint8)
    g = ((x * 255 // max(width - 1, 1)) + 0 * y).astype(np.uint8)
    b = ((y * 255 // max(height - 1, 1)) + 0 * x).astype(np.uint8)
    return np.dstack([np.broadcast_to(c, (height, width)) for c in (r, g, b)])


class StandIn(nn.Module):
    """One 3x3 convolution: the cheapest model with the pap-smear model's input and output shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def child(kind: str, side: int, overlap: int, folder: Path) -> None:
    """Runs in a fresh process: one tiled pass over `folder`/images, then prints a JSON line."""
    torch.set_num_threads(torch.get_num_threads())
    cfg = config_from_dict({"model": PAP_MODEL, "tiledinfer": {"overlapping": overlap}, "infer": {"batch_size": TILE_BATCH}},
                           base_dir=folder, source="bench")
    model = (build_model(cfg.model) if kind == "pap" else StandIn()).eval()
    with torch.no_grad():  # warm-up: the first call allocates and picks kernels
        model(torch.rand(TILE_BATCH, 3, 128, 128))
    reset_peak_rss()
    before = peak_rss_mb()
    began = time.perf_counter()
    predictor = predictor_from_config(cfg, model, torch.device("cpu"), tiled=True)
    result = predict_folder(predictor, FileSettings.from_config(cfg, tiled=True), str(folder / "images"),
                            folder / "masks", None)
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(), "written": len(result.written)}))


def run_child(kind: str, side: int, overlap: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        cv2.imwrite(str(folder / "images" / f"side{side}.png"), synthetic_image(side, side))
        out = subprocess.run([sys.executable, __file__, "--child", kind, str(side), str(overlap), tmp],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
    tiles = len(tile_boxes(max(side, 128), max(side, 128), 128, overlap))
    return {"model": kind, "image": f"{side}x{side}", "tile": 128, "overlap": overlap, "tile_batch": TILE_BATCH, "tiles": tiles,
            "seconds": round(row["seconds"], 2), "megapixels_per_s": round(side * side / 1e6 / row["seconds"], 4),
            "tiles_per_s": round(tiles / row["seconds"], 2), "rss_before_image_mb": round(row["rss_before_mb"]),
            "peak_rss_mb": round(row["peak_rss_mb"]), "peak_minus_before_mb": round(row["peak_rss_mb"] - row["rss_before_mb"])}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--throughput-size", type=int, default=384)
    args = parser.parse_args()
    throughput = [run_child("pap", args.throughput_size, overlap) for overlap in (0, 32, 64)]
    for row in throughput:
        print(row)
    small = run_child("standin", args.throughput_size, 0)
    large = run_child("standin", args.side, 0)
    print(small, large, sep="\n")
    pap_share = throughput[0]["peak_minus_before_mb"] - small["peak_minus_before_mb"]
    side = args.side
    info = machine_info()
    report = {
        "what": "tiled inference (flexunet infer --tiled path: read PNG, sliding window, Gaussian blend, write mask) on CPU",
        "gpu": "not available in this session: CPU only",
        "caveat": f"load average {info['load_average_1m']} on {info['cores_usable']} usable cores at the end of the run; "
                  "on a shared machine the pap-model timings vary several-fold between cases and runs (the first "
                  "case also pays for thread start-up): compare tiles_per_s within one run only",
        "throughput_pap_smear_model": throughput,
        "memory": {
            "standin_small": small, "standin_large": large,
            "pap_model_extra_at_tile_batch_mb": pap_share,
            "estimated_peak_rss_pap_model_large_mb": large["peak_rss_mb"] + max(pap_share, 0),
            "theory_mb": {
                "image_uint8": round(side * side * 3 / 2**20), "probs_float32_c1": round(side * side * 4 / 2**20),
                "labels_and_mask_uint8": round(2 * side * side / 2**20),
                "not_needed_float_input_and_weight_map": round(side * side * (12 + 4) / 2**20),
            },
            "note": "the blended map accumulates on the CPU; only TILE_BATCH tiles are on the device; the weight "
                    "normaliser is two 1-D vectors (separable Gaussian grid), and the image stays uint8",
        },
        "command": "python benchmarks/tiled_infer.py " + " ".join(sys.argv[1:]),
        "machine": info,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["memory"], indent=1))


if __name__ == "__main__":
    main()
