"""The smp side of benchmarks/peers.py: what a segmentation_models_pytorch user writes, with no flexunet import.

smp.Unet("resnet34", encoder_weights=None) (random init: nothing can be downloaded here), smp's DiceLoss + BCE,
Adam 1e-3, batch 8, random flips, a plain PyTorch loop and DataLoader over the prepared PNGs. Validation Dice (pooled
over the validation split, smp.metrics micro F1) every `--val-every` steps; the best weights are kept. Training stops
when another interval as long as the last would pass `--budget` CPU seconds of this process.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class PapSmear(Dataset):
    """<folder>/images/*.png (RGB) and <folder>/masks/*.png (0/1)."""

    def __init__(self, folder: Path, flips: bool = False) -> None:
        self.images = sorted((folder / "images").glob("*.png"))
        self.folder, self.flips = folder, flips

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.asarray(Image.open(self.images[i]).convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
        mask = np.asarray(Image.open(self.folder / "masks" / self.images[i].name), dtype=np.float32)  # (H, W)
        if self.flips and np.random.rand() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.flips and np.random.rand() < 0.5:
            image, mask = image[::-1], mask[::-1]
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(mask[None].copy())


@torch.no_grad()
def predict(model: torch.nn.Module, data: Dataset) -> np.ndarray:
    model.eval()
    loader = DataLoader(data, batch_size=16)
    return np.concatenate([torch.sigmoid(model(x)).numpy()[:, 0] for x, _ in loader])  # (N, H, W)


def validation_dice(model: torch.nn.Module, data: Dataset) -> float:
    probs = torch.from_numpy(predict(model, data))[:, None]
    masks = torch.stack([data[i][1] for i in range(len(data))]).long()
    tp, fp, fn, tn = smp.metrics.get_stats(probs, masks, mode="binary", threshold=0.5)
    return float(smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro"))


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
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    train = PapSmear(args.data / "train", flips=True)
    valid, test = PapSmear(args.data / "valid"), PapSmear(args.data / "test")
    loader = DataLoader(train, batch_size=8, shuffle=True, drop_last=True)
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1)
    dice_loss, bce = smp.losses.DiceLoss("binary"), torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    cpu0 = 0.0  # the budget counts this process from its start: imports and data setup included
    curve, best, best_state, step, mark = [], -1.0, None, 0, cpu0
    while True:
        for images, masks in loader:
            model.train()
            optimizer.zero_grad()
            logits = model(images)
            loss = dice_loss(logits, masks) + bce(logits, masks)
            loss.backward()
            optimizer.step()
            step += 1
            if step % args.val_every:
                continue
            score = validation_dice(model, valid)
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
    probs = predict(model, test)
    stems = np.array([p.stem for p in test.images])
    np.savez_compressed(args.out / "test.npz", probs=probs.astype(np.float16), stems=stems)
    (args.out / "side.json").write_text(json.dumps({
        "recipe": "smp.Unet('resnet34', encoder_weights=None), smp DiceLoss('binary') + BCEWithLogitsLoss, Adam 1e-3, "
                  f"batch 8, random h/v flips, plain PyTorch loop; validation (pooled Dice, smp.metrics micro F1, "
                  f"all {len(valid)} images) every {args.val_every} steps, best by validation Dice",
        "parameters": sum(p.numel() for p in model.parameters()), "batch_size": 8, "curve": curve,
        "best_epoch": best_epoch, "best_val_dice": best, "images_seen": step * 8, "train_cpu_s": round(train_cpu, 1),
        "train_wall_s": round(train_wall, 1), "predict_cpu_s": round(time.process_time() - cpu1, 1),
        "cpu_s_at_start": round(cpu0, 1), "versions": {"torch": torch.__version__, "smp": smp.__version__,
                                                       "numpy": np.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
