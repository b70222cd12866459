"""How much online augmentation slows CPU training of the flexunet model: steps/s with and without the augmenter.

Same random batches in every mode. The machine is shared, so the modes are interleaved step by step (a burst of
load from another process hits all of them alike) and each mode's time is the median over all its steps; the
median of each repeat is kept too. The augmenter is also timed alone, which is far less sensitive to load.
Writes benchmarks/results/augment_overhead.json.

    python benchmarks/augment_overhead.py [--repeats 3] [--steps 6] [--threads N]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

import torch

from flexunet.augment import Augmenter, build_augmenter
from flexunet.config import config_from_dict
from flexunet.losses import LossFn, build_loss
from flexunet.models import build_model

SIZE, BATCH, NUM_CLASSES = 128, 4, 4
MODEL = {"image_width": SIZE, "image_height": SIZE, "base_filters": 16, "num_layers": 7,
         "num_classes": NUM_CLASSES, "generator": True}
# Two [augmentor] settings: the defaults, and every operation switched on with seed-like values.
SETTINGS = {
    "default": {},
    "every_operation": {
        "shears": [0.2], "deformation": True, "distortion": True, "barrdistortion": True, "pincdistortion": True,
        "sharpening": True, "brightening": True,
    },
}
EXTRA_SECTIONS = {"deformation": {"alpha": 300.0, "sigmoids": [8.0]}}


def time_step(model: torch.nn.Module, loss_fn: LossFn, optim: torch.optim.Optimizer, images: torch.Tensor,
              labels: torch.Tensor, augmenter: Augmenter | None, generator: torch.Generator) -> float:
    """Seconds for one training step, augmenting the batch first when an augmenter is given."""
    start = time.perf_counter()
    if augmenter is not None:
        images, labels = augmenter(images, labels, generator)
    optim.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    optim.step()
    return time.perf_counter() - start


def time_augmenter(augmenter: Augmenter, batches: list[tuple[torch.Tensor, torch.Tensor]],
                   generator: torch.Generator) -> float:
    """Seconds per batch for the augmenter alone."""
    start = time.perf_counter()
    for images, labels in batches:
        augmenter(images, labels, generator)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 suffers less from a busy machine")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "augment_overhead.json")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    configs = {name: config_from_dict({"model": MODEL, "augmentor": aug, **EXTRA_SECTIONS})
               for name, aug in SETTINGS.items()}
    augmenters = {name: build_augmenter(cfg) for name, cfg in configs.items()}
    cfg = configs["default"]
    model = build_model(cfg.model)
    loss_fn = build_loss(cfg.model)
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = [(torch.rand(BATCH, 3, SIZE, SIZE), torch.randint(0, NUM_CLASSES, (BATCH, SIZE, SIZE)))
               for _ in range(args.steps)]

    for images, labels in batches[:2]:  # warm-up: allocator, kernels
        time_step(model, loss_fn, optim, images, labels, None, torch.Generator())
    for augmenter in augmenters.values():
        time_augmenter(augmenter, batches[:2], torch.Generator())

    modes = ["none", *augmenters]
    step_s: dict[str, list[list[float]]] = {m: [] for m in modes}  # per repeat, per step
    aug_s: dict[str, list[float]] = {m: [] for m in augmenters}
    for repeat in range(args.repeats):
        generators = {m: torch.Generator().manual_seed(repeat) for m in modes}
        for m in modes:
            step_s[m].append([])
        for images, labels in batches:
            for m in modes:
                step_s[m][-1].append(time_step(model, loss_fn, optim, images, labels, augmenters.get(m), generators[m]))
        for m, augmenter in augmenters.items():
            aug_s[m].append(time_augmenter(augmenter, batches, torch.Generator().manual_seed(repeat)))
        print(f"repeat {repeat + 1}/{args.repeats} median s/step: "
              + ", ".join(f"{m} {statistics.median(step_s[m][-1]):.3f}" for m in modes))

    medians = {m: statistics.median(t for r in v for t in r) for m, v in step_s.items()}
    base = medians["none"]
    result = {
        "what": "CPU training step of flexunet (128x128, base_filters 16, num_layers 7, batch 4, Adam) "
                "with and without online augmentation; modes interleaved step by step, medians over all steps",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": machine_info(),
        "load_average_after": os.getloadavg(),  # other processes on the machine while this ran
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "augmentor_settings": SETTINGS,
        "extra_sections": EXTRA_SECTIONS,
        "seconds_per_step": {m: {"median": medians[m], "median_per_repeat": [statistics.median(r) for r in v],
                                 "all": v} for m, v in step_s.items()},
        "steps_per_second": {m: 1 / medians[m] for m in modes},
        "augmenter_seconds_per_batch": {m: {"median": statistics.median(v), "all": v} for m, v in aug_s.items()},
        "overhead_percent": {m: 100 * (medians[m] / base - 1) for m in augmenters},
        "overhead_percent_from_augmenter_alone": {m: 100 * statistics.median(v) / base for m, v in aug_s.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("overhead: " + ", ".join(f"{m} {v:+.1f}%" for m, v in result["overhead_percent"].items())
          + " (augmenter alone: " + ", ".join(f"{m} {v:.1f}%" for m, v in
                                               result["overhead_percent_from_augmenter_alone"].items()) + f") -> {args.out}")


if __name__ == "__main__":
    main()
