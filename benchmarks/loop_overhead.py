"""What a training loop costs over the bare model step (issue 28 item 3), in one run, 1 thread, 128 px, batch 8.

Three networks: the seed's FlexUNet (pap-smear config, 31 M), smp Unet-resnet34 (random init) and MONAI BasicUNet.
For each, training images per second of:

- `bare`: forward, loss (flexunet's bce_dice_loss), backward and Adam step on one batch already in memory: the floor;
- `flexunet_loop`: flexunet's loop, `flexunet.train.fit` (what `train_from_config` runs) on the grouped pap-smear
  split: JPEGs decoded from disk, no loader workers, no augmentation. The seed FlexUNet and smp Unet are built by name
  from the config; BasicUNet is handed to `fit` as a user's own nn.Module. Timed from the first training image read
  of an epoch to the first validation image read (so validation and checkpoint writing are left out), the datasets'
  reads marked by a subclass of flexunet's dataset; first epoch excluded;
- `own_loop`: the library's own idiomatic loop, as the peer scripts write it (benchmarks/peers/smp_side.py: PNG
  Dataset + DataLoader, DiceLoss + BCE; benchmarks/peers/monai_side.py: CacheDataset with MONAI transforms,
  DiceCELoss), timed per step after warm-up steps. For the seed FlexUNet, flexunet's loop is its own.

Training images per CPU second of this process (`img_per_cpu_s`) and per wall-clock second (`img_s`) are both
recorded, with the 1-minute load average. The machine is shared (two other engineers' work in other scheduling
groups), so a process gets a varying share of a core and wall-clock rates move with it; on an idle core the two
agree. Overhead = 1 - loop img/s per CPU second / bare img/s per CPU second.
Needs benchmarks/.venv-peers (smp, MONAI) and the prepared PNGs of benchmarks/peers.py (made here if missing).

    benchmarks/.venv-peers/bin/python benchmarks/loop_overhead.py [--steps 12] [--epochs 3] [--warmup 4]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results"
NETWORKS = ["seed_flexunet", "smp_unet_resnet34", "monai_basic_unet"]
BATCH = 8


def config(network: str, work: Path, steps: int, epochs: int):
    """The grouped pap-smear split at 128 px, batch 8, epochs of `steps` batches; the network's [model] keys."""
    from peers import grouped_config

    net = {"seed_flexunet": [],  # the seed config's own [model]
           "smp_unet_resnet34": ["model.model=unet", "model.encoder=resnet34", "model.encoder_weights=None"],
           "monai_basic_unet": []}[network]  # BasicUNet is passed to fit; the config's model is not built
    return grouped_config(work, (
        *net, "model.loss=bce_dice_loss", "model.learning_rate=0.001", f"train.batch_size={BATCH}",
        f"train.steps_per_epoch={steps}", f"train.epochs={epochs}", "train.validation_steps=1", "train.patience=0",
        "train.num_workers=0", "train.epoch_change_infer=False", "train.create_backup=False"))


def build(network: str, cfg):
    if network == "monai_basic_unet":
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=2, in_channels=3, out_channels=1)
    from flexunet.models import build_model

    return build_model(cfg.model)


def timed_steps(step, batches, warmup: int, steps: int) -> dict[str, float]:
    """Run `warmup` + `steps` calls of step(batch); img/s over the timed ones (wall and per CPU second)."""
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step(next(it))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"img_s": round(steps * BATCH / wall, 2), "img_per_cpu_s": round(steps * BATCH / cpu, 2),
            "steps": steps, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def bare(network: str, cfg, steps: int, warmup: int) -> dict[str, float]:
    import torch

    from flexunet.data.dataset import build_datasets
    from flexunet.losses import build_loss

    model, loss_fn = build(network, cfg), build_loss(cfg.model)
    data = build_datasets(cfg).train
    x = torch.stack([data[i][0] for i in range(BATCH)]).float() / 255  # (8, 3, 128, 128)
    y = torch.stack([data[i][1] for i in range(BATCH)]).long()  # (8, 128, 128) labels, as flexunet's loop feeds them
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step(_: object) -> None:
        optim.zero_grad()
        loss_fn(model(x), y).backward()
        optim.step()

    return timed_steps(step, iter(int, 1), warmup, steps)


