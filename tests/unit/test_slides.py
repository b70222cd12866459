"""Whole-slide inference: band-by-band blending equals the whole-image sliding window, pyramids, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flexunet.config import config_from_dict
from flexunet.errors import DataError
from flexunet.files import MANIFEST
from flexunet.labels import LabelSpace
from flexunet.predict import forward_probs, to_input
from flexunet.predict.tiling import sliding_window_probs

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

from flexunet.infer.slides import (  # noqa: E402
    OUTPUT_TILE,
    list_slides,
    open_slide,
    predict_slide,
    predict_slides,
    read_level,
)


def slide_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    base = 128 + 90 * np.sin(x / 37.0) * np.cos(y / 23.0)
    return np.clip(base[..., None] + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


def write_tiled(path: Path, image: np.ndarray, tile: int = 128) -> Path:
    tifffile.imwrite(path, image, tile=(tile, tile), photometric="rgb", compression="zlib")
    return path


class Contrast(nn.Module):
    """A fixed random 2-layer conv net: enough structure that labels change inside every tile."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.Tanh(), nn.Conv2d(4, 1, 5, padding=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5) * 4


@pytest.fixture
def setup() -> tuple[nn.Module, LabelSpace, object]:
    cfg = config_from_dict({"model": {"image_width": 64, "image_height": 64, "num_classes": 1},
                            "tiledinfer": {"overlapping": 16}, "infer": {"batch_size": 3}})
    model = Contrast().eval()
    space = LabelSpace.from_config(cfg)

    def probs_fn(tiles: np.ndarray) -> np.ndarray:
        return forward_probs(model, to_input(list(tiles), torch.device("cpu")), space).numpy()

    return model, space, (cfg, probs_fn)


def test_bands_give_the_labels_of_the_whole_image_sliding_window(tmp_path: Path, setup) -> None:
    model, space, (cfg, probs_fn) = setup
    image = slide_image(300, 700)  # 6 x 15 tiles of 64 px with 16 overlap; rows and columns not multiples of 64
    slide = write_tiled(tmp_path / "scan.ome.tif", image)
    result = predict_slide(slide, tmp_path / "scan.tif", probs_fn, space, 64, 16, 3, 3, "RGB")
    whole = sliding_window_probs(lambda crops: probs_fn(np.stack(crops)), image, 64, 16, batch_size=3)
    expected = space.mask_pixels(space.labels(whole))
    assert 0.2 < (expected > 0).mean() < 0.8  # both labels present: the comparison means something
    got = read_level(result.path)
    assert got.shape == (300, 700) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)  # the same sums in the same order: not one pixel differs
    assert result.tiles == 6 * 15 and result.levels == 3  # 700 -> 350 -> 175 <= 256
    with tifffile.TiffFile(result.path) as handle:
        page = handle.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (OUTPUT_TILE, OUTPUT_TILE)
        assert handle.is_bigtiff and len(handle.series[0].levels) == 3
    np.testing.assert_array_equal(read_level(result.path, 1), got[::2, ::2])
    np.testing.assert_array_equal(read_level(result.path, 2), got[::4, ::4])
    assert [p.name for p in tmp_path.glob(".*")] == [MANIFEST]  # the level store and temporary TIFF are gone


def test_ome_zarr_input_reads_like_the_tiff(tmp_path: Path, setup) -> None:
    _, space, (cfg, probs_fn) = setup
    image = slide_image(200, 260, seed=1)
    write_tiled(tmp_path / "a.tif", image)
    group = zarr.open_group(str(tmp_path / "a.ome.zarr"), mode="w")
    group.create_array("0", shape=(1, 3, 200, 260), chunks=(1, 3, 64, 64), dtype="uint8")[:] = (
        np.moveaxis(image, -1, 0)[None])
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "t"}, {"name": "c"}, {"name": "y"},
                                                              {"name": "x"}], "datasets": [{"path": "0"}]}]
    assert [p.name for p in list_slides(str(tmp_path))] == ["a.ome.zarr", "a.tif"]
    from_tiff = predict_slide(tmp_path / "a.tif", tmp_path / "out" / "t.tif", probs_fn, space, 64, 16, 3, 3, "RGB")
    from_zarr = predict_slide(tmp_path / "a.ome.zarr", tmp_path / "out" / "z.tif", probs_fn, space, 64, 16, 3, 3,
                              "RGB")
    np.testing.assert_array_equal(read_level(from_zarr.path), read_level(from_tiff.path))


def test_region_reads_only_the_rows_asked_for(tmp_path: Path) -> None:
    image = slide_image(520, 300)
    slide = open_slide(write_tiled(tmp_path / "s.tif", image))
    try:
        np.testing.assert_array_equal(slide.region(130, 64), image[130:194])
        assert (slide.height, slide.width) == (520, 300)
    finally:
        slide.close()


