"""The MONAI side of benchmarks/peers.py: what a MONAI user writes, with no flexunet import.

BasicUNet (2-D, default features), DiceCELoss(sigmoid=True), Adam 1e-3, batch 8, MONAI transforms (LoadImaged,
intensity scaling, random flips) on a CacheDataset, a plain PyTorch loop as MONAI's tutorials write it. Validation
with DiceMetric (per-image mean) every `--val-every` steps; the best weights are kept. Training stops when another
interval as long as the last would pass `--budget` CPU seconds of this process.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import monai
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import BasicUNet
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, RandFlipd, ScaleIntensityRanged


def files(folder: Path) -> list[dict[str, str]]:
    images = sorted((folder / "images").glob("*.png"))
    return [{"image": str(p), "label": str(folder / "masks" / p.name)} for p in images]


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and labels, each (N, 1, H, W)."""
    model.eval()
    probs, labels = zip(*((torch.sigmoid(model(b["image"])), b["label"]) for b in loader), strict=True)
    return torch.cat(probs), torch.cat(labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=600.0, help="CPU seconds of this process")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--split-file", help="unused: the prepared folders are the split")
    args = parser.parse_args()
    wall0 = time.perf_counter()
    torch.set_num_threads(1)
    monai.utils.set_determinism(seed=args.seed)

    keys = ["image", "label"]
    load = [LoadImaged(keys, reader="PILReader", reverse_indexing=False, image_only=True),  # (H, W) as the file
            EnsureChannelFirstd(keys), ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0.0, b_max=1.0)]
    train_tf = Compose([*load, RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)])
    train = CacheDataset(files(args.data / "train"), train_tf, cache_rate=1.0, num_workers=0, progress=False)
    valid = CacheDataset(files(args.data / "valid"), Compose(load), cache_rate=1.0, num_workers=0, progress=False)
    test_files = files(args.data / "test")
    test = CacheDataset(test_files, Compose(load), cache_rate=1.0, num_workers=0, progress=False)
    loader = DataLoader(train, batch_size=8, shuffle=True, drop_last=True, num_workers=0)
    valid_loader, test_loader = DataLoader(valid, batch_size=16), DataLoader(test, batch_size=16)

    model = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1)
    loss_fn = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    metric = DiceMetric(include_background=True, reduction="mean")

    cpu0 = 0.0  # the budget counts this process from its start: imports and caching included
    curve, best, best_state, step, mark = [], -1.0, None, 0, time.process_time()
    while True:
        for batch in loader:
            model.train()
            optimizer.zero_grad()
            logits = model(batch["image"])
            loss = loss_fn(logits, batch["label"])
            loss.backward()
            optimizer.step()
            step += 1
            if step % args.val_every:
                continue
            probs, labels = predict(model, valid_loader)
            metric.reset()
            metric(y_pred=(probs > 0.5).float(), y=labels)
            score = float(metric.aggregate())
            now = time.process_time()
            curve.append({"epoch": len(curve) + 1, "step": step, "cpu_s": round(now - cpu0, 1),
                          "wall_s": round(time.perf_counter() - wall0, 1), "loss": round(loss.item(), 4),
                          "val_dice": round(score, 4)})
            print(json.dumps(curve[-1]), flush=True)
            if score > best:
                best, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), len(curve)
            last, mark = now - mark, now
            if now - cpu0 + last > args.budget:
                break
        else:
            continue
        break
    train_cpu, train_wall = time.process_time() - cpu0, time.perf_counter() - wall0

    model.load_state_dict(best_state)
    cpu1 = time.process_time()
    probs, _ = predict(model, test_loader)
    stems = np.array([Path(f["image"]).stem for f in test_files])
    np.savez_compressed(args.out / "test.npz", probs=probs[:, 0].numpy().astype(np.float16), stems=stems)
    (args.out / "side.json").write_text(json.dumps({
        "recipe": "MONAI BasicUNet (2-D, default features), DiceCELoss(sigmoid=True), Adam 1e-3, batch 8, "
                  "LoadImaged + ScaleIntensityRanged + RandFlipd x2 on a CacheDataset, plain PyTorch loop; "
                  f"validation (DiceMetric, per-image mean, all {len(valid)} images) every {args.val_every} steps, "
                  "best by validation Dice",
        "parameters": sum(p.numel() for p in model.parameters()), "batch_size": 8, "curve": curve,
        "best_epoch": best_epoch, "best_val_dice": best, "images_seen": step * 8, "train_cpu_s": round(train_cpu, 1),
        "train_wall_s": round(train_wall, 1), "predict_cpu_s": round(time.process_time() - cpu1, 1),
        "versions": {"torch": torch.__version__, "monai": monai.__version__, "numpy": np.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