def flexunet_loop(network: str, cfg, work: Path) -> dict[str, float]:
    import torch

    from flexunet.data.dataset import build_datasets
    from flexunet.losses import build_loss
    from flexunet.runs.rundir import run_dir_for
    from flexunet.train import fit

    reads: list[tuple[str, float, float]] = []  # (split, CPU s, wall s) of every image read

    def marked(dataset, split: str):
        class Marked(type(dataset)):
            def __getitem__(self, index: int):
                reads.append((split, time.process_time(), time.perf_counter()))
                return super().__getitem__(index)

        copy = Marked.__new__(Marked)
        copy.__dict__.update(dataset.__dict__)
        return copy

    data = build_datasets(cfg)
    data = type(data)(train=marked(data.train, "train"), valid=marked(data.valid, "valid"), notes=data.notes)
    run = run_dir_for(cfg)
    with run.locked():
        run.prepare(False)
        result = fit(build(network, cfg), build_loss(cfg.model), data, cfg, run, torch.device("cpu"),
                     log=lambda *_: None)
    phases, start = [], None  # (CPU s, wall s) from an epoch's first training read to its first validation read
    for split, cpu, wall in reads:
        if split == "train" and start is None:
            start = (cpu, wall)
        elif split == "valid" and start is not None:
            phases.append((cpu - start[0], wall - start[1]))
            start = None
    timed = phases[1:]  # the first epoch warms up
    images = cfg.train.steps_per_epoch * BATCH * len(timed)
    cpu, wall = sum(p[0] for p in timed), sum(p[1] for p in timed)
    return {"img_s": round(images / wall, 2), "img_per_cpu_s": round(images / cpu, 2), "epochs_timed": len(timed),
            "steps": cfg.train.steps_per_epoch * len(timed), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "history_train_img_s": [round(r["images_per_s"], 2) for r in result.history[1:]]}


def own_loop(network: str, data: Path, steps: int, warmup: int) -> dict[str, float]:
    import torch

    if network == "smp_unet_resnet34":
        import segmentation_models_pytorch as smp
        from smp_side import PapSmear
        from torch.utils.data import DataLoader

        loader = DataLoader(PapSmear(data / "train", flips=True), batch_size=BATCH, shuffle=True, drop_last=True)
        model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1)
        dice, bce = smp.losses.DiceLoss("binary"), torch.nn.BCEWithLogitsLoss()

        def loss_fn(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
            return dice(logits, masks) + bce(logits, masks)

        batches = iter(loader)
    else:
        from monai.data import CacheDataset, DataLoader
        from monai.losses import DiceCELoss
        from monai.networks.nets import BasicUNet
        from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, RandFlipd, ScaleIntensityRanged
        from monai_side import files

        keys = ["image", "label"]
        transform = Compose([LoadImaged(keys, reader="PILReader", reverse_indexing=False, image_only=True),
                             EnsureChannelFirstd(keys), ScaleIntensityRanged("image", 0, 255, 0.0, 1.0),
                             RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)])
        cached = CacheDataset(files(data / "train")[:(steps + warmup + 2) * BATCH], transform, progress=False)
        loader = DataLoader(cached, batch_size=BATCH, shuffle=True, drop_last=True)
        model, loss_fn = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1), DiceCELoss(sigmoid=True)
        batches = ((b["image"], b["label"]) for b in loader)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, masks = batch
        optim.zero_grad()
        loss_fn(model(images), masks).backward()
        optim.step()

    return timed_steps(step, batches, warmup, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed steps (bare, own loop); batches per epoch (fit)")
    parser.add_argument("--epochs", type=int, default=3, help="flexunet loop epochs, the first one excluded")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps before the bare and own-loop timings")
    args = parser.parse_args()
    import torch
    from machine import machine_info
    from peers import WORK, prepare

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = prepare(WORK)
    out: dict[str, object] = {"command": "python " + " ".join(sys.argv), "batch_size": BATCH, "size": 128,
                              "threads": 1, "machine": machine_info(), "networks": {}}
    for network in NETWORKS:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config(network, Path(tmp), args.steps, args.epochs)
            row: dict[str, object] = {"load_before": round(os.getloadavg()[0], 2)}
            row["bare"] = bare(network, cfg, args.steps, args.warmup)
            row["flexunet_loop"] = flexunet_loop(network, cfg, Path(tmp))
            if network != "seed_flexunet":
                row["own_loop"] = own_loop(network, data, args.steps, args.warmup)
            row["load_after"] = round(os.getloadavg()[0], 2)
            for loop in ("flexunet_loop", "own_loop"):
                if loop in row:
                    row[loop]["overhead_vs_bare"] = round(
                        1 - row[loop]["img_per_cpu_s"] / row["bare"]["img_per_cpu_s"], 3)
            out["networks"][network] = row
            print(network, json.dumps(row), flush=True)
    from importlib.metadata import version

    out["versions"] = {name: version(name) for name in ("torch", "segmentation-models-pytorch", "monai", "flexunet")}
    (RESULTS / "loop_overhead.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
