"""Wall time and test Dice of `flexunet demo` (the README's first command), recorded with the machine's facts.

Usage: python benchmarks/demo_time.py [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from flexunet.demo import run_demo  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "demo.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = run_demo(Path(tmp) / "demo", quiet=True)
            runs.append({"seconds": round(time.perf_counter() - start, 1), "foreground_dice": round(result.foreground_dice, 4),
                         "per_class_dice": {k: round(v, 4) for k, v in result.per_class_dice.items()}})
    out = {"machine": machine_info(), "command": "flexunet demo (run_demo, default settings)", "runs": runs,
           "median_seconds": sorted(r["seconds"] for r in runs)[len(runs) // 2]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
