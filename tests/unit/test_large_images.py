"""Decompression bombs and huge files are reported and skipped from their header, never decoded whole."""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import flexunet.data.io as io
from flexunet.config import config_from_dict
from flexunet.config.schema import ImageSection
from flexunet.data import build_datasets
from flexunet.data.dataset import drop_oversized
from flexunet.data.io import ImageTooLarge, read_image, read_mask
from flexunet.data.pairing import pair_files
from flexunet.errors import ConfigError
from tests.conftest import write_disc_pairs


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming width x height grey pixels, with one tiny IDAT: under 100 bytes on disk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 10))
                     + _chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [100_000, 30_000])
def test_bomb_is_refused_from_its_header_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          side: int) -> None:
    bomb = write_png_bomb(tmp_path / "bomb.png", side, side)
    assert bomb.stat().st_size < 100

    def no_decode(*_: object) -> None:
        raise AssertionError("the bomb was handed to the decoder")

    monkeypatch.setattr(io.cv2, "imdecode", no_decode)
    for reader in (read_image, read_mask):
        with pytest.raises(ImageTooLarge, match=rf"bomb\.png: {side}x{side} pixels is over the limit"):
            reader(bomb)


def test_pixel_limit_is_one_key_with_a_larger_default_for_tiled_inference() -> None:
    assert ImageSection().pixel_limit() == 8000**2 and ImageSection().pixel_limit(tiled=True) == 20000**2
    assert ImageSection(max_pixels=100).pixel_limit(tiled=True) == 100
    with pytest.raises(ConfigError, match=r"\[image\] max_pixels"):
        config_from_dict({"image": {"max_pixels": 0}})


def test_oversized_pairs_are_dropped_with_one_line(tmp_path: Path) -> None:
    data = write_disc_pairs(tmp_path, 3, size=32)
    pairs = pair_files(str(data / "images"), str(data / "masks"))
    kept, line = drop_oversized(pairs, 32 * 32)
    assert kept == pairs and line is None
    kept, line = drop_oversized(pairs, 32 * 32 - 1)
    assert kept == [] and line.startswith("skipped 3 pairs over 1,023 pixels ([image] max_pixels): img_000.png (32x32)")


def test_training_data_skips_a_bomb_with_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_disc_pairs(tmp_path / "train", 4, size=32)
    write_png_bomb(data / "images" / "bomb.png", 100_000, 100_000)
    write_png_bomb(data / "masks" / "bomb.png", 100_000, 100_000)
    cfg = config_from_dict({"model": {"image_width": 32, "image_height": 32},
                            "train": {"images_dir": str(data / "images"), "masks_dir": str(data / "masks")}})
    split = build_datasets(cfg)
    assert len(split.train) + len(split.valid) == 4
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: [train] skipped 1 pairs over 64,000,000 pixels ([image] max_pixels): "
                        "bomb.png (100000x100000)"]


@pytest.mark.parametrize(("tiled", "limit"), [(False, 8000**2), (True, 20000**2)])
def test_inference_reads_with_the_limit_of_its_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiled: bool,
                                                    limit: int) -> None:
    import torch

    import flexunet.infer.predict as predict
    from flexunet.predict import predictor_from_config

    data = write_disc_pairs(tmp_path, 2, size=32)
    asked = []

    def refuse(path: Path, channels: int, color_order: str, max_pixels: int) -> None:
        asked.append(max_pixels)
        raise ImageTooLarge(path, (1, 1), max_pixels)

    monkeypatch.setattr(predict, "read_image", refuse)
    cfg = config_from_dict({"model": {"image_width": 32, "image_height": 32}, "tiledinfer": {"overlapping": 8}})
    predictor = predictor_from_config(cfg, torch.nn.Identity(), torch.device("cpu"), tiled=tiled)
    result = predict.predict_folder(predictor, predict.FileSettings.from_config(cfg, tiled), str(data / "images"),
                                    tmp_path / "out", None)
    assert asked == [limit, limit] and len(result.skipped) == 2 and not result.written


@contextmanager
def address_space_limited(extra: int = 2**30) -> Iterator[None]:
    """At most `extra` more bytes of address space while inside: a file read whole into memory fails the test with
    MemoryError instead of exhausting the machine."""
    resource = pytest.importorskip("resource")
    status = Path("/proc/self/status")
    if not status.is_file():
        pytest.skip("needs /proc/self/status")
    used = next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines() if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_a_sparse_50_gb_png_is_one_line_and_never_read(tmp_path: Path) -> None:
    """Issue 27: a 50 GB sparse file named .png (all zeros, or a real PNG header followed by zeros) was read whole
    into memory before decoding; its length alone now says it cannot be an image within the limits."""
    zeros, tail = tmp_path / "zeros.png", tmp_path / "tail.png"
    with open(zeros, "wb") as f:
        f.truncate(50 * 10**9)
    write_disc_pairs(tmp_path / "one", 1, size=32)
    tail.write_bytes((tmp_path / "one" / "images" / "img_000.png").read_bytes())
    with open(tail, "r+b") as f:
        f.truncate(50 * 10**9)
    with address_space_limited():
        for reader in (read_image, read_mask):
            with pytest.raises(io.DataError, match=r"zeros.png: 50,000,000,000 bytes, more than an image within "
                                                   r"\[image\] max_pixels can take \(1,552,777,216\); not read"):
                reader(zeros)
            with pytest.raises(io.DataError, match=r"tail.png: 50,000,000,000 bytes, more than a 32x32 image can "
                                                   r"take \(16,801,792\); not read"):
                reader(tail)
    assert read_image(tmp_path / "one" / "images" / "img_000.png").shape == (32, 32, 3)  # real files unaffected
