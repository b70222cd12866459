"""Where a CPU training step of the seed pap-smear model spends its time, and how far each op sits from the peak.

Training runs through `train_from_config` (the `flexunet train` path: seed config, batch 4, 128 px, bce_iou_loss,
clipvalue, Adam, JPEGs streamed from disk). Two parts:

1. torch.profiler over one epoch of `--profile-steps` fp32 steps after a warm-up epoch (started and stopped from
   `on_epoch_end`; that epoch's one validation batch is inside the window): self CPU time per op and its share,
   FLOPs where torch counts them, and per convolution shape the forward and backward GFLOP/s against the machine's
   measured sgemm peak, with the bytes of its weight; once as flexunet trains, once with every convolution on
   oneDNN (flexunet.models.layers.Conv2d's small-map matmul off: the profile that motivated it).
2. A same-run A/B of step variants (fp32; fp32 with every convolution on oneDNN, i.e. without
   flexunet.models.layers.Conv2d's small-map matmul; channels_last; cpu_bf16 autocast; both; bf16 only where the CPU
   has avx512_bf16 or AMX), order alternating, `--repeats` runs each: img/s from the history rows' training seconds
   (run.py's timed_training), ratio to fp32 within each repeat, fraction of peak (nominal training FLOPs).

    python benchmarks/profile_train.py --threads 2          # writes benchmarks/results/profile_train.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from machine import machine_info  # noqa: E402
from run import count_flops, flex_config, peak_gflops, timed_training  # noqa: E402

from flexunet.runs.device import cpu_has_bf16  # noqa: E402

VARIANTS = {"fp32": (), "fp32_without_small_map_matmul": (), "channels_last": ("train.channels_last=True",),
            "bf16": ("train.cpu_bf16=True",), "bf16+channels_last": ("train.cpu_bf16=True", "train.channels_last=True")}
# the variants that run every convolution through oneDNN (flexunet.models.layers.Conv2d's matmul path off)
WITHOUT_SMALL_MAP_MATMUL = {"fp32_without_small_map_matmul"}


@contextmanager
def small_map_matmul(on: bool) -> Iterator[None]:
    """flexunet.models.layers.Conv2d's small-map matmul path on (the default) or off, restored afterwards."""
    from flexunet.models import layers

    default = layers.SMALL_MAP_PIXELS
    layers.SMALL_MAP_PIXELS = default if on else 0
    try:
        yield
    finally:
        layers.SMALL_MAP_PIXELS = default


def timed(work: Path, steps: int, name: str) -> float:
    """img/s of variant `name` through train_from_config."""
    with small_map_matmul(name not in WITHOUT_SMALL_MAP_MATMUL):
        return timed_training(work, max(2, steps // 2), steps, VARIANTS[name])["img_s"]


def profile(work: Path, steps: int, peak: float, matmul: bool = True) -> dict:
    """Per-op self CPU time and FLOPs of one epoch of `steps` fp32 steps, after a warm-up epoch."""
    from flexunet.train import train_from_config

    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True,
                                  record_shapes=True)

    def window(row: dict) -> bool:
        if row["epoch"] == 1:
            prof.start()
        else:
            prof.stop()
        return False

    cfg = flex_config(("train.epochs=2", f"train.steps_per_epoch={steps}", "train.validation_steps=1",
                       f"train.model_dir={work}/models", f"train.eval_dir={work}/eval", "train.create_backup=False"))
    with small_map_matmul(matmul):
        train_from_config(cfg, device="cpu", quiet=True, on_epoch_end=window)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = []
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:30]:
        seconds = e.self_cpu_time_total / 1e6
        row = {"op": e.key, "calls_per_step": round(e.count / steps, 1),
               "self_ms_per_step": round(seconds * 1e3 / steps, 2), "share": round(e.self_cpu_time_total / total, 4)}
        if e.flops:
            row |= {"gflop_per_step": round(e.flops / 1e9 / steps, 3),
                    "gflops": round(e.flops / 1e9 / max(seconds, 1e-9), 1),
                    "fraction_of_peak": round(e.flops / 1e9 / max(seconds, 1e-9) / peak, 3)}
        rows.append(row)
    conv = [e for e in events if "conv" in e.key.lower()]
    conv_s = sum(e.self_cpu_time_total for e in conv) / 1e6
    return {"steps": steps, "self_ms_per_step_all_ops": round(total / 1e3 / steps, 1),
            "convolution_ops_share": round(conv_s * 1e6 / total, 4), "top_ops": rows,
            "convolutions_by_shape": by_shape(prof, steps, peak)}


