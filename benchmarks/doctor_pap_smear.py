"""Benchmark `flexunet doctor` on the pap-smear set: does it find the augmented copies that leak across splits?

Truth comes from the file names: the source id is the name after the `flipped_`/`mirrored_`/`rotated_<deg>_`
prefix. Recall: share of valid/test images whose source is also in train that doctor flags with a train match.
Pair precision: share of flagged (image, best match) pairs with the same source id. Doctor lists one pair per
flagged image (its best match, with a count of further matches), so those are the pairs judged.

Run: python benchmarks/doctor_pap_smear.py [DATA_DIR]   (default ../shared/data/pap-smear from the repo root)
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "pap-smear"


def main(data: Path) -> dict[str, object]:
    from flexunet.prepare.doctor import doctor
    from flexunet.prepare.split import source_id

    start = time.perf_counter()
    report = doctor(data)
    seconds = time.perf_counter() - start
    sources = {s.name: {p.stem: source_id(p.stem) for p in s.files.images} for s in report.stats.splits}
    train_ids = set(sources["train"].values())
    leaking = {(split, stem) for split in ("valid", "test") for stem, sid in sources[split].items() if sid in train_ids}
    flagged = {(d.split, Path(d.image).stem) for d in report.near_duplicates if d.match_split == "train"}
    correct = [source_id(Path(d.image).stem) == source_id(Path(d.match).stem) for d in report.near_duplicates]
    result = {
        "dataset": str(data),
        "images": {s.name: len(s.files.images) for s in report.stats.splits},
        "threshold": report.threshold,
        "leaking_images": len(leaking),
        "flagged_images": len(flagged),
        "recall": round(len(leaking & flagged) / max(len(leaking), 1), 4),
        "flagged_pairs": len(correct),
        "wrong_pairs": correct.count(False),
        "pair_precision": round(sum(correct) / max(len(correct), 1), 4),
        "flagged_outside_truth": len(flagged - leaking),
        "doctor_seconds": round(seconds, 2),
        "cpu": machine_info(),
        "torch_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "date": datetime.date.today().isoformat(),
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(),
    }
    return result


if __name__ == "__main__":
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    if not data.is_dir():
        sys.exit(f"{data}: pap-smear data not found")
    result = main(data)
    out = REPO / "benchmarks" / "results" / "doctor_pap_smear.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
