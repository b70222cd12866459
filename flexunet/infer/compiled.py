"""Opt-in torch.compile for inference (`flexunet infer --compile`, `[infer] compile = True`).

Inductor with weight freezing: the weights become constants, so convolutions use pre-packed kernels and the
graph is fused. On a 2-core CPU it ran batch 1 of the seed's Pap-Smear UNet 1.65x faster than eager channels_last
(benchmarks/run.py, `infer_compiled_img_s_b1`) but costs 5-10 s of compilation before the first image, so it pays
off for folders of a few hundred images or more. Each input shape compiles once: a batch smaller than the largest
seen so far at the same image size (the short last batch) is padded to it instead of compiling again. Where
compilation is impossible (no C++ compiler for the CPU backend, an operator inductor cannot lower), inference goes
on eagerly with a note.
"""
from __future__ import annotations

import os
import shutil

import torch
from torch import Tensor, nn

from flexunet.console import note


def cpu_compiler() -> str | None:
    """The C++ compiler inductor would use for CPU code, or None when there is none."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


class CompiledForInference(nn.Module):
    """`model` under torch.compile (inductor, freezing) with an eager fallback; call it under torch.no_grad().

    The weights are frozen into the graph when it compiles: changing `model` afterwards is not seen (inference only).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.eager = model.eval()
        self.compiled = torch.compile(model, dynamic=False)
        self.batches: dict[tuple[int, ...], int] = {}  # (C, H, W) -> the largest batch compiled for it
        self.failed = False

    def forward(self, x: Tensor) -> Tensor:
        if self.failed:
            return self.eager(x)
        n, shape = x.shape[0], tuple(x.shape[1:])
        batch = self.batches[shape] = max(self.batches.get(shape, 0), n)
        padded = torch.cat([x, x.new_zeros((batch - n, *shape))]) if n < batch else x
        try:
            # freezing must be set while inductor compiles (a shape seen first compiles inside this call); passed as
            # torch.compile(options=...) it was not applied (torch 2.13: no speed-up, benchmarks/run.py)
            with torch._inductor.config.patch(freezing=True):
                return self.compiled(padded)[:n]
        except Exception as exc:  # noqa: BLE001  (any compiler failure: fall back, the eager call shows real errors)
            self.failed = True
            first_line = (str(exc).splitlines() or [""])[0][:160]
            note(f"--compile: torch.compile failed ({type(exc).__name__}: {first_line}); running eagerly")
            return self.eager(x)


def compile_for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """The model wrapped for compiled inference, or the model itself (with a note) where that cannot work."""
    if device.type == "cpu" and cpu_compiler() is None:
        note("--compile: no C++ compiler (g++, c++, clang++ or $CXX) found for torch.compile's CPU backend; "
             "running eagerly")
        return model
    return CompiledForInference(model)
