"""The flexunet sides of benchmarks/peers.py, both through `train_from_config` (the `flexunet train` path).

--recipe seed: the pap-smear seed config as a user gets it (31 M UNet, Adam 1e-4 clipvalue 0.5, bce_iou_loss, batch 4,
               no augmentation), on the grouped split with epochs of 100 batches and a full validation pass, as
               benchmarks/quality.py trains it (`flex_config`);
--recipe best: the best documented recipe (results/model_zoo.md: the 7.8 M FlexUNet, Adam 1e-3, bce_dice_loss,
               batch 4, no augmentation ([model] generator is off by default), epochs of 50 batches, 10 validation
               batches), as
               benchmarks/model_zoo_train.py trains it (`sections`);
--recipe best_aug: the same with [model] generator = True (the default [augmentor]: flips, rotations, shrinks),
               what `flexunet init --budget` turns on when a budget passes over the data more than 4 times: the
               A/B of issue 28 against `best`, run side by side at one budget.
Both keep best.pt by val_loss (flexunet's default monitor) and stop at the first epoch end after which another
epoch as long as the last would pass `--budget` CPU seconds of this process; the test images are then predicted from
best.pt through flexunet's predictor.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(BENCHMARKS.parent))


def config(recipe: str, work: Path):
    from flexunet.config.load import config_from_dict

    if recipe == "seed":
        from quality import flex_config

        return flex_config("grouped", work)
    from model_zoo_train import sections

    values = sections("pap-smear-grouped", "flexunet", work)
    if recipe == "best_aug":
        values["model"] |= {"generator": True}
    return config_from_dict(values, base_dir=work)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", choices=["seed", "best", "best_aug"], required=True)
    parser.add_argument("--data", type=Path, help="unused: flexunet reads the JPEGs through the split file")
    parser.add_argument("--split-file", help="unused: the recipes name benchmarks/splits/pap_smear_grouped.csv")
    parser.add_argument("--budget", type=float, default=600.0, help="CPU seconds of this process")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1, help="unused: each recipe's config sets its seed")
    args = parser.parse_args()
    wall0 = time.perf_counter()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from flexunet.data.dataset import make_dataset, pairs_for
    from flexunet.predict import predictor_from_config, to_input
    from flexunet.runs.checkpoint import load_trained_model
    from flexunet.train import train_from_config

    work = args.out / "flexunet"
    cfg = config(args.recipe, work)
    curve, marks = [], [time.process_time()]

    def within_budget(row: dict[str, float]) -> bool:
        """True (stop) when one more epoch as long as the last would end past the budget."""
        now = time.process_time()  # from this process's start: imports and data setup included
        last = now - marks[-1]
        marks.append(now)
        curve.append({"epoch": int(row["epoch"]), "cpu_s": round(now, 1),
                      "wall_s": round(time.perf_counter() - wall0, 1), "loss": round(row["loss"], 4),
                      "val_loss": round(row["val_loss"], 4), "val_dice": round(row["val_dice"], 4)})
        print(json.dumps(curve[-1]), flush=True)
        return now + last > args.budget

    fit = train_from_config(cfg, device="cpu", quiet=True, on_epoch_end=within_budget)
    train_cpu, train_wall = time.process_time(), time.perf_counter() - wall0

    cpu1 = time.process_time()
    model, _ = load_trained_model(fit.run.best, torch.device("cpu"), cfg)
    dataset = make_dataset(cfg, pairs_for(cfg, "test"))
    predictor = predictor_from_config(cfg, model, torch.device("cpu"), tta=False)
    probs = []
    for start in range(0, len(dataset), 16):
        batch = [dataset[i][0].permute(1, 2, 0).numpy() for i in range(start, min(start + 16, len(dataset)))]
        probs.append(predictor.batch_probs(to_input(batch, torch.device("cpu")))[:, 0].numpy())
    np.savez_compressed(args.out / "test.npz", probs=np.concatenate(probs).astype(np.float16),
                        stems=np.array([p.stem for p in dataset.pairs]))
    t, m = cfg.train, cfg.model
    valid = f"{t.validation_steps} batches" if t.validation_steps else "all"
    (args.out / "side.json").write_text(json.dumps({
        "recipe": f"flexunet train_from_config, {m.model} {'seed config' if args.recipe == 'seed' else 'model_zoo'} "
                  f"recipe: Adam {m.learning_rate:g}, {m.loss}, batch {t.batch_size}, augmentation "
                  f"{'on' if m.generator else 'off'}, epochs of {t.steps_per_epoch} "
                  f"batches, validation ({valid} of the validation split; flexunet's val_dice, pooled) after each, "
                  f"best by {t.monitor}",
        "parameters": sum(p.numel() for p in model.parameters()), "batch_size": t.batch_size, "curve": curve,
        "best_epoch": fit.best_epoch, "images_seen": fit.epochs_run * t.steps_per_epoch * t.batch_size,
        "train_cpu_s": round(train_cpu, 1), "train_wall_s": round(train_wall, 1),
        "predict_cpu_s": round(time.process_time() - cpu1, 1),
        "versions": {"flexunet": version("flexunet"), "torch": torch.__version__, "numpy": np.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
