"""Choosing the device and the per-device speed settings."""
from __future__ import annotations

import ctypes
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from flexunet.errors import ConfigError


def choose_device(name: str | None = None) -> torch.device:
    """`auto`/None: the first CUDA GPU if any, else CPU. An unavailable device is an error, not a silent fallback."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device; use cpu, cuda, cuda:1 or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is visible to PyTorch (torch {torch.__version__})")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) for a repeatable run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the OS after every step.

    Without this, each training step's fresh 20-40 MB gradient tensors are mmap'd and page-faulted anew
    (measured in benchmarks/: a large share of CPU step time). Linux/glibc only; FLEXUNET_NO_MALLOPT=1 turns it off.
    """
    if not sys.platform.startswith("linux") or os.environ.get("FLEXUNET_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, instruction-set flags) of the CPU from /proc/cpuinfo on Linux; ("", no flags) elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "", frozenset()
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines) if value}
    return fields.get("model name", ""), frozenset(fields.get("flags", "").split())  # every core lists the same


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (x86 avx512_bf16 or AMX).

    Elsewhere bf16 is emulated: on an AVX2-only CPU a bf16 matmul runs ~600x slower than fp32.
    """
    flags = cpu_info()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(device: torch.device, cpu_bf16: bool = False) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16. On CPU: bf16 only when asked for and native, else None (fp32)."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16 and cpu_has_bf16() else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
