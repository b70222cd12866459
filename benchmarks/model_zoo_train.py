"""CPU training speed and pap-smear test IoU of every registered model after the same wall-clock budget.

Data: the shared pap-smear images re-split by source cell (benchmarks/splits/pap_smear_grouped.csv: no cell in two
splits), so the IoU measures segmentation of unseen cells. Every model trains through the real `flexunet train` path
(train_from_config) at 128 px, batch 4, Adam 1e-3, bce_dice_loss, its config defaults otherwise, for --budget seconds
of training; then `evaluate_from_config` scores the test split. A short budget ranks how fast each model learns on a
CPU, not how good it is at convergence. Writes benchmarks/results/model_zoo_train.json and model_zoo.md.

    python benchmarks/model_zoo_train.py --budget 60
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from flexunet.config import load_config  # noqa: E402
from flexunet.evaluate import evaluate_from_config  # noqa: E402
from flexunet.models import MODELS  # noqa: E402
from flexunet.train import train_from_config  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "pap-smear"
SPLIT_FILE = HERE / "splits" / "pap_smear_grouped.csv"
RESULTS = HERE / "results"
SIZE, BATCH = 128, 4

CONFIG = """[model]
model = "{model}"
image_width = {size}
image_height = {size}
num_classes = 1
learning_rate = 0.001
loss = "bce_dice_loss"
metrics = ["iou_coef"]
[train]
epochs = 1
batch_size = {batch}
steps_per_epoch = {steps}
validation_steps = 4
epoch_change_infer = False
seed = 1
images_dir = "{data}/*/images/"
masks_dir = "{data}/*/masks/"
split_file = "{split}"
model_dir = "./models"
eval_dir = "./eval"
[valid]
images_dir = "{data}/*/images/"
masks_dir = "{data}/*/masks/"
split_file = "{split}"
[test]
images_dir = "{data}/*/images/"
masks_dir = "{data}/*/masks/"
split_file = "{split}"
[mask]
threshold = 60
"""


def run_model(name: str, budget: float, folder: Path) -> dict[str, object]:
    """Measure images/s over a few steps, then train for `budget` seconds worth of steps and evaluate on test."""
    def config(steps: int, sub: str) -> Path:
        path = folder / sub / "bench.config"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONFIG.format(model=name, size=SIZE, batch=BATCH, steps=steps, data=DATA, split=SPLIT_FILE))
        return path

    probe = train_from_config(load_config(config(4, "probe")), device="cpu", quiet=True)
    images_per_s = probe.history[-1]["images_per_s"]  # includes the first (slower) steps: a conservative speed
    steps = max(1, round(budget * images_per_s / BATCH))
    cfg = load_config(config(steps, "run"))
    began = time.perf_counter()
    fit = train_from_config(cfg, device="cpu", quiet=True)
    train_seconds = time.perf_counter() - began
    result = evaluate_from_config(cfg, device="cpu", quiet=True)
    fg = result.per_class["class_1"]
    return {
        "model": name, "train_images_per_s": round(fit.history[-1]["images_per_s"], 2), "steps": steps,
        "images_seen": steps * BATCH, "train_seconds_incl_validation": round(train_seconds, 1),
        "test_iou": round(fg["iou"], 4), "test_dice": round(fg["dice"], 4), "test_dice_image_mean": round(fg["dice_image_mean"], 4),
    }


def to_markdown(rows: list[dict[str, object]], zoo: dict[str, dict[str, object]], budget: float) -> str:
    lines = [
        "# Model zoo: size, cost, CPU training speed, and pap-smear test IoU after a fixed budget", "",
        f"Parameters and GFLOPs at 256x256 (benchmarks/model_zoo.py). Training at {SIZE}x{SIZE}, batch {BATCH}, "
        f"about {budget:g} s of CPU training each, on the pap-smear set re-split by source cell (no cell in two splits);",
        "test IoU/Dice of the foreground, dataset-level. See model_zoo_train.json for the machine.", "",
        "| model | parameters | GFLOPs / image (256²) | train images/s (128², CPU) | images seen | test IoU | test Dice | load (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        z = zoo.get(r["model"], {})
        lines.append(f"| {r['model']} | {z.get('params', 0):,} | {z.get('gflops', '')} | {r['train_images_per_s']} | "
                     f"{r['images_seen']} | {r['test_iou']} | {r['test_dice']} | {r.get('load_average_1m', 'see json')} |")
    lines += ["", "Rows measured under a higher load (other processes on the 2 cores) show lower images/s: compare "
              "speeds only between rows of similar load."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training per model")
    parser.add_argument("--models", nargs="*", default=sorted(MODELS))
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: shared pap-smear data not found")
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run_model(name, args.budget, Path(tmp)) | {"measured": machine_info()["date"],
                                                                  "load_average_1m": machine_info()["load_average_1m"]})
        print(json.dumps(rows[-1]), flush=True)
    previous = RESULTS / "model_zoo_train.json"
    if previous.is_file() and set(args.models) != set(MODELS):  # re-measured models replace their old rows
        kept = [r for r in json.loads(previous.read_text())["models"] if r["model"] not in args.models]
        rows = sorted(kept + rows, key=lambda r: r["model"])
    zoo = {m["model"]: m for m in json.loads((RESULTS / "model_zoo.json").read_text())["models"]}
    out = {"machine": machine_info(), "command": " ".join(sys.argv), "budget_seconds": args.budget, "size": SIZE,
           "split": "benchmarks/splits/pap_smear_grouped.csv (grouped by source cell; no leakage)", "models": rows}
    (RESULTS / "model_zoo_train.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "model_zoo.md").write_text(to_markdown(rows, zoo, args.budget))
    print(to_markdown(rows, zoo, args.budget))


if __name__ == "__main__":
    main()
