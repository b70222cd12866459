"""Configs and checkpoints are data, never code: random or malicious input gets a clean flexunet error only."""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexunet.config import config_from_dict, config_from_text
from flexunet.data.io import read_image, read_mask
from flexunet.errors import CheckpointError, ConfigError, DataError
from flexunet.models import build_model
from flexunet.models.registry import read_state_dict
from flexunet.runs.checkpoint import load_checkpoint, load_weights, save_checkpoint
from tests.conftest import run_cli

SECTIONS = ["model", "train", "valid", "eval", "test", "infer", "mask", "augmentor", "tiledinfer", "bogus", "Model"]
KEYS = ["epochs", "batch_size", "image_width", "num_classes", "rgb_map", "loss", "images_dir", "alpah", "angles",
        "threshold", "dropout_rate", "x", "base_kernels", "learning_rate", "model"]
VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["5", "-1", "1e9", "None", "True", "(3,3)", "[0, 90]", "{(0,0,0):0}", "\"./x\"", "__import__('os')",
                     "1.5", "'a' * 10**9", "{(0,0,0):'a'}", "[" * 200, "10**10**10", "%(x)s", "nan"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(SECTIONS), st.sampled_from(KEYS), VALUES), max_size=8), st.text(max_size=40))
def test_random_ini_text_gives_config_or_config_error(entries: list[tuple[str, str, str]], junk: str) -> None:
    text = "".join(f"[{s}]\n{k} = {v}\n" for s, k, v in entries) + junk
    try:
        config_from_text(text, "fuzz.config")
    except ConfigError as exc:
        assert str(exc).strip()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_as_image_or_mask_give_data_error(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(blob)
    for reader in (read_image, read_mask):
        try:
            reader(path)
        except DataError as exc:
            assert "x.png" in str(exc)


@pytest.mark.parametrize("cut", [0, 10, 100, 1000])
def test_truncated_png_and_jpeg(tmp_path: Path, cut: int) -> None:
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for ext in (".png", ".jpg"):
        ok, data = cv2.imencode(ext, image)
        path = tmp_path / f"t{ext}"
        path.write_bytes(data.tobytes()[:cut])
        try:
            read_image(path)
        except DataError as exc:
            assert path.name in str(exc)


def test_malicious_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": "", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_as_checkpoint(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError, match="best.pt"):
        load_checkpoint(path)


def test_truncated_real_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(100, 100)}, "config": "[model]\n"})
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="last.pt"):
            load_checkpoint(path)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.sampled_from(["down.0.block.0.weight", "head.weight", "head.bias", "junk", "up.0.bias"]),
                       st.lists(st.integers(1, 4), min_size=0, max_size=4), max_size=5))
def test_wrong_shaped_weights_give_checkpoint_error(shapes: dict[str, list[int]]) -> None:
    model = build_model(config_from_dict({"model": {"image_width": 16, "image_height": 16, "num_layers": 2,
                                                    "base_filters": 4}}).model)
    state = {"model": {k: torch.zeros(v) for k, v in shapes.items()}, "config": ""}
    with pytest.raises(CheckpointError):
        load_weights(model, state, Path("x.pt"))


def test_non_checkpoint_zip_and_pickle(tmp_path: Path) -> None:
    archive = tmp_path / "a.pt"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x/data.pkl", b"junk")
    with pytest.raises(CheckpointError):
        load_checkpoint(archive)
    plain = tmp_path / "b.pt"
    plain.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)
    buffer = io.BytesIO()
    torch.save([1, 2, 3], buffer)
    (tmp_path / "c.pt").write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="not a flexunet checkpoint"):
        load_checkpoint(tmp_path / "c.pt")


def _safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


MALFORMED_WEIGHTS = {  # each made a traceback in issue 27's hostile round
    "text.safetensors": b"hello, these are not weights\n",
    "empty.safetensors": b"",
    "huge_header.safetensors": struct.pack("<Q", 10**12) + b"{}",
    "bad_json.safetensors": _safetensors(b"{notjson"),
    "list_header.safetensors": _safetensors(b"[1, 2]"),
    "bad_offsets.safetensors": _safetensors(b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}'),
    "bad_dtype.safetensors": _safetensors(b'{"w": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 8),
    "huge_shape.safetensors": _safetensors(b'{"w": {"dtype": "F32", "shape": [1099511627776, 1099511627776], '
                                           b'"data_offsets": [0, 8]}}', b"\0" * 8),
    "text.pth": b"hello, these are not weights\n",
    "three.pt": b"aaa",
    "one_byte.pt": b"\x80",
    "newline.pth": b"\n",
    "global.pth": b"c",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_WEIGHTS))
def test_malformed_weights_files_give_checkpoint_error(tmp_path: Path, name: str) -> None:
    """Any bytes given as weights (pretrained_weights, encoder_weights, a checkpoint) are one CheckpointError naming
    the file; torch's advice to load with weights_only=False is never passed on."""
    path = tmp_path / name
    path.write_bytes(MALFORMED_WEIGHTS[name])
    for reader in (lambda p: read_state_dict(p, "state_dict"), load_checkpoint):
        with pytest.raises(CheckpointError, match=name) as caught:
            reader(path)
        assert len(str(caught.value).splitlines()) == 1 and "weights_only=False" not in str(caught.value)


def test_malformed_pretrained_weights_exit_2_on_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "enc.safetensors"
    weights.write_bytes(b"not safetensors at all")
    config = tmp_path / "x.config"
    config.write_text(f"[model]\nimage_width = 16\nimage_height = 16\nnum_layers = 2\nbase_filters = 4\n"
                      f"pretrained_weights = {str(weights)!r}\n")
    assert run_cli(monkeypatch, "inspect", str(config)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "enc.safetensors: not a readable state_dict" in err