def test_bad_slides_are_one_line_errors_and_skipped(tmp_path: Path, setup) -> None:
    _, _, (cfg, probs_fn) = setup
    tifffile.imwrite(tmp_path / "strips.tif", slide_image(100, 100), photometric="rgb")  # not tiled
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    write_tiled(tmp_path / "small.tif", slide_image(40, 300), tile=16)
    with pytest.raises(DataError, match=r"strips.tif: not a tiled TIFF"):
        open_slide(tmp_path / "strips.tif")
    with pytest.raises(DataError, match=r"broken.tif: not a readable TIFF"):
        open_slide(tmp_path / "broken.tif")
    result = predict_slides(list_slides(str(tmp_path)), tmp_path / "out", probs_fn, cfg)
    assert result.written == []
    assert len(result.skipped) == 3 and all("\n" not in line for line in result.skipped)
    assert "smaller than one 64-px tile" in " ".join(result.skipped)
    with pytest.raises(DataError, match="no slides"):
        list_slides(str(tmp_path / "out"))


def test_resume_keeps_a_newer_mask_and_redoes_a_broken_one(tmp_path: Path, setup) -> None:
    _, _, (cfg, probs_fn) = setup
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        write_tiled(tmp_path / "in" / f"{name}.tif", slide_image(130, 130))
    first = predict_slides(list_slides(str(tmp_path / "in")), tmp_path / "out", probs_fn, cfg)
    assert len(first.written) == 2
    (tmp_path / "out" / "b.tif").write_bytes(b"II*\x00truncated")
    again = predict_slides(list_slides(str(tmp_path / "in")), tmp_path / "out", probs_fn, cfg, resume=True)
    assert [p.name for p in again.resumed] == ["a.tif"] and [p.name for p in again.written] == ["b.tif"]


def test_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from flexunet.errors import FlexunetError
    from flexunet.infer.slides import require

    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr now raises ImportError
    with pytest.raises(FlexunetError, match=r"zarr is not installed; .*pip install 'flexunet\[slides\]'"):
        require("zarr")


def small_tiff_claiming(path: Path, height: int, width: int) -> Path:
    """A 1 KB tiled TIFF of one 16x16 tile whose header claims height x width pixels (every other tile absent)."""
    import struct

    tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint8), tile=(16, 16), photometric="rgb")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as handle:
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            tag = handle.pages[0].tags[name]
            struct.pack_into("<I" if tag.dtype == 4 else "<H", data, tag.valueoffset, value)
    path.write_bytes(bytes(data))
    return path


def test_max_pixels_applies_to_slides(tmp_path: Path, setup) -> None:
    """Issue 27: a small TIFF claiming 100000 x 65535 pixels ran unbounded; [image] max_pixels (default: the
    `infer --tiled` limit, 20000**2) refuses it from its header, as images are refused, and the other slides go on."""
    _, _, (cfg, probs_fn) = setup
    (tmp_path / "in").mkdir()
    small_tiff_claiming(tmp_path / "in" / "bomb.tif", 65535, 100000)
    write_tiled(tmp_path / "in" / "fine.tif", slide_image(130, 130))
    limited = cfg.model_copy(update={"image": cfg.image.model_copy(update={"max_pixels": 130 * 129})})
    first = predict_slides([tmp_path / "in" / "fine.tif"], tmp_path / "out1", probs_fn, limited)
    assert first.written == [] and "fine.tif: 130x130 pixels is over the limit of 16,770" in first.skipped[0]
    result = predict_slides(list_slides(str(tmp_path / "in")), tmp_path / "out", probs_fn, cfg)
    assert [p.name for p in result.written] == ["fine.tif"]
    assert result.skipped == [f"{tmp_path / 'in' / 'bomb.tif'}: 100000x65535 pixels is over the limit of "
                              "400,000,000 ([image] max_pixels); skipped without decoding"]


def test_non_finite_probabilities_name_the_slide(tmp_path: Path, setup, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, (cfg, probs_fn) = setup
    (tmp_path / "in").mkdir()
    write_tiled(tmp_path / "in" / "a.tif", slide_image(130, 130))

    def nan_fn(tiles: np.ndarray) -> np.ndarray:
        return np.full_like(probs_fn(tiles), np.nan)

    result = predict_slides([tmp_path / "in" / "a.tif"], tmp_path / "out", nan_fn, cfg)
    assert [p.name for p in result.nonfinite] == ["a.tif"]
    assert "warning: the model gave non-finite logits (NaN or inf) for 1 input: a.tif" in capsys.readouterr().out
    assert predict_slides([tmp_path / "in" / "a.tif"], tmp_path / "out2", probs_fn, cfg).nonfinite == []
