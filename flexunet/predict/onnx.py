"""An ONNX file as a model: onnxruntime behind the nn.Module call interface, so the Predictor, and with it infer and
evaluate, run an exported (or int8) graph exactly as they run a checkpoint. onnxruntime is the optional [onnx] extra.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from flexunet.config.schema import ModelSection
from flexunet.errors import CheckpointError, require_extra


def _require(module: str) -> ModuleType:
    """Import onnx/onnxruntime lazily: they are the optional [onnx] extra, not needed for training."""
    return require_extra(module, "onnx")


class OnnxModel(nn.Module):
    """An ONNX file behind the nn.Module call interface: `forward(x) -> logits`, so every inference path accepts it."""

    def __init__(self, path: Path, device: torch.device | None = None) -> None:
        super().__init__()
        ort = _require("onnxruntime")
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: ONNX file not found "
                                  f"(write one with `flexunet export CONFIG --onnx {path}`)")
        providers = ["CPUExecutionProvider"]
        if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own types; the user needs the file name and the reason
            raise CheckpointError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        self.path = Path(path)
        self.input_name = self.session.get_inputs()[0].name  # files exported elsewhere may name it differently
        self.num_classes: int | None = None  # set by `check_fits`: the output channels the config expects

    def check_fits(self, section: ModelSection, tile: int | None = None) -> None:
        """Refuse a graph that cannot stand for the config's model, before any image is read: input channels, output
        classes and a fixed input size must be the config's (tiled inference feeds `tile` x `tile` crops). A 1-class
        graph under a 3-class config wrote all-background masks; a graph exported at a fixed size failed inside
        onnxruntime under another."""
        inputs, outputs = self.session.get_inputs()[0].shape, self.session.get_outputs()[0].shape
        if len(inputs) != 4 or len(outputs) != 4:
            raise CheckpointError(f"{self.path}: input {inputs} -> output {outputs}; flexunet runs graphs from images "
                                  "(N, C, H, W) to logits (N, classes, H, W)")
        fixed = [value if isinstance(value, int) and value > 0 else None for value in (*inputs[1:], outputs[1])]
        channels, height, width, classes = fixed
        problems = []
        if channels is not None and channels != section.image_channels:
            problems.append(f"{self.path}: the graph takes {channels}-channel images, "
                            f"{section.where('image_channels')} = {section.image_channels}")
        if classes is not None and classes != section.num_classes:
            problems.append(f"{self.path}: the graph outputs {classes} class channel(s), "
                            f"{section.where('num_classes')} = {section.num_classes}; infer with the config it was "
                            "trained with, or export this config's checkpoint")
        fed = (tile, tile) if tile is not None else (section.image_height, section.image_width)
        if (height, width) != (None, None) and (height, width) != fed:
            given = (f"tiled inference feeds {tile}x{tile} tiles ([tiledinfer] split_size, default the smaller "
                     "model side)" if tile is not None else f"{section.where('image_width')} x image_height = "
                     f"{section.image_width}x{section.image_height}")
            problems.append(f"{self.path}: the graph was exported at a fixed {width}x{height} input, {given}; "
                            f"infer at {width}x{height} (or export a graph with free height and width)")
        if problems:
            raise CheckpointError("\n".join(problems))
        self.num_classes = section.num_classes

    def forward(self, x: Tensor) -> Tensor:
        logits = self.session.run(None, {self.input_name: x.detach().float().cpu().contiguous().numpy()})[0]
        if self.num_classes is not None and (logits.ndim != 4 or logits.shape[1] != self.num_classes):
            # the output's channel count was not fixed in the graph: caught at the first batch instead
            raise CheckpointError(f"{self.path}: the graph output logits of shape {logits.shape}, the config's "
                                  f"[model] num_classes = {self.num_classes} channels")
        return torch.from_numpy(logits).to(x.device)
