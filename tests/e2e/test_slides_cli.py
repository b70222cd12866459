"""`flexunet infer CONFIG --slides`: a trained model segments a tiled TIFF into a pyramidal TIFF mask."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flexunet.config import load_config
from flexunet.train import train_from_config
from tests.conftest import make_config, run_cli

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("zarr")


def test_infer_slides_writes_pyramidal_masks(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 8, "epoch_change_infer": False},
                                                  "tiledinfer": {"overlapping": 8}})
    train_from_config(load_config(config), device="cpu", quiet=True)
    rng = np.random.default_rng(0)
    image = np.full((300, 420, 3), 40, np.uint8)
    yy, xx = np.mgrid[:300, :420]
    for cy, cx in rng.integers(20, 280, (12, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 8**2] = 200
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    (tmp_path / "slides").mkdir()
    tifffile.imwrite(tmp_path / "slides" / "scan.ome.tif", image, tile=(64, 64), photometric="rgb")
    (tmp_path / "slides" / "flat.tif").write_bytes(b"not a tiff")
    code = run_cli(monkeypatch, "infer", str(config), "--slides", "--images", str(tmp_path / "slides"),
                   "--output", str(tmp_path / "masks"), "-q")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "skipped: " in out and "flat.tif: not a readable TIFF" in out and "wrote 1 mask to" in out
    with tifffile.TiffFile(tmp_path / "masks" / "scan.tif") as handle:
        mask = handle.series[0].levels[0].asarray()
        assert handle.pages[0].is_tiled and len(handle.series[0].levels) == 2
    assert mask.shape == (300, 420) and set(np.unique(mask)) <= {0, 255}
    truth = image.mean(axis=2) > 120
    dice = 2 * ((mask > 0) & truth).sum() / ((mask > 0).sum() + truth.sum())
    (tmp_path / "png").mkdir()
    cv2.imwrite(str(tmp_path / "png" / "scan.png"), image[:, :, ::-1])  # cv2 writes BGR
    assert run_cli(monkeypatch, "infer", str(config), "--tiled", "--images", str(tmp_path / "png"),
                   "--output", str(tmp_path / "png_masks"), "-q") == 0
    tiled = cv2.imread(str(tmp_path / "png_masks" / "scan.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, tiled)  # band by band from the TIFF = `infer --tiled` on the whole PNG
    assert dice > 0.6, dice  # eight epochs on discs: the discs are found (an empty mask scores 0)
    assert not (tmp_path / "masks_merged").exists()  # slides get no overlays
