"""Deployment: export a trained model to ONNX, and run an ONNX file through the same inference code as PyTorch.

The ONNX graph outputs logits (N, C, H, W), exactly what the PyTorch model returns; probabilities are sigmoid
(C = 1) or softmax over C, applied by `forward_probs` (`LabelSpace.probabilities`) for both backends so TTA, tiling
and thresholds stay identical.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from flexunet.config.schema import Config
from flexunet.errors import FlexunetError, require_extra
from flexunet.files import produce_file
from flexunet.labels import LabelSpace

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

INPUT_NAME, OUTPUT_NAME = "image", "logits"


def _require(module: str) -> ModuleType:
    """Import onnx/onnxruntime lazily: they are the optional [onnx] extra, not needed for training."""
    return require_extra(module, "onnx")


@dataclass(frozen=True)
class ExportResult:
    """The written file, whether height/width are free, and the largest |torch - onnxruntime| logit difference."""

    path: Path
    dynamic_spatial: bool
    max_abs_diff: float


def _export(model: nn.Module, example: Tensor, path: Path, dynamic_spatial: bool, opset: int) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_spatial else {0: "batch"}
    with warnings.catch_warnings():  # the TorchScript exporter warns about traced Python bools and its own deprecation
        warnings.simplefilter("ignore")
        # dynamo=False: the torch.export-based exporter needs onnxscript, which the [onnx] extra does not pull in
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                          opset_version=opset)


def _max_diff(model: nn.Module, session: InferenceSession, x: Tensor) -> float:
    with torch.no_grad():
        expected = model(x).float().numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    if got.shape != expected.shape:
        raise ValueError(f"output shape {got.shape} != {expected.shape}")
    return float(np.abs(got - expected).max())


def export_onnx(model: nn.Module, cfg: Config, path: Path, opset: int = 17) -> ExportResult:
    """Write `model` (on CPU, eval mode) to `path` and check it against PyTorch with onnxruntime on random input.

    Batch is always dynamic. Height and width are dynamic when the exported graph runs at twice the config's input
    size (fully convolutional models); otherwise (e.g. fixed-window transformers) the file is re-exported with the
    config's size fixed, and `dynamic_spatial` says so. The file is built and checked under a temporary name and
    renamed when whole (flexunet.files.produce_file), so a failed export leaves no file and replaces none.
    """
    _require("onnx")
    _require("onnxruntime")
    result = produce_file(Path(path), lambda tmp: _export_checked(model.cpu().eval(), cfg, tmp, opset), kind="onnx")
    return replace(result, path=Path(path))


def _export_checked(model: nn.Module, cfg: Config, path: Path, opset: int) -> ExportResult:
    ort = _require("onnxruntime")
    m = cfg.model
    generator = torch.Generator().manual_seed(0)
    native = torch.rand(2, m.image_channels, m.image_height, m.image_width, generator=generator)
    larger = torch.rand(1, m.image_channels, 2 * m.image_height, 2 * m.image_width, generator=generator)
    try:
        _export(model, native[:1], path, True, opset)
    except torch.onnx.errors.OnnxExporterError:  # an op that needs fixed sizes (e.g. UPerNet's pyramid pooling)
        return _export_fixed(model, native, path, opset, ort)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff = _max_diff(model, session, native)
    try:
        diff = max(diff, _max_diff(model, session, larger))
        return ExportResult(path, True, diff)
    except Exception:  # the graph has the input size baked in: export it fixed so the file says what it accepts
        return _export_fixed(model, native, path, opset, ort)


def _export_fixed(model: nn.Module, native: Tensor, path: Path, opset: int, ort: Any) -> ExportResult:
    """The export with the config's height and width fixed; an op ONNX cannot express at that size is one line."""
    try:
        _export(model, native[:1], path, False, opset)
    except torch.onnx.errors.OnnxExporterError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        size = "x".join(map(str, native.shape[-2:]))
        raise FlexunetError(f"this model cannot be exported to ONNX at {size} ({first})") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ExportResult(path, False, _max_diff(model, session, native))


@dataclass(frozen=True)
class Int8Result:
    """The int8 file, how many images calibrated it, and how it agrees with the fp32 file on those images."""

    path: Path
    calibration_images: int
    max_abs_prob_diff: float  # largest |fp32 - int8| probability over the calibration images
    label_agreement: float  # fraction of calibration pixels with the same label


def quantize_int8(fp32: Path, int8: Path, calibration: Sequence[np.ndarray], space: LabelSpace) -> Int8Result:
    """Static int8 quantization of an exported fp32 ONNX file with onnxruntime: QDQ format, per-channel int8
    weights, uint8 activations whose ranges come from `calibration`, float (1, C, H, W) inputs in [0, 1] at the
    model's input size (what inference feeds); the node that writes the logits stays fp32. Checked against the fp32
    file on the same images."""
    ort = _require("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration:
        raise FlexunetError("int8 calibration needs at least one image (--calibration N, N >= 1)")
    onnx = _require("onnx")
    graph = onnx.load(str(fp32)).graph
    # the layer that writes the logits stays fp32: on an 8-bit output grid, pixels near the 0.5 threshold flip
    # (quantizing it too cost 0.0078 test Dice on the grouped pap-smear split, results/int8_all_layers_quantized.json)
    last = [node.name for node in graph.node if OUTPUT_NAME in node.output]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {INPUT_NAME: item}

    def quantize(target: Path) -> None:
        logging.disable(logging.WARNING)  # onnxruntime logs a pre-processing hint for every model; checked below
        try:
            quantize_static(str(fp32), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=last)
        finally:
            logging.disable(logging.NOTSET)

    produce_file(int8, quantize, kind="onnx")
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    worst, same, total = 0.0, 0, 0
    for x in calibration:
        a, b = (space.probabilities(torch.from_numpy(s.run([OUTPUT_NAME], {INPUT_NAME: x})[0])).numpy()
                for s in sessions)
        worst = max(worst, float(np.abs(a - b).max()))
        same += int((space.labels(a[0]) == space.labels(b[0])).sum())
        total += a[0].shape[-2] * a[0].shape[-1]
    return Int8Result(int8, len(calibration), worst, same / total)


def int8_path(onnx: Path) -> Path:
    """model.onnx -> model.int8.onnx."""
    return onnx.with_name(f"{onnx.stem}.int8.onnx")