def conv_flops(x: list[int], w: list[int]) -> float:
    """Nominal FLOPs of a stride-1 'same' convolution of input `x` (N, C, H, W) with weight `w` (O, C, kh, kw)."""
    return 2.0 * x[0] * x[2] * x[3] * w[0] * w[1] * w[2] * w[3]


def by_shape(prof: torch.profiler.profile, steps: int, peak: float) -> list[dict]:
    """Forward and backward time of each convolution shape, its GFLOP/s and fraction of the sgemm peak, and the
    bytes of its weight (deep levels of a UNet at batch 4 touch few pixels per weight: memory-bound)."""
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key == "aten::mkldnn_convolution":
            x, w, flops = e.input_shapes[0], e.input_shapes[1], 1.0
        elif e.key == "aten::convolution_backward":
            x, w, flops = e.input_shapes[1], e.input_shapes[2], 2.0  # grad of input and of weight
        else:
            continue
        if len(x) != 4 or len(w) != 4:
            continue
        seconds = e.self_cpu_time_total / 1e6
        gflop = flops * conv_flops(x, w) * e.count / 1e9
        rows.append({"op": "forward" if flops == 1.0 else "backward", "input": x, "weight": w,
                     "ms_per_step": round(seconds * 1e3 / steps, 2), "gflops": round(gflop / max(seconds, 1e-9), 1),
                     "fraction_of_peak": round(gflop / max(seconds, 1e-9) / peak, 3),
                     "weight_mb": round(4 * w[0] * w[1] * w[2] * w[3] / 1e6, 2),
                     "flop_per_weight_byte": round(conv_flops(x, w) / (4 * w[0] * w[1] * w[2] * w[3]), 1)})
    return sorted(rows, key=lambda r: -r["ms_per_step"])


def ab(work: Path, steps: int, repeats: int, gflop_per_image: float, peak: float, names: list[str]) -> dict:
    """img/s of each variant through train_from_config, the order alternating every repeat."""
    speeds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            speeds[n].append(timed(work, steps, n))
    out = {}
    for n in names:
        out[n] = {"img_s_median": round(statistics.median(speeds[n]), 2),
                  "img_s_per_repeat": [round(v, 2) for v in speeds[n]],
                  "ratio_to_fp32_median": round(statistics.median(
                      a / b for a, b in zip(speeds[n], speeds["fp32"], strict=True)), 3),
                  "fraction_of_fp32_peak": round(statistics.median(speeds[n]) * gflop_per_image / peak, 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--out", default=str(HERE / "results" / "profile_train.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = machine_info()
    names = [n for n in args.variants if "bf16" not in n or cpu_has_bf16()]
    peak = peak_gflops(args.threads)
    flops = count_flops()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report = {"command": " ".join(sys.argv), "machine": info, "threads": args.threads,
                  "peak_gflops_fp32": round(peak, 1), "train_gflop_per_image": round(flops["train_gflop_per_image"], 3),
                  "variants_skipped": sorted(set(args.variants) - set(names)),
                  "profile_fp32": profile(work, args.profile_steps, peak),
                  "profile_fp32_without_small_map_matmul": profile(work, args.profile_steps, peak, False),
                  "ab": ab(work, args.steps, args.repeats, flops["train_gflop_per_image"], peak, names),
                  "load_average_1m_after": machine_info()["load_average_1m"]}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("peak_gflops_fp32", "ab")}, indent=1))
    for row in report["profile_fp32"]["top_ops"][:20]:
        print(row)


if __name__ == "__main__":
    main()
