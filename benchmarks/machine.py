"""Facts about the machine that every benchmark result records: numbers from different CPUs are not comparable."""
from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import threading
import time

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


MACHINE_KEYS = ("cpu_model", "cpu_flags", "cores_usable")  # runs that differ in these are not put in one table


def same_machine(a: dict, b: dict) -> bool:
    """Whether two results' `machine` records name the same kind of machine (results on others are redone)."""
    return all(a.get(k) == b.get(k) for k in MACHINE_KEYS)


class LoadSampler:
    """`with LoadSampler() as load:` records [seconds since start, 1-minute load average] every `every` seconds in
    `load.samples` while the block runs: another process on the machine slows a timed run down."""

    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self.samples: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append([round(time.perf_counter() - self.began, 1), round(os.getloadavg()[0], 2)])
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> LoadSampler:
        self.began = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
