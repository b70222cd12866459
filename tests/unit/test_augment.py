"""Online augmentation: masks keep their labels and stay aligned with images; draws repeat with a seed."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flexunet.augment import Augmenter, augment_offline, build_augmenter, preview_grid
from flexunet.augment.ops import (
    OPS,
    Barrel,
    Brighten,
    Distortion,
    Elastic,
    Flip,
    Pincushion,
    Rotation,
    Sharpen,
    Shear,
    Shrink,
)
from flexunet.config import config_from_dict
from flexunet.errors import ConfigError, DataError

# Each operation alone, applied to every sample.
OPERATIONS = {
    "hflip": Flip(True, False, 1.0),
    "vflip": Flip(False, True, 1.0),
    "rotation": Rotation((30.0, 90.0), 1.0),
    "shrink": Shrink((0.8,), 1.0),
    "shear": Shear((0.2,), 1.0),
    "deformation": Elastic(150.0, (4.0, 8.0), 1.0),
    "distortion": Distortion((0.05,), 10.0, 1.0),
    "barrdistortion": Barrel(0.5, 0.5, ((0.5, 0.5), (0.3, 0.6)), 1.0),
    "pincdistortion": Pincushion(0.5, -0.5, ((0.5, 0.5),), 1.0),
}
GEOMETRIC = Augmenter((Flip(True, True, 1.0), *list(OPERATIONS.values())[2:]))
INTENSITY = (Sharpen(1.0, 1.0), Brighten(1.2, 10.0, 1.0))


def block_labels(n: int, size: int, num_classes: int, seed: int = 0, block: int = 8) -> torch.Tensor:
    """(N, size, size) labels constant on square blocks: large regions, so edges are a small part of the image."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, num_classes, (n, 1, size // block, size // block), generator=g).float()
    labels = F.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    labels[:, :4, :4] = 0  # the corner sets the fill colour; keep it background like the padded labels
    return labels


def encode(labels: torch.Tensor, step: int = 60) -> torch.Tensor:
    """Images (N, 3, H, W) whose grey level tells the label: label * step / 255."""
    return (labels.float() * step / 255)[:, None].expand(-1, 3, -1, -1).contiguous()


def interior(labels: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """True where every label within `radius` pixels is the same and the image border is farther than that.

    Near the border the bilinear image may blend in the padding beyond it, which nearest labels never see.
    """
    x = labels[:, None].float()
    k = 2 * radius + 1
    hi = F.max_pool2d(x, k, stride=1, padding=radius)
    lo = -F.max_pool2d(-x, k, stride=1, padding=radius)
    keep = (hi == lo)[:, 0]
    keep[:, :radius], keep[:, -radius:], keep[:, :, :radius], keep[:, :, -radius:] = False, False, False, False
    return keep


def test_mask_values_are_preserved() -> None:
    labels = block_labels(6, 64, 1) * 5 + block_labels(6, 64, 2, seed=1) * 2  # values 0, 2, 5, 7
    images = torch.rand(6, 3, 64, 64)
    _, out = GEOMETRIC(images, labels, torch.Generator().manual_seed(3))
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())  # padding adds only background 0


def test_flips_and_right_angles_keep_the_exact_label_histogram() -> None:
    labels = block_labels(4, 32, 4)
    augment = Augmenter((Flip(True, True, 1.0), Rotation((90.0, 180.0, 270.0), 1.0)))
    _, out = augment(torch.rand(4, 3, 32, 32), labels, torch.Generator().manual_seed(0))
    for before, after in zip(labels, out):
        assert torch.equal(before.flatten().bincount(minlength=4), after.flatten().bincount(minlength=4))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_and_mask_get_the_same_field(seed: int) -> None:
    labels = block_labels(4, 64, 4, seed, block=16)
    out_images, out_labels = GEOMETRIC(encode(labels), labels, torch.Generator().manual_seed(seed))
    decoded = (out_images[:, 0] * 255 / 60).round().long()
    keep = interior(out_labels)
    assert keep.float().mean() > 0.3  # the check covers a real part of the image
    assert torch.equal(decoded[keep], out_labels[keep])
    assert not torch.equal(out_labels, labels)


