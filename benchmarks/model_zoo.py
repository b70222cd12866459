"""Parameters and FLOPs per image of every registered model at 256 x 256, 3 channels in, 1 class out.

Each model is built with its config defaults (only size and classes set), so the table shows what a config that
names the model gets. Counting only: nothing is trained, and no training speed or accuracy is measured here.
Writes benchmarks/results/model_zoo.json and model_zoo.md.

    python benchmarks/model_zoo.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from flexunet.config import config_from_dict
from flexunet.models import MODELS
from flexunet.models.inspect import inspect_model

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


def main() -> None:
    rows = [measure(name) for name in sorted(MODELS)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "model_zoo.json").write_text(json.dumps({"machine": machine_info(), "size": SIZE, "models": rows}, indent=2))
    (RESULTS / "model_zoo.md").write_text(to_markdown(rows))
    print(to_markdown(rows))


if __name__ == "__main__":
    main()
