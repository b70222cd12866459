"""Importers: fabricated Herlev, ISIC, UCSB, SIPaKMeD and generic layouts become <out>/all + a loadable config."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from flexunet.config.load import load_config
from flexunet.data.dataset import pairs_for
from flexunet.data.io import read_mask
from flexunet.prepare.herlev import Canvas, herlev, nucleus_region
from flexunet.prepare.importers import import_generic, import_isic, import_sipakmed, import_ucsb
from flexunet.prepare.stats import dataset_stats, plot_stats
from tests.conftest import requires_shared


def bgr(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)


def herlev_cell(folder: Path, stem: str, seed: int, with_mask: bool = True) -> None:
    """A Herlev pair: X.BMP and X-d.bmp with dark-blue background, red cytoplasm, pure-blue nucleus, cyan dot."""
    rng = np.random.default_rng(seed)
    bgr(folder / f"{stem}.BMP", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    if with_mask:
        seg = np.zeros((60, 80, 3), np.uint8)
        seg[:] = (0, 0, 128)  # background
        seg[10:50, 10:70] = (255, 0, 0)  # cytoplasm
        seg[20:40, 30:50] = (0, 0, 255)  # nucleus
        seg[0:2, 0:2] = (0, 255, 255)  # cyan: blue == 255 but not the nucleus
        bgr(folder / f"{stem}-d.bmp", seg)


def test_nucleus_region_takes_only_pure_blue() -> None:
    seg = np.array([[[0, 0, 255], [0, 255, 255], [255, 255, 255], [0, 0, 128], [10, 20, 252]]], np.uint8)
    assert nucleus_region(seg).tolist() == [[True, False, False, False, True]]


def test_herlev_frames_cells_colours_categories_and_writes_config(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for i in range(3):
        herlev_cell(raw / "severe_dysplastic", f"1490{i}-1491{i}-001", i)
        herlev_cell(raw / "normal_columnar", f"1500{i}-1501{i}-001", 10 + i)
    herlev_cell(raw / "normal_columnar", "160-161-001", 99, with_mask=False)

    result = herlev(raw, tmp_path / "out", Canvas(size=100, crop=64, resize=32))

    assert result.pairs == 6 and result.unlabelled == 0
    assert any("160-161-001.BMP: no mask" in s for s in result.skipped)
    assert set(result.rgb_map) == {(0, 0, 0), (255, 255, 255), (255, 255, 0)}
    mask = read_mask(tmp_path / "out" / "all" / "masks" / "14900-14910-001.png")
    assert mask.shape == (32, 32, 3)
    assert {tuple(c) for c in mask.reshape(-1, 3)} == {(0, 0, 0), (255, 255, 255)}  # nearest resize: no blends
    assert (mask[..., 0] > 0).sum() == 10 * 10  # 20x20 nucleus at half scale; the cyan dot is not taken
    cfg = load_config(result.config)
    assert cfg.model.num_classes == 3 and cfg.model.image_width == 64  # config size: at least 64
    assert len(pairs_for(cfg, "train")) + len(pairs_for(cfg, "valid")) + len(pairs_for(cfg, "test")) == 6


def test_herlev_seamless_clone_runs(tmp_path: Path) -> None:
    herlev_cell(tmp_path / "raw" / "severe_dysplastic", "1-2-001", 0)
    result = herlev(tmp_path / "raw", tmp_path / "out", Canvas(size=128, crop=96, seamless=True), ratios=None)
    image = cv2.imread(str(tmp_path / "out" / "all" / "images" / "1-2-001.png"))
    assert result.pairs == 1 and image.shape == (96, 96, 3)


def test_herlev_real_raw_samples_have_no_masks_but_frame(tmp_path: Path) -> None:
    raw = requires_shared("herlev-raw-samples")
    result = herlev(raw, tmp_path / "out", keep_unlabelled=True)
    assert result.pairs == 0 and result.unlabelled == 20 and result.config is None
    assert all("no mask" in line and "-d.bmp" in line for line in result.skipped)
    framed = sorted((tmp_path / "out" / "unlabelled" / "images").glob("*.png"))  # .flexunet-files beside them
    assert len(framed) == 20 and all(cv2.imread(str(p)).shape == (128, 128, 3) for p in framed)


def test_isic_binary_masks_with_suffix(tmp_path: Path) -> None:
    for i in range(4):
        image = np.full((90, 120, 3), 40 * i, np.uint8)
        mask = np.zeros((90, 120), np.uint8)
        mask[20:60, 30:90] = 255
        bgr(tmp_path / "raw" / "images" / f"ISIC_{i:07d}.jpg", image)
        bgr(tmp_path / "raw" / "masks" / f"ISIC_{i:07d}_segmentation.png", mask)
    result = import_isic(tmp_path / "raw", tmp_path / "out", max_side=60)
    assert result.pairs == 4 and result.rgb_map is None
    assert cv2.imread(str(tmp_path / "out" / "all" / "masks" / "ISIC_0000000.png")).shape[:2] == (45, 60)
    assert load_config(result.config).model.num_classes == 1


def test_ucsb_masks_coloured_by_class(tmp_path: Path) -> None:
    for name in ("ytma10_010704_benign1", "ytma10_010704_malignant1", "ytma12_benign2"):
        bgr(tmp_path / "raw" / "Images" / f"{name}_ccd.tif", np.full((40, 40, 3), 100, np.uint8))
        mask = np.zeros((40, 40), np.uint8)
        mask[5:15, 5:15] = 255
        bgr(tmp_path / "raw" / "Masks" / f"{name}.TIF", mask)
    result = import_ucsb(tmp_path / "raw", tmp_path / "out")
    mask = read_mask(tmp_path / "out" / "all" / "masks" / "ytma10_010704_malignant1_ccd.png")
    assert result.pairs == 3 and tuple(mask[10, 10]) == (255, 0, 0)
    assert load_config(result.config).model.num_classes == 3


def test_sipakmed_nuclei_filled_from_dat(tmp_path: Path) -> None:
    folder = tmp_path / "raw" / "im_Koilocytotic"
    for i in range(3):
        bgr(folder / f"{i:03d}.bmp", np.full((50, 50, 3), 200, np.uint8))
        (folder / f"{i:03d}_nuc_1.dat").write_text("10.0,10.0\n30.0,10.0\n30.0,30.0\n10.0,30.0\n")
    result = import_sipakmed(tmp_path / "raw", tmp_path / "out")
    mask = read_mask(tmp_path / "out" / "all" / "masks" / "koilocytotic_000.png")
    assert result.pairs == 3 and tuple(mask[20, 20]) == (0, 0, 255) and tuple(mask[40, 40]) == (0, 0, 0)


def test_generic_colour_masks_kept_and_stats_plot(tmp_path: Path) -> None:
    for i in range(5):
        mask = np.zeros((64, 64, 3), np.uint8)
        mask[:20, :20] = (0, 255, 0)
        mask[40:, 40:] = (255, 0, 0)
        mask[30, 30] = (0, 128, 0)  # an anti-aliased stray colour
        bgr(tmp_path / "raw" / "images" / f"p{i}.png", np.full((64, 64, 3), 30 * i, np.uint8))
        bgr(tmp_path / "raw" / "masks" / f"p{i}.png", mask)
    result = import_generic(tmp_path / "raw" / "images", tmp_path / "raw" / "masks", tmp_path / "out", ratios=None)
    assert result.pairs == 5 and set(result.rgb_map) == {(0, 0, 0), (0, 255, 0), (255, 0, 0)}
    assert load_config(result.config).model.num_classes == 3

    stats = dataset_stats(tmp_path / "out")
    (split,) = stats.splits
    assert split.name == "all" and len(split.files.pairs) == 5
    assert split.images_per_class == (5, 5, 5)
    assert any("(0, 128, 0)" in w and "nearest is (0, 255, 0)" in w for w in stats.warnings)
    assert plot_stats(stats, tmp_path / "chart.png").stat().st_size > 1000


def square_mask(value: int, dtype: type = np.uint8, colour: bool = False) -> np.ndarray:
    """A 32x32 mask with a 10x10 square of `value` (green when `colour`) on 0."""
    mask = np.zeros((32, 32, 3) if colour else (32, 32), dtype)
    mask[5:15, 5:15] = (0, value, 0) if colour else value
    return mask


def test_stats_and_import_read_0_1_masks_as_training_does(tmp_path: Path) -> None:
    """A 0/1 mask holds the labels themselves (data/masks.py): thresholding it at 127 made it empty."""
    for i in range(3):
        bgr(tmp_path / "train" / "images" / f"p{i}.png", np.full((32, 32, 3), 40 * i, np.uint8))
        bgr(tmp_path / "train" / "masks" / f"p{i}.png", square_mask(1))
    (split,) = dataset_stats(tmp_path).splits
    assert split.empty_masks == () and split.class_pixels == (3 * (32 * 32 - 100), 3 * 100)
    result = import_generic(tmp_path / "train" / "images", tmp_path / "train" / "masks", tmp_path / "out", ratios=None)
    written = read_mask(tmp_path / "out" / "all" / "masks" / "p0.png")
    assert result.pairs == 3 and (written == 255).sum() == 100 and set(np.unique(written)) == {0, 255}


def test_stats_read_16_bit_colour_masks_on_their_8_bit_levels(tmp_path: Path) -> None:
    for i in range(3):
        bgr(tmp_path / "train" / "images" / f"p{i}.png", np.full((32, 32, 3), 40 * i, np.uint8))
        bgr(tmp_path / "train" / "masks" / f"p{i}.png", square_mask(65535, np.uint16, colour=True))
    assert read_mask(tmp_path / "train" / "masks" / "p0.png").dtype == np.uint16
    stats = dataset_stats(tmp_path)
    assert stats.rgb_map == {(0, 0, 0): 0, (0, 255, 0): 1}
    assert stats.splits[0].class_pixels == (3 * (32 * 32 - 100), 3 * 100) and stats.warnings == []


def test_stats_and_doctor_never_read_a_sparse_50_gb_png_into_memory(tmp_path: Path) -> None:
    """Issue 27: the exact-copy check hashed every image with read_bytes(), so a 50 GB sparse .png was read whole.
    Only files whose length another file shares are hashed now (in blocks), and the file is one warning."""
    from tests.conftest import write_disc_pairs
    from tests.unit.test_large_images import address_space_limited

    for split, n in (("train", 2), ("valid", 1)):
        write_disc_pairs(tmp_path / "data" / split, n, seed=len(split))
    for kind in ("images", "masks"):
        with open(tmp_path / "data" / "train" / kind / "sparse.png", "wb") as f:
            f.truncate(50 * 10**9)
    copy = (tmp_path / "data" / "train" / "images" / "img_000.png").read_bytes()
    (tmp_path / "data" / "valid" / "images" / "img_000.png").write_bytes(copy)  # an exact copy is still found
    with address_space_limited():
        result = dataset_stats(tmp_path / "data")
    assert any("sparse.png: 50,000,000,000 bytes" in line and line.endswith("not read") for line in result.warnings)
    assert [(a.parent.parent.name, b.parent.parent.name) for a, b in result.duplicates] == [("train", "valid")]
