"""Facts about the machine that every benchmark result records: numbers from different CPUs are not comparable."""
from __future__ import annotations

import datetime as dt
import os
import platform
import socket

import torch

from flexunet.runs.device import cpu_info

FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


def machine_info() -> dict[str, object]:
    """CPU model, the flags that change PyTorch's kernels, usable cores, load, torch version, date and host."""
    model, flags = cpu_info()
    return {
        "cpu_model": model or platform.processor(),
        "cpu_flags": [f for f in FLAGS_THAT_MATTER if f in flags],
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
