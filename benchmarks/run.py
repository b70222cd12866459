"""flexunet vs the TensorFlow reference, side by side in one run, on real pap-smear images.

    python benchmarks/run.py [--repeats 3] [--quick] [--no-quality | --quality-budget-s S]

Each repeat runs one flexunet process (the project's python) and one TF-reference process (benchmarks/.venv-tf, made
by benchmarks/tf_reference/setup_venv.sh), in alternating order, so each side's peak RSS is its own. Each process
warms up (excluded), then times training at batch 4 through its own data pipeline (flexunet: `train_from_config`, the
`flexunet train` path, streaming JPEGs from disk, timed from its history rows; TF: the seed's in-memory arrays and
`model.fit`), then inference
at batch 1 and 16 (flexunet: `Predictor.probs`, the `flexunet infer` path; TF: the model under `tf.function`).
Ratios are flexunet / reference within each repeat; the figure reported is their median (the machine is shared, so
absolute numbers move with load; the ratio of two runs seconds apart is the robust figure).

Writes benchmarks/results/<date>-<host>.json and benchmarks/results/latest.json; quality numbers come from
benchmarks/quality.py (run by this script unless --no-quality; otherwise the last benchmarks/results/quality.json).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("FLEXUNET_PAP_SMEAR", "/work/shared/data/pap-smear"))
SEED_CONFIG = Path(os.environ.get("FLEXUNET_PAP_CONFIG", "/work/shared/data/configs/pap-smear.config"))
TF_PYTHON = HERE / ".venv-tf" / "bin" / "python"
RESULTS = HERE / "results"
METRICS = ("train_img_s", "infer_img_s_b1", "infer_img_s_b16", "peak_rss_mb_train")
# `flexunet infer --compile` against the same TF numbers (the reference's tf.function)
COMPILED = {"infer_compiled_img_s_b1": "infer_img_s_b1", "infer_compiled_img_s_b16": "infer_img_s_b16"}


def machine() -> dict:
    from machine import FLAGS_THAT_MATTER  # benchmarks/machine.py, beside this script

    from flexunet.runs.device import cpu_info

    model, flags = cpu_info()
    return {"cpu_model": model or "?", "flags": {f: f in flags for f in FLAGS_THAT_MATTER},
            "cores": len(os.sched_getaffinity(0)), "host": socket.gethostname(), "platform": platform.platform(),
            "gpu": None, "gpu_note": "no GPU was lent to this session: CPU only (no gpu-*.json)"}


def peak_gflops(threads: int = 2, size: int = 4096, tries: int = 10) -> float:
    """Measured fp32 GEMM peak: best of `tries` size x size sgemms on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


# ---- flexunet side ---------------------------------------------------------------------------------------------------

def flex_config(overrides: tuple[str, ...] = ()):
    from flexunet.config import load_config

    data = [f"{s}.{k}s_dir={DATA}/{s}/{k}s/" for s in ("train", "valid", "test") for k in ("image", "mask")]
    return load_config(SEED_CONFIG, [*data, "train.epoch_change_infer=False", *overrides])


