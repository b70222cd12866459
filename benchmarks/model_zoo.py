"""Parameters and FLOPs per image of every registered model at 256 x 256, 3 channels in, 1 class out.

Each model is built with its config defaults (only size and classes set), so the table shows what a config that
names the model gets. Counting only: nothing is trained, and no training speed or accuracy is measured here.
Writes benchmarks/results/model_zoo.json (model_zoo.md is model_zoo_train.py's table).

    python benchmarks/model_zoo.py

`--smp` measures only the smp-backed models (flexunet/models/smp_models.py) on their default encoders and adds a
short CPU training-step timing (Adam, batch 4 at 128 x 128, fp32, after warm-up steps; the 1-minute load average is
recorded before and after each model). It writes benchmarks/results/model_zoo_smp.json. That timing is a raw
step speed, not the converged-quality table (benchmarks/model_zoo_train.py trains for a time budget).

    python benchmarks/model_zoo.py --smp [NAME ...]   # only these, keeping the other rows
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from flexunet.config import config_from_dict
from flexunet.models import MODELS, build_model
from flexunet.models.inspect import inspect_model
from flexunet.models.smp_models import ARCHITECTURES, DEFAULT_ENCODER

SIZE = 256
RESULTS = Path(__file__).resolve().parent / "results"


def measure(name: str) -> dict[str, object]:
    """Parameters, GFLOPs and receptive field of `name` at SIZE x SIZE."""
    cfg = config_from_dict({"model": {"model": name, "image_height": SIZE, "image_width": SIZE, "num_classes": 1}})
    summary = inspect_model(cfg)
    return {
        "model": name,
        "params": summary.params,
        "gflops": round(summary.flops / 1e9, 2),
        "receptive_field": list(summary.receptive_field),
        "sees_whole_image": summary.sees_whole_image,
    }


def to_markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        f"# Model zoo at {SIZE}x{SIZE}, 3 channels, 1 class, config defaults",
        "",
        "| model | parameters | GFLOPs / image | receptive field (px) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        rf = "whole image" if r["sees_whole_image"] else "x".join(map(str, r["receptive_field"]))
        lines.append(f"| {r['model']} | {r['params']:,} | {r['gflops']:,} | {rf} |")
    lines += ["", "FLOPs: forward pass, a multiply-add counts 2 (torch.utils.flop_counter).",
              "CPU training speed and pap-smear IoU are not measured here."]
    return "\n".join(lines) + "\n"


SMP_MODELS = (*ARCHITECTURES, "efficient_unet", "efficientnet_b7_unet")
TRAIN_SIZE, TRAIN_BATCH, WARMUP_STEPS, TIMED_STEPS = 128, 4, 2, 5


def train_speed(name: str) -> dict[str, object]:
    """Images per second of plain training steps (forward, BCE loss, backward, Adam) on random data on the CPU."""
    cfg = config_from_dict({"model": {"model": name, "image_height": TRAIN_SIZE, "image_width": TRAIN_SIZE,
                                      "num_classes": 1}})
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(TRAIN_BATCH, 3, TRAIN_SIZE, TRAIN_SIZE)
    y = (torch.rand(TRAIN_BATCH, 1, TRAIN_SIZE, TRAIN_SIZE) > 0.5).float()
    load_before = round(os.getloadavg()[0], 2)
    for step in range(WARMUP_STEPS + TIMED_STEPS):
        if step == WARMUP_STEPS:
            began = time.perf_counter()
        optim.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optim.step()
    seconds = time.perf_counter() - began
    return {"train_images_per_s": round(TIMED_STEPS * TRAIN_BATCH / seconds, 2),
            "load_1m_before": load_before, "load_1m_after": round(os.getloadavg()[0], 2)}


def main_smp(names: list[str]) -> None:
    """Measure `names` (all smp models when empty); rows of models not measured now are kept from the file."""
    path = RESULTS / "model_zoo_smp.json"
    kept = json.loads(path.read_text())["models"] if names and path.is_file() else []
    rows = [r for r in kept if r["model"] not in names]
    for name in names or SMP_MODELS:
        encoder = DEFAULT_ENCODER.get(name, "resnet34") if name in ARCHITECTURES else {
            "efficient_unet": "efficientnet-b0", "efficientnet_b7_unet": "efficientnet-b7"}[name]
        row = {**measure(name), "encoder": encoder, **train_speed(name)}
        print(row, flush=True)
        rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    timing = {"size": TRAIN_SIZE, "batch": TRAIN_BATCH, "warmup_steps": WARMUP_STEPS, "timed_steps": TIMED_STEPS,
              "threads": torch.get_num_threads(), "optimizer": "Adam", "precision": "fp32"}
    note = ("params and GFLOPs at 256x256 (3 channels, 1 class); train_images_per_s: a short raw-step timing, "
            "comparable only between rows of similar load; no accuracy is measured here")
    rows.sort(key=lambda r: SMP_MODELS.index(str(r["model"])))
    out = {"machine": machine_info(), "size": SIZE, "train_timing": timing, "note": note, "models": rows}
    path.write_text(json.dumps(out, indent=2) + "\n")


def main() -> None:
    if "--smp" in sys.argv[1:]:  # --smp [NAME ...]
        main_smp([a for a in sys.argv[1:] if a != "--smp"])
        return
    rows = [measure(name) for name in sorted(MODELS)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "model_zoo.json").write_text(json.dumps({"machine": machine_info(), "size": SIZE, "models": rows}, indent=2))
    print(to_markdown(rows))


if __name__ == "__main__":
    main()