def test_same_seed_repeats_and_another_seed_differs() -> None:
    labels = block_labels(4, 32, 3)
    images = torch.rand(4, 3, 32, 32)
    augment = Augmenter(GEOMETRIC.ops + INTENSITY)
    a = augment(images, labels, torch.Generator().manual_seed(7))
    b = augment(images, labels, torch.Generator().manual_seed(7))
    c = augment(images, labels, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_samples_of_one_batch_get_different_draws() -> None:
    labels = block_labels(1, 32, 3).expand(8, -1, -1).contiguous()
    _, out = GEOMETRIC(encode(labels), labels, torch.Generator().manual_seed(0))
    assert len({tuple(x.flatten().tolist()) for x in out}) > 1


@pytest.mark.parametrize("augment", [Augmenter((op,)) for op in INTENSITY], ids=["sharpening", "brightening"])
def test_sharpen_and_brighten_change_images_only(augment: Augmenter) -> None:
    labels = block_labels(3, 32, 4)
    images = encode(labels) + 0.1
    out_images, out_labels = augment(images, labels, torch.Generator().manual_seed(0))
    assert torch.equal(out_labels, labels)
    assert not torch.allclose(out_images, images)
    assert out_images.min() >= 0 and out_images.max() <= 1


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_runs_on_a_batch(name: str) -> None:
    augment = Augmenter((OPERATIONS[name],))
    labels = block_labels(3, 48, 3)
    images = torch.rand(3, 1, 48, 48)
    out_images, out_labels = augment(images, labels, torch.Generator().manual_seed(0))
    assert out_images.shape == images.shape and out_images.dtype == images.dtype
    assert out_labels.shape == labels.shape and out_labels.dtype == labels.dtype
    assert not torch.equal(out_images, images)
    assert 0 <= out_images.min() and out_images.max() <= 1


def test_probability_zero_changes_nothing() -> None:
    labels = block_labels(2, 32, 3)
    images = torch.rand(2, 3, 32, 32)
    augment = Augmenter(tuple(replace(op, probability=0.0) for op in GEOMETRIC.ops + INTENSITY))
    out_images, out_labels = augment(images, labels, torch.Generator().manual_seed(0))
    assert torch.equal(out_images, images) and torch.equal(out_labels, labels)


def test_rotation_by_90_turns_the_content_anticlockwise() -> None:
    labels = torch.arange(16).view(1, 4, 4)
    _, out = Augmenter((Rotation((90.0,), 1.0),))(torch.rand(1, 1, 4, 4), labels, torch.Generator())
    assert torch.equal(out[0], torch.rot90(labels[0], 1))


def test_build_augmenter_follows_the_switches() -> None:
    assert build_augmenter(config_from_dict({"model": {"generator": False}})) is None
    assert build_augmenter(config_from_dict({"model": {"generator": True}, "generator": {"augmentation": False}})) is None
    cfg = config_from_dict({
        "model": {"generator": True},
        "augmentor": {"hflip": False, "angles": [45], "deformation": True, "barrdistortion": True, "sharpening": True,
                      "rotation_probability": 0.9},
        "deformation": {"alpah": 300, "sigmoids": [4, 6]},
    })
    augment = build_augmenter(cfg)
    assert augment is not None and augment.op(Flip) == Flip(False, True, 0.5)
    assert augment.op(Rotation) == Rotation((45.0,), 0.9)
    assert augment.op(Elastic) == Elastic(300, (4.0, 6.0), 0.25)
    assert augment.op(Barrel) == Barrel(0.5, 0.5, ((0.5, 0.5),), 0.25) and augment.op(Pincushion) is None
    assert augment.op(Sharpen) == Sharpen(1.0, 0.25) and augment.op(Brighten) is None and augment.op(Distortion) is None
    kinds = [type(op) for op in augment.ops]
    assert {Flip, Rotation, Elastic, Barrel, Sharpen} <= set(kinds) and kinds == sorted(kinds, key=OPS.index)


def test_seed_transformer_switch_reads_augmentor_alpha_and_sigmoid() -> None:
    cfg = config_from_dict({"augmentor": {"transformer": True, "alpah": 500, "sigmoid": 5}})
    augment = Augmenter.from_config(cfg)
    assert augment.op(Elastic) == Elastic(500, (5.0,), 0.25)


def test_bad_probability_and_shrink_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"\[augmentor\] flip_probability"):
        config_from_dict({"augmentor": {"flip_probability": 1.5}})
    with pytest.raises(ConfigError, match=r"\[augmentor\] shrinks = 0"):
        Augmenter.from_config(config_from_dict({"augmentor": {"shrinks": [0.0]}}))


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Four 32x32 pairs: noisy images with a green and a red square on colour masks."""
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (tmp_path / "train" / folder).mkdir(parents=True)
    for i in range(4):
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32, 3), dtype=np.uint8)
        mask[4 + i:16 + i, 6:20] = (0, 255, 0)  # BGR green = class 1
        mask[20:28, 18:30] = (0, 0, 255)  # BGR red = class 2
        cv2.imwrite(str(tmp_path / "train" / "images" / f"{i:03d}.png"), image)
        cv2.imwrite(str(tmp_path / "train" / "masks" / f"{i:03d}.png"), mask)
    return tmp_path


def dataset_config(data: Path, num_classes: int = 3):
    return config_from_dict({
        "model": {"image_width": 32, "image_height": 32, "num_classes": num_classes},
        "train": {"images_dir": str(data / "train" / "images"), "masks_dir": str(data / "train" / "masks")},
        "augmentor": {"rotation_probability": 1.0, "angles": [30]},
    })


def test_preview_grid_writes_one_png(tiny_dataset: Path, tmp_path: Path) -> None:
    out = preview_grid(dataset_config(tiny_dataset), 5, tmp_path / "preview.png", seed=0)
    sheet = cv2.imread(str(out))
    assert out.name == "preview.png" and sheet is not None
    assert sheet.shape == (2 * 32 + 4, 3 * (32 + 4 + 32) + 2 * 4, 3)  # 5 tiles (image | mask) on a 3x2 sheet
    colours = {tuple(c) for c in sheet.reshape(-1, 3).tolist()}
    assert (0, 255, 0) in colours and (0, 0, 255) in colours  # class colours from rgb_map (BGR on disk)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_augment_offline_writes_png_pairs_readable_by_the_same_config(tiny_dataset: Path, tmp_path: Path,
                                                                      num_classes: int) -> None:
    cfg = dataset_config(tiny_dataset, num_classes)
    out = tmp_path / f"augmented{num_classes}"
    assert augment_offline(cfg, out, copies=2, seed=0) == 8
    images, masks = sorted((out / "images").glob("[!.]*")), sorted((out / "masks").glob("[!.]*"))  # no manifest
    assert [p.name for p in images] == [p.name for p in masks] and len(images) == 8
    assert all(p.suffix == ".png" for p in images + masks)
    values = np.unique(np.concatenate([cv2.imread(str(p), cv2.IMREAD_UNCHANGED).reshape(-1) for p in masks]))
    assert set(values.tolist()) <= {0, 255}  # pure label colours only, no blended edges
    with pytest.raises(DataError, match="already holds files"):
        augment_offline(cfg, out, copies=1, seed=0)



@pytest.mark.parametrize("where, relation", [(".", "contains"), ("train/images", "is the same folder as")])
def test_augment_offline_into_an_input_folder_is_refused_before_writing(tiny_dataset: Path, where: str,
                                                                         relation: str) -> None:
    out = tiny_dataset / where
    before = sorted(p for p in tiny_dataset.rglob("*"))
    with pytest.raises(ConfigError) as info:
        augment_offline(dataset_config(tiny_dataset), out, copies=1, seed=0)
    assert str(info.value) == (f"augment --offline {out} {relation} [train] images_dir {tiny_dataset / 'train' / 'images'}: "
                               "its outputs would overwrite or move the inputs; choose another folder")
    assert sorted(p for p in tiny_dataset.rglob("*")) == before

def test_half_precision_channels_last_batches_keep_their_dtype_and_layout() -> None:
    labels = block_labels(2, 32, 3)
    images = encode(labels).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    out_images, out_labels = GEOMETRIC(images, labels, torch.Generator().manual_seed(0))
    assert out_images.dtype == torch.bfloat16 and out_images.is_contiguous(memory_format=torch.channels_last)
    assert out_labels.dtype == labels.dtype
    assert set(out_labels.unique().tolist()) <= set(labels.unique().tolist())


def test_every_operation_file_registers_its_operation() -> None:
    """Adding an operation is one file in flexunet/augment/ops/ plus its line in OPS: a class left out is found."""
    import importlib
    import inspect

    folder = Path(__file__).resolve().parents[2] / "flexunet" / "augment" / "ops"
    found = set()
    for path in sorted(folder.glob("*.py")):
        if path.stem in {"__init__", "base"}:
            continue
        module = importlib.import_module(f"flexunet.augment.ops.{path.stem}")
        found |= {cls for _, cls in inspect.getmembers(module, inspect.isclass)
                  if cls.__module__ == module.__name__ and "from_config" in vars(cls)}
    assert found == set(OPS)
    methods = {"affine": "matrices", "field": "add_displacement", "intensity": "apply"}
    assert all(callable(getattr(op, methods[op.kind], None)) for op in OPS)
