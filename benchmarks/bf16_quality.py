"""Does `[train] cpu_bf16 = True` train as well as fp32 after the same number of steps?

The seed pap-smear config (flexunet model, bce_iou_loss, lr 1e-4, clipvalue 0.5, batch 4) on the grouped split
(benchmarks/splits/pap_smear_grouped.csv: no cell in two splits), trained for `--epochs` x `--steps` batches in fp32
and with bf16 autocast, for each of `--seeds` seeds (same seed -> same initial weights, same batches), then
`evaluate_from_config` scores the test split, and the last epoch's validation pass the valid split (dataset-level
Dice of the cell class). The fp32-vs-fp32
spread across seeds is printed beside the bf16-vs-fp32 difference: a difference smaller than the seed-to-seed spread
is rounding noise, not a precision loss. Steps, not seconds, so the result does not depend on machine load
(`train_seconds` does: it is no speed measurement; profile_train.py and run.py measure speed).

    python benchmarks/bf16_quality.py --seeds 1 2 --epochs 4 --steps 100    # writes results/bf16_quality.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from machine import machine_info  # noqa: E402
from run import SEED_CONFIG  # noqa: E402

from flexunet.config import load_config  # noqa: E402
from flexunet.evaluate import evaluate_from_config  # noqa: E402
from flexunet.runs.device import cpu_has_bf16  # noqa: E402
from flexunet.train import train_from_config  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "pap-smear"
SPLIT = HERE / "splits" / "pap_smear_grouped.csv"
VAL_DICE = "val_dice"  # history.csv: validation Dice of the foreground classes (here the cell)


def one(seed: int, bf16: bool, epochs: int, steps: int, work: Path) -> dict[str, object]:
    files = [f"{s}.{k}={v}" for s in ("train", "valid", "test")
             for k, v in (("images_dir", f"{DATA}/*/images/"), ("masks_dir", f"{DATA}/*/masks/"),
                          ("split_file", SPLIT))]
    cfg = load_config(SEED_CONFIG, [*files, "train.epoch_change_infer=False", f"train.seed={seed}",
                                    f"train.epochs={epochs}", f"train.steps_per_epoch={steps}",
                                    f"train.patience={epochs + 1}", f"train.cpu_bf16={bf16}",
                                    f"train.model_dir={work}/models", f"train.eval_dir={work}/eval",
                                    "train.create_backup=False", "mask.threshold=60"])
    began = time.perf_counter()
    fit = train_from_config(cfg, device="cpu", quiet=True)
    seconds = time.perf_counter() - began
    result = evaluate_from_config(cfg, device="cpu", quiet=True, report=False)
    test = {k: round(result.per_class["class_1"][k], 4) for k in ("dice", "iou", "dice_image_mean")}
    last = fit.history[-1]
    return {"seed": seed, "precision": "bf16" if bf16 else "fp32", "train_seconds": round(seconds, 1),
            "final_train_loss": round(last["loss"], 4), "best_epoch": fit.best_epoch,
            "valid_last_epoch": {"dice": round(last[VAL_DICE], 4)}, "test": test}


def summarize(runs: list[dict]) -> dict[str, dict[str, object]]:
    """bf16 minus fp32 Dice per seed, on the last validation pass and the test split, beside the fp32 spread."""
    summary: dict[str, dict[str, object]] = {}
    for split, key in (("valid", "valid_last_epoch"), ("test", "test")):
        fp32 = {r["seed"]: r[key]["dice"] for r in runs if r["precision"] == "fp32"}
        bf16 = {r["seed"]: r[key]["dice"] for r in runs if r["precision"] == "bf16"}
        diffs = [bf16[s] - fp32[s] for s in sorted(fp32)]
        summary[split] = {"dice_bf16_minus_fp32_per_seed": [round(d, 4) for d in diffs],
                          "dice_bf16_minus_fp32_mean": round(statistics.mean(diffs), 4),
                          "max_abs_difference": round(max(abs(d) for d in diffs), 4),
                          "fp32_seed_to_seed_range": round(max(fp32.values()) - min(fp32.values()), 4),
                          "mean_within_0.005": abs(statistics.mean(diffs)) <= 0.005,
                          "every_seed_within_0.005": all(abs(d) <= 0.005 for d in diffs)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resummarize", action="store_true",
                        help="recompute the summary of the committed results/bf16_quality.json; train nothing")
    args = parser.parse_args()
    if args.resummarize:
        path = HERE / "results" / "bf16_quality.json"
        out = json.loads(path.read_text())
        out["summary"] = summarize(out["runs"])
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out["summary"], indent=1))
        return
    if not cpu_has_bf16():
        sys.exit("this CPU has no native bf16 (avx512_bf16 / AMX): nothing to compare")
    torch.set_num_threads(args.threads)
    runs = []
    for seed in args.seeds:
        for bf16 in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(one(seed, bf16, args.epochs, args.steps, Path(tmp)))
            print(json.dumps(runs[-1]), flush=True)
    summary = summarize(runs)
    out = {"command": " ".join(sys.argv), "machine": machine_info(), "threads": args.threads,
           "steps_each": args.epochs * args.steps, "batch": 4, "summary": summary, "runs": runs}
    (HERE / "results" / "bf16_quality.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
