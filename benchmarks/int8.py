"""int8 vs fp32 inference on CPU: img/s at batch 1 and 16 and test Dice on the grouped pap-smear split.

One run: the seed's Pap-Smear UNet (pap-smear.config: 128 px, 16 filters, 7 levels, 31.1 M parameters) is trained
on the grouped split (splits/pap_smear_grouped.csv: source cells never cross splits) through `train_from_config`
for a wall-clock budget (`on_epoch_end` stops it), exported with `export_int8_from_config` (fp32 ONNX, then static
int8: QDQ, per-channel, 64 calibration images from [train]), and the same best checkpoint is run four ways,
alternating in rounds with the order rotated: PyTorch eager (`flexunet infer`), PyTorch `--compile`, ONNX fp32 and
ONNX int8 (`flexunet infer --onnx`), each with its default threads. Dice on the grouped test split comes from
`evaluate_details` with each backend behind the same Predictor. The machine is shared (up to 4 agents on 2 cores):
the load average is recorded beside every phase. Writes benchmarks/results/int8.json.

    python benchmarks/int8.py [--budget-s 300] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from machine import machine_info  # noqa: E402

from flexunet.config import load_config
from flexunet.data.dataset import make_dataset, pairs_for
from flexunet.evaluate import EvalSettings, evaluate_details
from flexunet.infer import OnnxModel, export_int8_from_config
from flexunet.infer.compiled import compile_for_inference
from flexunet.metrics import dice, nanmean
from flexunet.predict import for_inference, predictor_from_config, to_input
from flexunet.runs.checkpoint import load_trained_model
from flexunet.train import train_from_config

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "int8.json"
DATA = Path(os.environ.get("FLEXUNET_PAP_SMEAR", "/work/shared/data/pap-smear"))
SEED_CONFIG = Path(os.environ.get("FLEXUNET_PAP_CONFIG", "/work/shared/data/configs/pap-smear.config"))
SPLIT_FILE = HERE / "splits" / "pap_smear_grouped.csv"
STEPS_PER_EPOCH = 50
BATCHES = {1: 32, 16: 4}  # batch size -> forward calls per timing (32 and 64 images)


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text} (load {load()})", file=sys.stderr, flush=True)


def grouped_config(work: Path, overrides: list[str]):
    data = [f"{s}.images_dir={DATA}/*/images/" for s in ("train", "valid", "test")]
    data += [f"{s}.masks_dir={DATA}/*/masks/" for s in ("train", "valid", "test")]
    data += [f"{s}.split_file={SPLIT_FILE}" for s in ("train", "valid", "test")]
    return load_config(SEED_CONFIG, [
        *data, "train.epochs=100000", f"train.steps_per_epoch={STEPS_PER_EPOCH}", "train.patience=100000",
        f"train.model_dir={work}/models", f"train.eval_dir={work}/eval", "train.epoch_change_infer=False",
        "train.create_backup=False", *overrides])


def train(cfg, budget_s: float, min_epochs: int) -> dict:
    began = time.perf_counter()
    marks = [began]

    def within_budget(row: dict[str, float]) -> bool:
        now = time.perf_counter()
        last, marks[:] = now - marks[-1], [now]
        return row["epoch"] >= min_epochs and now - began + last > budget_s

    result = train_from_config(cfg, device="cpu", quiet=True, on_epoch_end=within_budget)
    return {"epochs": result.epochs_run, "steps_per_epoch": STEPS_PER_EPOCH, "batch_size": cfg.train.batch_size,
            "best_epoch": result.best_epoch, "train_seconds": round(time.perf_counter() - began),
            "checkpoint": str(result.run.best)}


def test_dice(cfg, model) -> dict[str, float]:
    predictor = predictor_from_config(cfg, model, torch.device("cpu"), tta=False, batch_size=16)
    ev = evaluate_details(predictor, make_dataset(cfg, pairs_for(cfg, "test")), EvalSettings.from_config(cfg),
                          hd95=False)
    fg = ev.counts.foreground()
    return {"dice_dataset": round(float(dice(fg.total())[0]), 4),
            "dice_image_mean": round(float(nanmean(dice(fg)[:, 0])), 4), "test_images": len(ev.names)}


@torch.no_grad()
def images_per_s(model, x: torch.Tensor, calls: int) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        model(x)
    return calls * x.shape[0] / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-epochs", type=int, default=3, help="train at least this many epochs (a 1-epoch model "
                        "predicted no foreground: Dice 0 for both, which compares nothing)")
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--set", dest="overrides", nargs="*", default=["model.learning_rate=0.001"],
                        help="config overrides for training (default: learning rate 1e-3, to learn in minutes)")
    args = parser.parse_args()
    loads: dict[str, str] = {"start": load()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = grouped_config(work, args.overrides)
        training = train(cfg, args.budget_s, args.min_epochs)
        say(f"trained {training}")
        loads["after_training"] = load()
        checkpoint = Path(training.pop("checkpoint"))
        exported, quantized = export_int8_from_config(cfg, work / "model.onnx", args.calibration, checkpoint)
        say(f"exported {quantized}")
        sizes_mb = {"fp32_onnx": round(exported.path.stat().st_size / 2**20, 1),
                    "int8_onnx": round(quantized.path.stat().st_size / 2**20, 1)}
        device = torch.device("cpu")

        def checkpoint_model() -> torch.nn.Module:
            return load_trained_model(checkpoint, device, cfg)[0]

        eager = for_inference(checkpoint_model(), device)
        backends = {"torch_fp32": {b: eager for b in BATCHES},
                    "torch_fp32_compiled": {b: compile_for_inference(for_inference(checkpoint_model(), device), device)
                                            for b in BATCHES},  # one compiled model per batch size, as one infer run
                    "onnx_fp32": {b: OnnxModel(exported.path) for b in BATCHES},
                    "onnx_int8": {b: OnnxModel(quantized.path) for b in BATCHES}}
        images = [make_dataset(cfg, pairs_for(cfg, "test"))[i][0].permute(1, 2, 0).numpy() for i in range(16)]
        inputs = {b: to_input(images[:b], device) for b in BATCHES}
        compile_s = {}
        for name, by_batch in backends.items():  # warm-up (compilation for the compiled backend)
            for b, model in by_batch.items():
                began = time.perf_counter()
                images_per_s(model, inputs[b], 2)
                if name == "torch_fp32_compiled":
                    compile_s[f"b{b}"] = round(time.perf_counter() - began, 1)
        loads["after_warmup"] = load()
        say(f"warm, compile {compile_s}")
        rows: dict[str, dict[str, list[float]]] = {n: {f"b{b}": [] for b in BATCHES} for n in backends}
        names = list(backends)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
                for b, calls in BATCHES.items():
                    rows[name][f"b{b}"].append(round(images_per_s(backends[name][b], inputs[b], calls), 1))
            loads[f"after_round_{r + 1}"] = load()
            say(f"round {r + 1}: {rows}")
        dice_rows = {"torch_fp32": test_dice(cfg, eager), "onnx_fp32": test_dice(cfg, backends["onnx_fp32"][1]),
                     "onnx_int8": test_dice(cfg, backends["onnx_int8"][1])}
        loads["end"] = load()
    median = {n: {k: statistics.median(v) for k, v in by.items()} for n, by in rows.items()}
    fp32_paths = ("torch_fp32", "torch_fp32_compiled", "onnx_fp32")
    best_fp32 = {k: max(median[n][k] for n in fp32_paths) for k in median["onnx_int8"]}
    dice_drop = dice_rows["torch_fp32"]["dice_dataset"] - dice_rows["onnx_int8"]["dice_dataset"]
    faster = all(median["onnx_int8"][k] > best_fp32[k] for k in best_fp32)
    close = abs(dice_drop) <= 0.005
    if dice_rows["torch_fp32"]["dice_dataset"] < 0.1:
        raise SystemExit(f"fp32 test Dice {dice_rows['torch_fp32']['dice_dataset']}: the model learned too little to "
                         "compare int8 with; train longer (--budget-s, --min-epochs)")
    report = {
        "what": "int8 (onnxruntime static QDQ, per-channel) vs fp32 inference of one trained pap-smear UNet: img/s at "
                "batch 1 and 16 (test images at 128x128, model forward only), Dice on the grouped test split",
        "model": "pap-smear.config FlexUNet (31.1 M parameters)",
        "training": {**training, "split": "grouped (benchmarks/splits/pap_smear_grouped.csv)",
                     "overrides": args.overrides,
                     "note": "a short wall-clock budget: the Dice is of an under-trained model; fp32 and int8 use "
                             "the same checkpoint"},
        "int8": {"calibration_images": quantized.calibration_images,
                 "calibration_label_agreement": round(quantized.label_agreement, 5),
                 "calibration_max_abs_prob_diff": round(quantized.max_abs_prob_diff, 4),
                 "format": "QDQ, int8 per-channel weights, uint8 activations, MinMax"},
        "onnx_sizes_mb": sizes_mb, "compile_seconds": compile_s,
        "images_per_s_rounds": rows, "images_per_s_median": median,
        "int8_over_best_fp32": {k: round(median["onnx_int8"][k] / best_fp32[k], 2) for k in best_fp32},
        "test_dice": dice_rows, "dice_drop_fp32_minus_int8": round(dice_drop, 4),
        "dice_within_0.005": close,
        "verdict": ("int8 wins: faster than every fp32 path at both batch sizes, test Dice within 0.005" if faster
                    and close else "int8 loses (" + ("slower than the best fp32 path at some batch size" if not faster
                                                     else "test Dice more than 0.005 below fp32")
                    + "): fp32 stays the default"),
        "threads": {"torch": torch.get_num_threads(), "onnxruntime": "default (one per physical core)"},
        "load_average_1m": loads,
        "caveat": "the machine has 2 cores shared by up to 4 agents: compare backends within this run only (they "
                  "alternate, order rotated each round); see the load averages",
        "command": "python benchmarks/int8.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("images_per_s_median", "int8_over_best_fp32", "test_dice", "verdict")},
                     indent=1))


if __name__ == "__main__":
    main()
