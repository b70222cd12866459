"""Whole-slide inference memory and time: a generated 20,000 × 20,000 RGB tiled TIFF through `predict_slides`.

The slide (256-px zlib tiles, a smooth pattern with discs; written tile by tile, never whole) is segmented by a
small random-weight FlexUNet (8 filters, 3 levels: speed and memory do not depend on the weights) with 256-px
tiles, 32 px overlap, 8 tiles per forward pass, one thread, in a fresh process that reports its peak RSS (VmHWM)
before and after. The mask is a pyramidal tiled BigTIFF. The machine is shared (up to 4 agents on 2 cores): the
load average is recorded. Writes benchmarks/results/slides.json.

    python benchmarks/slides.py [--side 20000]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch
from machine import machine_info  # noqa: E402

from flexunet.config import config_from_dict
from flexunet.infer.slides import list_slides, predict_slides, require
from flexunet.labels import LabelSpace
from flexunet.models import build_model
from flexunet.predict import forward_probs, to_input

RESULT = Path(__file__).resolve().parent / "results" / "slides.json"
MODEL = {"image_width": 256, "image_height": 256, "num_classes": 1, "base_filters": 8, "num_layers": 3}
TILE, OVERLAP, BATCH = 256, 32, 8


def peak_rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def slide_tiles(side: int) -> object:
    """The slide's 256-px tiles in row-major order: background with discs, computed per tile."""
    yy, xx = np.mgrid[:TILE, :TILE]
    for top in range(0, side, TILE):
        for left in range(0, side, TILE):
            y, x = yy + top, xx + left
            disc = ((y % 97) - 48) ** 2 + ((x % 113) - 56) ** 2 < 30**2
            value = np.where(disc, 200, 50 + (x + y) % 40).astype(np.uint8)
            yield np.repeat(value[..., None], 3, axis=2)[: side - top, : side - left]


def write_slide(path: Path, side: int) -> None:
    tifffile = require("tifffile")
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(slide_tiles(side), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                  compression="zlib")


def child(folder: Path) -> None:
    """Runs in a fresh process: segment the slide, print one JSON line."""
    torch.set_num_threads(1)
    cfg = config_from_dict({"model": MODEL, "tiledinfer": {"overlapping": OVERLAP, "split_size": TILE},
                            "infer": {"batch_size": BATCH}}, base_dir=folder, source="bench")
    model = build_model(cfg.model).eval()
    space = LabelSpace.from_config(cfg)

    def probs_fn(tiles: np.ndarray) -> np.ndarray:
        return forward_probs(model, to_input(list(tiles), torch.device("cpu")), space).numpy()

    probs_fn(np.zeros((BATCH, TILE, TILE, 3), np.uint8))  # warm-up: allocations and kernel choice
    before = peak_rss_mb()
    began = time.perf_counter()
    result = predict_slides(list_slides(str(folder / "slides")), folder / "masks", probs_fn, cfg)
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
                      "written": [str(p) for p in result.written], "skipped": result.skipped}))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=20000)
    args = parser.parse_args()
    tifffile = require("tifffile")
    with tempfile.TemporaryDirectory(dir=os.environ.get("SLIDES_TMP")) as tmp:
        folder = Path(tmp)
        (folder / "slides").mkdir()
        began = time.perf_counter()
        write_slide(folder / "slides" / "generated.tif", args.side)
        generate_s = time.perf_counter() - began
        load_before = os.getloadavg()[0]
        out = subprocess.run([sys.executable, __file__, "--child", tmp], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode:
            raise SystemExit(out.stderr)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        load_after = os.getloadavg()[0]
        mask = folder / "masks" / "generated.tif"
        with tifffile.TiffFile(mask) as handle:
            levels = [list(level.shape) for level in handle.series[0].levels]
            tiled = handle.pages[0].is_tiled
        sizes = {"slide_mb": round((folder / "slides" / "generated.tif").stat().st_size / 2**20, 1),
                 "mask_mb": round(mask.stat().st_size / 2**20, 1)}
    starts = 1 + -(-(args.side - TILE) // (TILE - OVERLAP))
    report = {
        "what": "flexunet infer --slides path (predict_slides): tiled TIFF read band by band, Gaussian blend of the "
                "current band only, pyramidal tiled BigTIFF mask written from generators",
        "slide": f"{args.side}x{args.side} RGB uint8, 256-px zlib tiles, generated tile by tile",
        "raw_slide_mb": round(args.side * args.side * 3 / 2**20), **sizes,
        "model": MODEL, "tile": TILE, "overlap": OVERLAP, "tiles_per_forward": BATCH, "threads": 1,
        "tiles": starts * starts, "seconds": round(row["seconds"], 1),
        "tiles_per_s": round(starts * starts / row["seconds"], 1),
        "peak_rss_mb": round(row["peak_rss_mb"]), "rss_after_model_warmup_mb": round(row["rss_before_mb"]),
        "target_peak_rss_mb": 1536, "met": row["peak_rss_mb"] <= 1536,
        "mask_levels": levels, "mask_tiled": tiled, "generate_slide_s": round(generate_s, 1),
        "load_average_1m": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "caveat": "the machine has 2 cores shared by up to 4 agents: seconds vary with their load; the peak RSS "
                  "does not",
        "command": "python benchmarks/slides.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
