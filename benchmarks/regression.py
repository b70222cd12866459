"""Did a refactor slow flexunet down? Two commits side by side, same machine, same run, alternating order.

Each commit is unpacked with `git archive` into a temporary folder and driven through the API both commits have:
`train_from_config` (img/s from the history rows' training seconds, the first epoch left out as warm-up) and
`infer_from_config` (wall seconds for the Pap-Smear test images, whole image, batch [infer] batch_size) on the seed's
Pap-Smear config, and the process's peak RSS after training (ru_maxrss). Every measurement runs in a fresh process;
the commits alternate which goes first. The medians and the after/before ratios are written to
benchmarks/results/regression.json with the CPU flags and load averages.

    python benchmarks/regression.py 3bd7ddf HEAD [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FLEXUNET_PAP_SMEAR", "/work/shared/data/pap-smear"))
SEED_CONFIG = Path(os.environ.get("FLEXUNET_PAP_CONFIG", "/work/shared/data/configs/pap-smear.config"))

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[1]))
from flexunet.config import load_config
from flexunet.infer import infer_from_config
from flexunet.train import train_from_config
data, config, work, steps = Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])
folders = [f"{s}.{k}s_dir={data}/{s}/{k}s/" for s in ("train", "valid", "test") for k in ("image", "mask")]
cfg = load_config(config, [*folders, "train.epoch_change_infer=False", "train.epochs=4",
                           f"train.steps_per_epoch={steps}", "train.validation_steps=1",
                           f"train.model_dir={work}/models", f"train.eval_dir={work}/eval", "train.create_backup=False",
                           f"infer.images_dir={data}/test/images", f"infer.output_dir={work}/masks"])
fit = train_from_config(cfg, device="cpu", quiet=True)
timed = fit.history[1:]
train_img_s = len(timed) * steps * cfg.train.batch_size / sum(r["seconds"] for r in timed)
train_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
began = time.perf_counter()
result = infer_from_config(cfg, device="cpu", quiet=True)
infer_s = time.perf_counter() - began
print(json.dumps({"train_img_s": train_img_s, "infer_img_s": len(result.written) / infer_s,
                  "infer_images": len(result.written), "peak_rss_mb_train": train_rss_mb}))
"""


def unpack(commit: str, into: Path) -> str:
    """The flexunet package of `commit` under `into`; returns the commit's short hash."""
    data = subprocess.run(["git", "archive", commit, "flexunet"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def measure(tree: Path, threads: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads), "MPLBACKEND": "Agg"}
        out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(DATA), str(SEED_CONFIG), work,
                              str(steps)], env=env, capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"{tree}: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="training batches per epoch (4 epochs, first dropped)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {name: Path(tmp) / name for name in ("before", "after")}
        hashes = {name: unpack(getattr(args, name), tree) for name, tree in trees.items()}
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        loads = [os.getloadavg()]
        began = time.time()
        for i in range(args.repeats):
            for name in ("before", "after") if i % 2 == 0 else ("after", "before"):
                runs[name].append(measure(trees[name], args.threads, args.steps))
                loads.append(os.getloadavg())
                print(name, runs[name][-1], flush=True)
    keys = ("train_img_s", "infer_img_s", "peak_rss_mb_train")
    medians = {name: {k: statistics.median(r[k] for r in rows if k in r) for k in keys} for name, rows in runs.items()}
    result = {"what": __doc__.split("\n\n")[0], "command": "python benchmarks/regression.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_info(), "threads": args.threads,
              "commits": hashes, "repeats": args.repeats, "seconds": round(time.time() - began, 1),
              "load_averages": [round(x[0], 2) for x in loads], "runs": runs, "medians": medians,
              "ratio_after_over_before": {k: medians["after"][k] / medians["before"][k] for k in keys}}
    out = ROOT / "benchmarks" / "results" / "regression.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["ratio_after_over_before"]), "->", out)


if __name__ == "__main__":
    main()
