"""What a configured model is: its layers, size, cost per image and how far each output pixel sees.

`flexunet inspect CONFIG` prints this; the seed's inspector only wrote Keras' model.summary() and a plot.
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from flexunet.config.aliases import canonical_model_name
from flexunet.config.schema import Config
from flexunet.files import atomic_write_bytes, atomic_write_text
from flexunet.models.registry import build_model


@dataclass(frozen=True)
class LayerRow:
    """One leaf module as it ran: its dotted name, type, output shape and own parameter count."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


@dataclass(frozen=True)
class ModelSummary:
    """Size and cost of the model a config describes, for one image at the config's size."""

    model: str
    input_shape: tuple[int, ...]  # (1, C, H, W)
    output_shape: tuple[int, ...]
    params: int
    trainable_params: int
    flops: int  # per image, forward pass; a multiply-add counts as 2
    receptive_field: tuple[int, int]  # (height, width) in input pixels that move the centre output pixel
    layers: tuple[LayerRow, ...]

    @property
    def sees_whole_image(self) -> bool:
        """True when the receptive field reaches the image border: the true field may be larger still."""
        return self.receptive_field == self.input_shape[2:]

    def headline(self) -> str:
        """A few lines for the terminal."""
        rf_h, rf_w = self.receptive_field
        whole = " (the whole input)" if self.sees_whole_image else ""
        return "\n".join([
            f"model            {self.model}",
            f"input -> output  {self.input_shape} -> {self.output_shape}",
            f"parameters       {self.params:,} ({self.trainable_params:,} trainable)",
            f"FLOPs per image  {self.flops / 1e9:,.2f} G",
            f"receptive field  {rf_h} x {rf_w} px{whole}",
        ])


def inspect_model(cfg: Config) -> ModelSummary:
    """Build [model] and measure it on one image of the config's size (random weights, nothing is trained)."""
    section = cfg.model
    model = build_model(section).eval()
    x = torch.rand(1, section.image_channels, section.image_height, section.image_width)
    rows: list[LayerRow] = []
    hooks = [
        module.register_forward_hook(_recorder(rows, name, module))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    for hook in hooks:
        hook.remove()
    return ModelSummary(
        model=canonical_model_name(section.model),
        input_shape=tuple(x.shape),
        output_shape=tuple(y.shape),
        params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        flops=counter.get_total_flops(),
        receptive_field=receptive_field(model, x),
        layers=tuple(rows),
    )


def _recorder(rows: list[LayerRow], name: str, module: nn.Module) -> Callable[[nn.Module, object, object], None]:
    params = sum(p.numel() for p in module.parameters(recurse=False))

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        shape = tuple(output.shape) if isinstance(output, Tensor) else ()
        rows.append(LayerRow(name, type(module).__name__, shape, params))

    return record


def receptive_field(model: nn.Module, x: Tensor) -> tuple[int, int]:
    """Extent (rows, cols) of the input pixels whose gradient on the centre output pixel is non-zero.

    Measured, not derived: it covers pooling, dilation, attention and global pooling alike. A random input
    keeps ReLUs from hiding paths. Capped by the input size, where the field of global models ends.
    """
    x = x.clone().requires_grad_(True)
    y = model(x)
    y[..., y.shape[-2] // 2, y.shape[-1] // 2].sum().backward()
    assert x.grad is not None  # x requires grad and y depends on it
    seen = x.grad.abs().sum(dim=(0, 1)) > 0  # (H, W)
    rows, cols = seen.any(dim=1).nonzero(), seen.any(dim=0).nonzero()
    if len(rows) == 0:
        return (0, 0)
    return (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))


def write_summary(summary: ModelSummary, path: Path) -> Path:
    """Write the headline and the layer table as text to `path` (the seed's [inspect] summary file)."""
    widths = (max([len(r.name) for r in summary.layers] + [5]), max([len(r.kind) for r in summary.layers] + [4]))
    lines = [summary.headline(), "", f"{'layer':<{widths[0]}}  {'type':<{widths[1]}}  {'output':<22}  params"]
    for r in summary.layers:
        lines.append(f"{r.name:<{widths[0]}}  {r.kind:<{widths[1]}}  {r.output_shape!s:<22}  {r.params:,}")
    path = Path(path)
    atomic_write_text(path, "\n".join(lines) + "\n")  # whole or absent, with the umask's permissions
    return path


def write_graph(summary: ModelSummary, path: Path) -> Path | None:
    """Render the layers, in the order they ran, with graphviz `dot`; None (nothing written) when dot is absent.

    A chain of executed layers, not the full data-flow graph: skips are not drawn. Enough to see the depth
    and where the resolution changes.
    """
    dot = shutil.which("dot")
    if dot is None:
        return None
    nodes = [f'  n{i} [label="{r.name or "model"}\\n{r.kind} {r.output_shape}"];' for i, r in enumerate(summary.layers)]
    edges = [f"  n{i} -> n{i + 1};" for i in range(len(summary.layers) - 1)]
    source = "\n".join(["digraph model {", "  node [shape=box, fontsize=10];", *nodes, *edges, "}"])
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    rendered = subprocess.run([dot, f"-T{fmt}"], input=source.encode(), capture_output=True, check=True).stdout
    atomic_write_bytes(path, rendered)  # dot -o would leave a partial file when it fails half-way
    return path