def count_flops() -> dict:
    """FLOPs of the Pap-Smear model per image, counted by torch.utils.flop_counter (forward; forward + backward).

    These nominal counts include the multiply-adds with the zero padding of 'same' convolutions, which kernels
    may skip: at the 2x2 and 4x4 levels most 3x3 taps fall on padding. The `effective` forward count leaves them
    out (hooks count, per conv, the (output pixel, tap) pairs that land inside the image); the effective training
    count scales the nominal one by the same factor.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from flexunet.models import build_model

    model = build_model(flex_config().model)
    x = torch.rand(1, 3, 128, 128)
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x)
    with FlopCounterMode(display=False) as both:
        model(x).sum().backward()
    effective = [0.0]

    def hook(conv: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(conv, torch.nn.Conv2d):  # transposed convs (stride 2, kernel 2) have no padding taps
            ones = torch.ones(1, 1, *args[0].shape[-2:])
            taps = F.conv2d(ones, torch.ones(1, 1, *conv.kernel_size), padding=conv.padding, dilation=conv.dilation)
            effective[0] += 2 * conv.in_channels // conv.groups * conv.out_channels * taps.sum().item()
        else:
            effective[0] += 2 * conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] * args[0].shape[-2] * args[0].shape[-1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    nominal_fwd, nominal_train = fwd.get_total_flops() / 1e9, both.get_total_flops() / 1e9
    scale = effective[0] / 1e9 / nominal_fwd
    return {"forward_gflop_per_image": nominal_fwd, "train_gflop_per_image": nominal_train,
            "forward_gflop_per_image_effective": effective[0] / 1e9,
            "train_gflop_per_image_effective": nominal_train * scale}


def timed_training(work: Path, warmup_steps: int, train_steps: int, overrides: tuple[str, ...] = ()) -> dict:
    """img/s of `flexunet train` (train_from_config) at batch 4 after a warm-up: epochs of `warmup_steps` batches,
    the first excluded; the others' training seconds (each history row's, validation and saving excluded) timed."""
    from flexunet.train import train_from_config

    epochs = 1 + math.ceil(train_steps / warmup_steps)
    folder = Path(tempfile.mkdtemp(dir=work))
    cfg = flex_config((f"train.epochs={epochs}", f"train.steps_per_epoch={warmup_steps}", "train.validation_steps=1",
                       f"train.model_dir={folder}/models", f"train.eval_dir={folder}/eval", "train.create_backup=False",
                       *overrides))
    result = train_from_config(cfg, device="cpu", quiet=True)
    timed = result.history[1:]
    images = len(timed) * warmup_steps * cfg.train.batch_size
    return {"img_s": images / sum(r["seconds"] for r in timed), "images": images, "checkpoint": result.run.last}


def flex_worker(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    torch.set_num_threads(args.threads)
    from flexunet.data import build_datasets, list_image_files
    from flexunet.data.io import read_image
    from flexunet.runs.checkpoint import load_trained_model
    from flexunet.infer.compiled import compile_for_inference
    from flexunet.predict import for_inference, predictor_from_config
    from flexunet.runs.device import cpu_has_bf16

    batch = 4
    cfg = flex_config()
    device = torch.device("cpu")
    work = Path(tempfile.mkdtemp(prefix="flexunet-speed-"))
    trained = timed_training(work, args.warmup_steps, args.train_steps)
    rss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model, _ = load_trained_model(trained["checkpoint"], device, cfg)
    params = sum(p.numel() for p in model.parameters())
    out: dict = {"side": "flexunet", "parameters": params, "train_img_s": trained["img_s"],
                 "train_images_timed": trained["images"], "peak_rss_mb_train": rss_train}

    # the data pipeline alone, as `flexunet train` loads on CPU (no workers): must be far faster than training
    train_set = build_datasets(cfg).train
    sampler = RandomSampler(train_set, num_samples=args.train_steps * batch,
                            generator=torch.Generator().manual_seed(cfg.train.seed))
    loader = DataLoader(train_set, batch_size=batch, sampler=sampler, num_workers=0)
    t0 = time.perf_counter()
    for images, _ in loader:
        images.float().div_(255)
    out["loader_img_s"] = args.train_steps * batch / (time.perf_counter() - t0)

    if args.ablation_steps and cpu_has_bf16():  # [train] cpu_bf16 = True: opt-in, only on CPUs with native bf16
        timings: dict[str, list[float]] = {"bf16": [], "fp32": []}
        for i in range(args.ablation_steps):  # one timed step per run, after one warm-up step
            for name in ("bf16", "fp32") if i % 2 == 0 else ("fp32", "bf16"):  # alternate which goes first
                timings[name].append(timed_training(work, 1, 1, (f"train.cpu_bf16={name == 'bf16'}",))["img_s"])
        out["cpu_bf16_train_img_s"] = {k: statistics.median(v) for k, v in timings.items()}
        out["cpu_bf16_train_img_s"]["speedup"] = statistics.median(a / b for a, b in zip(timings["bf16"], timings["fp32"]))
    shutil.rmtree(work, ignore_errors=True)

    files = list_image_files(str(DATA / "test" / "images"), "test")
    need = max(args.b1_images, 16 * args.b16_batches)
    images = [read_image(f, 3, cfg.image.color_order) for f in (files * (need // len(files) + 1))[:need]]

    def infer(net: torch.nn.Module, b: int, n_batches: int, channels_last: bool = False) -> tuple[float, float]:
        """(img/s, seconds of the warm-up call: compilation for a compiled model)."""
        predictor = predictor_from_config(cfg, net, device, tta=False, batch_size=b, channels_last=channels_last)
        t0 = time.perf_counter()
        predictor.probs(images[:b])
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n_batches):
            predictor.probs(images[i * b:(i + 1) * b])
        return n_batches * b / (time.perf_counter() - t0), warm

    sizes = ((1, args.b1_images), (16, args.b16_batches))
    for b, n_batches in sizes:  # `flexunet infer --compile`: one compiled model per batch size, as one infer run has
        out[f"infer_compiled_img_s_b{b}"], out[f"compile_seconds_b{b}"] = infer(compile_for_inference(model, device), b, n_batches)
    served = for_inference(model, device)  # what `flexunet infer` runs by default (eager, channels_last on CPU)
    for b, n_batches in sizes:
        out[f"infer_img_s_b{b}"] = infer(served, b, n_batches)[0]
    if args.ablation_steps:  # PyTorch's default layout (flexunet's CPU default before 2026-11-23), after the default
        model.to(memory_format=torch.contiguous_format)
        out["ablation_infer_img_s_contiguous"] = {f"b{b}": infer(model, b, n)[0] for b, n in sizes}
    out["versions"] = {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                       "flexunet": _flexunet_version()}
    out["threads"] = args.threads
    return out


def _flexunet_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    try:
        return f"{version('flexunet')} ({commit})"
    except PackageNotFoundError:
        return commit


# ---- orchestration ---------------------------------------------------------------------------------------------------

# flexunet as `flexunet train` runs today, and the same with libgomp's threads sleeping instead of spinning while they
# wait (OMP_WAIT_POLICY=PASSIVE, read when torch loads): on a shared, oversubscribed CPU, spinning OpenMP threads
# steal the time slices the working thread needs. The variant is measured, not the default.
VARIANT_ENV = {"flexunet": {}, "flexunet_omp_passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "tf_reference": {}}


def run_side(side: str, args: argparse.Namespace) -> dict:
    common = ["--threads", str(args.threads), "--warmup-steps", str(args.warmup_steps), "--train-steps",
              str(args.train_steps), "--b1-images", str(args.b1_images), "--b16-batches", str(args.b16_batches)]
    if side.startswith("flexunet"):
        cmd = [sys.executable, str(Path(__file__)), "--worker", *common, "--ablation-steps", str(args.ablation_steps)]
    else:
        cmd = [str(TF_PYTHON), str(HERE / "tf_reference" / "worker.py"), "speed", "--data", str(DATA), *common]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), **VARIANT_ENV[side]}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0
    result["load_average"] = [round(v, 2) for v in os.getloadavg()]
    shown = [k for k in (*METRICS, *COMPILED) if k in result]
    print(f"  {side:20s} " + "  ".join(f"{k} {result[k]:.1f}" for k in shown) + f"  load {result['load_average'][0]}",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=15)
    parser.add_argument("--b1-images", type=int, default=24)
    parser.add_argument("--b16-batches", type=int, default=3)
    parser.add_argument("--ablation-steps", type=int, default=6, help="interleaved steps per variant (0: none)")
    parser.add_argument("--omp-variant", action="store_true",
                        help="also run flexunet with OMP_WAIT_POLICY=PASSIVE (helps only on an oversubscribed CPU)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, few steps, quick quality run")
    parser.add_argument("--no-quality", action="store_true", help="reuse benchmarks/results/quality.json")
    parser.add_argument("--quality-budget-s", type=float, default=720.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--merge-quality", action="store_true",
                        help="only copy benchmarks/results/quality.json (and recipes.json) into latest.json (and its dated file)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(flex_worker(args)))
        return
    if args.merge_quality:
        latest = json.loads((RESULTS / "latest.json").read_text())
        latest["quality"] = json.loads((RESULTS / "quality.json").read_text())
        if (RESULTS / "recipes.json").is_file():  # benchmarks/quality.py --recipes: flexunet to convergence
            latest["quality"]["recipes"] = json.loads((RESULTS / "recipes.json").read_text())
        text = json.dumps(latest, indent=2) + "\n"
        (RESULTS / "latest.json").write_text(text)
        (RESULTS / latest["results_file"]).write_text(text)
        print(f"merged quality.json into latest.json and {latest['results_file']}")
        return
    if args.quick:
        args.repeats, args.warmup_steps, args.train_steps, args.b1_images, args.b16_batches = 1, 1, 3, 4, 1
        args.ablation_steps = 1
    if not TF_PYTHON.is_file():
        sys.exit(f"{TF_PYTHON} not found: run benchmarks/tf_reference/setup_venv.sh first")
    started = dt.datetime.now()
    report: dict = {"date": started.isoformat(timespec="seconds"),
                    "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]), "quick": args.quick,
                    "machine": machine(), "precision": "fp32 everywhere except cpu_bf16_training (opt-in bf16, measured only where the CPU has it)", "threads": args.threads,
                    "load_average_start": [round(v, 2) for v in os.getloadavg()]}
    report["peak_gflops_fp32"] = peak_gflops(args.threads)
    report["peak_gflops_method"] = f"best of 10 torch.mm 4096x4096 fp32 on {args.threads} threads"
    report["flops"] = count_flops()
    sides = ["flexunet", "tf_reference"] + (["flexunet_omp_passive"] if args.omp_variant else [])
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}", flush=True)
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:  # rotate the order: no side always goes first
            runs[side].append(run_side(side, args))

    def compare(side: str, metric: str, tf_metric: str | None = None) -> dict:
        flex = [x[metric] for x in runs[side]]
        tf = [x[tf_metric or metric] for x in runs["tf_reference"]]
        return {"flexunet": statistics.median(flex), "tf_reference": statistics.median(tf),
                "ratio": statistics.median(f / t for f, t in zip(flex, tf)),
                "per_repeat": {"flexunet": flex, "tf_reference": tf}}

    for metric in METRICS:
        report[metric] = compare("flexunet", metric)
    for metric, tf_metric in COMPILED.items():
        report[metric] = {**compare("flexunet", metric, tf_metric),
                          "what": f"`flexunet infer --compile` against the reference's tf.function ({tf_metric})"}
    report["compile_seconds"] = {f"b{b}": statistics.median(x[f"compile_seconds_b{b}"] for x in runs["flexunet"])
                                 for b in (1, 16)}
    if args.omp_variant:
        report["variant_omp_wait_policy_passive"] = {
            "what": "the same flexunet worker started with OMP_WAIT_POLICY=PASSIVE (not flexunet's default today)",
            **{metric: compare("flexunet_omp_passive", metric) for metric in METRICS}}
    peak, flops = report["peak_gflops_fp32"], report["flops"]
    report["train_fraction_of_peak"] = {s: report["train_img_s"][s] * flops["train_gflop_per_image"] / peak
                                        for s in ("flexunet", "tf_reference")}
    report["infer_fraction_of_peak"] = {s: report["infer_img_s_b16"][s] * flops["forward_gflop_per_image"] / peak
                                        for s in ("flexunet", "tf_reference")}
    report["infer_fraction_of_peak"]["flexunet_compiled"] = (report["infer_compiled_img_s_b16"]["flexunet"]
                                                             * flops["forward_gflop_per_image"] / peak)
    eff_fwd, eff_train = flops["forward_gflop_per_image_effective"], flops["train_gflop_per_image_effective"]
    report["fraction_of_peak_effective_flops"] = {
        "what": "as *_fraction_of_peak, counting only multiply-adds that land inside the image (no zero-padding taps)",
        "train": {s: report["train_img_s"][s] * eff_train / peak for s in ("flexunet", "tf_reference")},
        "infer_b16": {s: report["infer_img_s_b16"][s] * eff_fwd / peak for s in ("flexunet", "tf_reference")}
        | {"flexunet_compiled": report["infer_compiled_img_s_b16"]["flexunet"] * eff_fwd / peak}}
    # the highest ratio any implementation could reach: every effective FLOP at the measured peak, against TF's
    # median and against TF's fastest repeat (its training speed is bimodal on this machine)
    report["ratio_ceiling_at_full_peak"] = {
        f"{metric}{suffix}": peak / gflop / pick(report[metric]["per_repeat"]["tf_reference"])
        for metric, gflop in (("train_img_s", eff_train), ("infer_img_s_b1", eff_fwd), ("infer_img_s_b16", eff_fwd))
        for suffix, pick in (("", statistics.median), ("_vs_fastest_tf_repeat", max))}
    report["loader_img_s"] = {s: statistics.median(x["loader_img_s"] for x in runs[s]) for s in runs}
    report["train_img_s_note"] = "flexunet timing includes reading and decoding its JPEGs from disk; TF's does not"
    report["loader_note"] = ("data pipeline alone (decode + resize + batch; flexunet streams from disk in the training "
                             "process, TF's in-memory arrays are loaded before fit): far above train_img_s, so it never "
                             "stalls the model")
    ablation = [x["ablation_train_img_s"] for x in runs["flexunet"] if "ablation_train_img_s" in x]
    report["contiguous_inference"] = {
        "what": "Predictor.probs (before 2026-12-02: predict_images) with the model in PyTorch's default (contiguous) layout, flexunet's CPU default before "
                "2026-11-23 (now channels_last, for_inference); measured after the default in each flexunet worker",
        **{s: {b: statistics.median(x["ablation_infer_img_s_contiguous"][b] for x in runs[s])
               for b in ("b1", "b16")} for s in runs if s.startswith("flexunet") and
           all("ablation_infer_img_s_contiguous" in x for x in runs[s])}}
    report["versions"] = {"flexunet_side": runs["flexunet"][0]["versions"], "tf_side": runs["tf_reference"][0]["versions"]}
    report["parameters"] = {s: runs[s][0]["parameters"] for s in runs}
    report["optimisations"] = optimisations(ablation)
    bf16_runs = [x["cpu_bf16_train_img_s"] for x in runs["flexunet"] if "cpu_bf16_train_img_s" in x]
    report["cpu_bf16_training"] = {
        "what": "[train] cpu_bf16 = True (opt-in bf16 autocast on CPUs with avx512_bf16/AMX) vs fp32, one step each, "
                "interleaved, in each flexunet worker",
        **({k: statistics.median(r[k] for r in bf16_runs) for k in ("bf16", "fp32", "speedup")} if bf16_runs
           else {"skipped": "this CPU has no native bf16"})}
    report["targets"] = targets(report)
    report["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    if not args.no_quality:
        cmd = [sys.executable, str(HERE / "quality.py"), "--budget-s", str(args.quality_budget_s)]
        subprocess.run(cmd + (["--quick", "--out", str(RESULTS / "quality-quick.json")] if args.quick else []), check=True)
    quality_file = RESULTS / ("quality-quick.json" if args.quick else "quality.json")
    if quality_file.is_file():
        report["quality"] = json.loads(quality_file.read_text())
    report["runs"] = runs
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"{started:%Y-%m-%d}-{socket.gethostname()}{'-quick' if args.quick else ''}.json"
    report["results_file"] = name
    text = json.dumps(report, indent=2) + "\n"
    (RESULTS / name).write_text(text)
    if not args.quick:
        (RESULTS / "latest.json").write_text(text)
    shown = (*METRICS, *COMPILED, "train_fraction_of_peak", "infer_fraction_of_peak", "ratio_ceiling_at_full_peak", "targets")
    print(json.dumps({k: report[k] for k in shown}, indent=1))
    print(f"wrote {RESULTS / name}" + ("" if args.quick else " and latest.json"))


OPTIMISATIONS = {
    "cpu_dropout": ("dropout masks from 16-bit lanes of 64-bit random numbers instead of bernoulli_ per element",
                    "flexunet/models/layers.py Dropout"),
    "clip_one_pass": ("clipvalue as one clamp_ per gradient instead of clip_grad_value_'s clamp_min_ + clamp_max_",
                      "flexunet/train/step.py clip_gradients"),
}


def optimisations(ablation: list[dict]) -> dict:
    """Each CPU training optimisation with its measured speed-up (median over repeats of interleaved medians)."""
    out = {}
    for name, (what, where) in OPTIMISATIONS.items():
        out[name] = {"what": what, "where": where}
        rows = [a[name] for a in ablation if name in a]
        if rows:
            out[name] |= {"train_img_s_with": statistics.median(r["with"] for r in rows),
                          "train_img_s_without": statistics.median(r["without"] for r in rows),
                          "speedup": statistics.median(r["speedup"] for r in rows),
                          "method": "one training step per variant, interleaved, in each flexunet worker"}
    if not ablation:
        out["note"] = ("not measured since issue 17: toggling these needs swapping flexunet internals, which the "
                       "benchmarks no longer do (they train through train_from_config only)")
    out["removed"] = {"small_conv_gemm": "3x3 convs on <= 16-pixel maps as unfold + GEMM: 0.98-0.99x on this "
                                         "AVX-512 CPU in two sessions (oneDNN's direct kernels are as fast), removed"}
    return out


def targets(r: dict) -> dict:
    ceiling = r["ratio_ceiling_at_full_peak"]
    return {
        "train_ratio>=2.5": r["train_img_s"]["ratio"] >= 2.5,
        "train_ratio>=2.5_possible_here": ceiling["train_img_s"] >= 2.5,
        "train_ratio>=2.5_possible_vs_fastest_tf_repeat": ceiling["train_img_s_vs_fastest_tf_repeat"] >= 2.5,
        "infer_b1_ratio>=1.5 (default, eager)": r["infer_img_s_b1"]["ratio"] >= 1.5,
        "infer_b1_ratio>=1.5 (--compile)": r["infer_compiled_img_s_b1"]["ratio"] >= 1.5,
        "infer_b16_ratio>=1.5 (default, eager)": r["infer_img_s_b16"]["ratio"] >= 1.5,
        "infer_b16_ratio>=1.5 (--compile)": r["infer_compiled_img_s_b16"]["ratio"] >= 1.5,
        "infer_b16_ratio>=1.5_possible_here": ceiling["infer_img_s_b16"] >= 1.5,
        "infer_b16_fraction_of_peak>=0.75 (default, eager)": r["infer_fraction_of_peak"]["flexunet"] >= 0.75,
        "infer_b16_fraction_of_peak>=0.75 (--compile)": r["infer_fraction_of_peak"]["flexunet_compiled"] >= 0.75,
        "peak_rss_train_ratio<=0.7": r["peak_rss_mb_train"]["ratio"] <= 0.7,
    }


if __name__ == "__main__":
    main()
