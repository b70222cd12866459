"""`flexunet export --int8`: a statically quantized ONNX file (QDQ, int8 weights) that infers almost the fp32 masks."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flexunet.config import load_config
from flexunet.train import train_from_config
from tests.conftest import make_config, run_cli

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_int8_export_and_infer(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, tiny_dataset, {"train": {"epochs": 6, "epoch_change_infer": False}})
    train_from_config(load_config(config), device="cpu", quiet=True)
    fp32 = tmp_path / "model.onnx"
    assert run_cli(monkeypatch, "export", str(config), "--onnx", str(fp32), "--int8", "--calibration", "8", "-q") == 0
    out = capsys.readouterr().out
    int8 = tmp_path / "model.int8.onnx"
    assert f"wrote {int8}: int8 (QDQ, per-channel), calibrated on 8 [train] images" in out
    graph = onnx.load(str(int8)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    [last] = [node for node in graph.node if "logits" in node.output]
    assert last.op_type == "Conv"  # the logits layer stays fp32: its output is not re-quantized to 8 bits
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights and sum(np.prod(t.dims) for t in int8_weights) > 1000  # the conv weights, stored as int8
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    for name, path in (("fp32", fp32), ("int8", int8)):
        assert run_cli(monkeypatch, "infer", str(config), "-q", "--onnx", str(path), "--output",
                       str(tmp_path / name)) == 0
    masks = sorted((tmp_path / "fp32").glob("*.png"))
    assert len(masks) == 4
    agree = np.mean([(cv2.imread(str(p), 0) == cv2.imread(str(tmp_path / "int8" / p.name), 0)).mean() for p in masks])
    foreground = np.mean([(cv2.imread(str(p), 0) > 0).mean() for p in masks])
    assert 0.05 < foreground < 0.6 and agree > 0.97, (agree, foreground)  # a trained model: discs found by both


def test_int8_calibration_needs_images(tmp_path: Path, tiny_dataset: Path) -> None:
    from flexunet.errors import FlexunetError
    from flexunet.infer.export import quantize_int8
    from flexunet.labels import LabelSpace

    cfg = load_config(make_config(tmp_path, tiny_dataset))
    with pytest.raises(FlexunetError, match="at least one image"):
        quantize_int8(tmp_path / "a.onnx", tmp_path / "a.int8.onnx", [], LabelSpace.from_config(cfg))
