"""Choose the doctor's near-copy threshold from score curves, then measure it with the doctor itself.

Scores: the best aligned score of an image among the summary-nearest references of another set, exactly what
`doctor` compares with its threshold (`find_matches` with no threshold).
- Leak: pap-smear's own folders (197 cells x 13 flips/rotations, augmented before splitting, so every valid/test
  cell is in train): each valid/test image's best score against the train copies of its own cell (source id =
  the name after `flipped_`, `mirrored_`, `rotated_<deg>_`).
- Independent: the same images' best score against train images of other cells; the grouped split
  (benchmarks/splits/pap_smear_grouped.csv, no cell in two splits: valid/test against train); and DEMO_IMAGES
  synthetic demo images (flexunet.demo.draw_cell_image, 64 px as the demo draws them), each against all others.
Rule: the threshold is midway between the highest independent score and the lowest leak score, rounded to 0.01;
the script stops when the curves overlap or the rounded value leaves the gap.
Then, at that threshold, `doctor` runs as a user runs it: on the leaky folders (recall by source id, wrong pairs),
on the grouped split through a config with split_file (false positives), and on a fresh demo dataset drawn with
another seed (false positives on images the threshold never saw). Then, per kind of copy (flips and rotations, JPEG
re-encodes at quality 90-30, centre and corner crops keeping 50-90% of the area, a combination, barrel and elastic
distortions), the share of 60 pap-smear and 60 demo copies that score above the threshold against their source: a
kind is "checked" when >= 95% are found on both; the doctor's verdict (flexunet/prepare/fingerprint.py
CHECKED_COPIES) names what is checked and what is not from this table.

Run: nice -n 10 python benchmarks/doctor_calibration.py [PAP_SMEAR_DIR]   (~2 min on 2 cores)
Writes benchmarks/results/doctor_calibration.json; flexunet/prepare/fingerprint.py DEFAULT_THRESHOLD cites it.
"""
from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "pap-smear"
SPLIT_FILE = REPO / "benchmarks" / "splits" / "pap_smear_grouped.csv"
OUT = REPO / "benchmarks" / "results" / "doctor_calibration.json"
DEMO_IMAGES, DEMO_SIZE, DEMO_SEED, CHECK_SEED = 1200, 64, 1, 2
QUANTILES = (0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0)


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def best_scores(query: list[np.ndarray], ref: list[np.ndarray] | None, same: object = None) -> dict[str, list[float]]:
    """Per query image: best score among its candidates in `ref` (None: the others of `query`), split by `same`.

    `same(q, r)` says whether a pair is a true copy; without it every pair is independent.
    """
    from flexunet.prepare.fingerprint import fingerprint, find_matches

    q = fingerprint(query)
    r = q if ref is None else fingerprint(ref)
    best: dict[str, dict[int, float]] = {"leak": {}, "independent": {}}
    for m in find_matches(q, r, threshold=-1.0, exclude_self=ref is None):
        kind = "leak" if same is not None and same(m.query, m.ref) else "independent"
        best[kind][m.query] = max(best[kind].get(m.query, -1.0), m.score)
    return {k: list(v.values()) for k, v in best.items()}


def summary(scores: list[float]) -> dict[str, object]:
    values = np.asarray(scores)
    return {"n": len(values), **{f"q{q:g}": round(float(np.quantile(values, q)), 4) for q in QUANTILES}}


def score_curves(data: Path) -> dict[str, list[float]]:
    """Leak and independent best scores on the pap-smear folders, the grouped split and the demo images."""
    from flexunet.demo import draw_cell_image
    from flexunet.prepare.split import source_id
    from flexunet.data.split_file import read_split_file

    paths = {s: sorted((data / s / "images").glob("*.jpg")) for s in ("train", "valid", "test")}
    images = {p: read_rgb(p) for ps in paths.values() for p in ps}
    train = paths["train"]
    curves: dict[str, list[float]] = {"leak": [], "pap_other_cells": [], "grouped": [], "demo": []}
    for split in ("valid", "test"):
        query = paths[split]
        found = best_scores([images[p] for p in query], [images[p] for p in train],
                            lambda i, j: source_id(query[i].stem) == source_id(train[j].stem))
        curves["leak"] += found["leak"]
        curves["pap_other_cells"] += found["independent"]
    grouped = read_split_file(SPLIT_FILE)
    by_split = {s: [images[p] for p in images if grouped[p.stem] == s] for s in ("train", "valid", "test")}
    for split in ("valid", "test"):
        curves["grouped"] += best_scores(by_split[split], by_split["train"])["independent"]
    rng = np.random.default_rng(DEMO_SEED)
    curves["demo"] = best_scores([draw_cell_image(rng, DEMO_SIZE)[0] for _ in range(DEMO_IMAGES)], None)["independent"]
    return curves


def choose_threshold(leak: list[float], independent: list[float]) -> float:
    """Midway in the gap between the highest independent and the lowest leak score, rounded to 0.01."""
    low, high = max(independent), min(leak)
    if low >= high:
        sys.exit(f"no gap: independent images score up to {low:.4f}, true leaks down to {high:.4f}")
    threshold = round((low + high) / 2, 2)
    if not low < threshold <= high:
        sys.exit(f"rounded threshold {threshold} leaves the gap ({low:.4f}, {high:.4f}]")
    return threshold


def doctor_on_leaky(data: Path, threshold: float) -> dict[str, object]:
    """Recall by source id and wrong pairs of `doctor` on the pap-smear folders."""
    from flexunet.prepare.doctor import doctor
    from flexunet.prepare.split import source_id

    start = time.perf_counter()
    report = doctor(data, threshold)
    sources = {s.name: {p.stem: source_id(p.stem) for p in s.files.images} for s in report.stats.splits}
    leaking = {(s, stem) for s in ("valid", "test") for stem, sid in sources[s].items() if sid in set(sources["train"].values())}
    flagged = {(d.split, Path(d.image).stem) for d in report.near_duplicates if d.match_split == "train"}
    wrong = sum(source_id(Path(d.image).stem) != source_id(Path(d.match).stem) for d in report.near_duplicates)
    return {"leaking_images": len(leaking), "flagged_images": len(flagged),
            "recall": round(len(leaking & flagged) / len(leaking), 4), "flagged_pairs": len(report.near_duplicates),
            "wrong_pairs": wrong, "seconds": round(time.perf_counter() - start, 2)}


def doctor_on_grouped(data: Path, threshold: float, folder: Path) -> dict[str, object]:
    """False positives of `doctor` on the grouped split, read as training reads it (glob folders + split_file)."""
    from flexunet.config import config_from_dict
    from flexunet.prepare.doctor import doctor_config

    section = {"images_dir": f"{data}/*/images/", "masks_dir": f"{data}/*/masks/", "split_file": str(SPLIT_FILE)}
    cfg = config_from_dict({"model": {"num_classes": 1}, "train": section, "valid": section, "test": section}, folder)
    start = time.perf_counter()
    report = doctor_config(cfg, threshold)
    return {"images": {s.name: len(s.files.images) for s in report.stats.splits},
            "false_positive_images": len({d.image for d in report.near_duplicates}),
            "byte_identical": len(report.stats.duplicates), "shared_files": len(report.shared),
            "seconds": round(time.perf_counter() - start, 2)}


def doctor_on_fresh_demo(threshold: float, folder: Path) -> dict[str, object]:
    """False positives of `doctor` on a demo dataset drawn with a seed the calibration never saw."""
    from flexunet.demo import make_demo_dataset
    from flexunet.prepare.doctor import doctor

    counts = (DEMO_IMAGES * 8 // 10, DEMO_IMAGES // 10, DEMO_IMAGES // 10)
    root = make_demo_dataset(folder, DEMO_SIZE, counts, seed=CHECK_SEED)
    report = doctor(root, threshold)
    return {"images": dict(zip(("train", "valid", "test"), counts)), "seed": CHECK_SEED,
            "false_positive_images": len({d.image for d in report.near_duplicates}),
            "byte_identical": len(report.stats.duplicates)}


def _rotate(im: np.ndarray, degrees: float) -> np.ndarray:
    h, w = im.shape[:2]
    return cv2.warpAffine(im, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1), (w, h))


def _crop(im: np.ndarray, area: float) -> np.ndarray:
    """The centre crop keeping `area` of the pixels (side sqrt(area)), resized back to the image's size."""
    h, w = im.shape[:2]
    keep = math.sqrt(area)
    top, left = int(round(h * (1 - keep) / 2)), int(round(w * (1 - keep) / 2))
    return cv2.resize(im[top:h - top, left:w - left], (w, h))


def _off_centre_crop(im: np.ndarray, area: float) -> np.ndarray:
    """A crop keeping `area` of the pixels from the top-left corner (the copy's centre moves)."""
    h, w = im.shape[:2]
    keep = math.sqrt(area)
    return cv2.resize(im[: int(round(h * keep)), : int(round(w * keep))], (w, h))


def _jpeg(im: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED)


def _barrel(im: np.ndarray, strength: float = 0.3) -> np.ndarray:
    """Barrel distortion (the breast set's barrdistorted_ files): radius r -> r (1 + strength r^2)."""
    h, w = im.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    nx, ny = (xx - cx) / cx, (yy - cy) / cy
    factor = 1 + strength * (nx**2 + ny**2)
    return cv2.remap(im, (nx * factor * cx + cx).astype(np.float32), (ny * factor * cy + cy).astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _elastic(im: np.ndarray, rng: np.random.Generator, alpha: float = 0.08, sigma: float = 0.08) -> np.ndarray:
    """Elastic deformation (the breast set's deformed_ files): a smooth random displacement of up to ~alpha of the
    side, smoothed over sigma of the side."""
    h, w = im.shape[:2]
    blur = max(3, int(sigma * w) | 1)
    dx, dy = (cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (blur * 3 | 1, blur * 3 | 1), blur)
              for _ in range(2))
    dx, dy = (d / (np.abs(d).max() + 1e-6) * alpha * w for d in (dx, dy))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    return cv2.remap(im, xx + dx, yy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


CROP_AREAS = (0.5, 0.6, 0.7, 0.8, 0.9)
FOUND = 0.95  # a kind of copy counts as checked when at least this share of its copies score >= the threshold


def copy_kinds(rng: np.random.Generator) -> dict[str, dict[str, object]]:
    """Each kind of copy the doctor is asked about: family (flip/rotation, re-encode, crop, distortion) and maker."""
    kinds: dict[str, dict[str, object]] = {
        "mirror": {"family": "flip/rotation", "make": lambda im: im[:, ::-1].copy()},
        "flip_vertical": {"family": "flip/rotation", "make": lambda im: im[::-1].copy()},
        "rotate_90": {"family": "flip/rotation", "make": lambda im: np.rot90(im).copy()},
        "rotate_37": {"family": "flip/rotation", "make": lambda im: _rotate(im, 37)},
        "mirror_rotate_200": {"family": "flip/rotation", "make": lambda im: _rotate(im[:, ::-1].copy(), 200)},
    }
    for quality in (90, 70, 50, 30):
        kinds[f"jpeg_{quality}"] = {"family": "re-encode", "make": lambda im, q=quality: _jpeg(im, q)}
    for area in CROP_AREAS:
        kinds[f"crop_{round(area * 100)}"] = {"family": "centre crop", "area": area,
                                             "make": lambda im, a=area: _crop(im, a)}
        kinds[f"corner_crop_{round(area * 100)}"] = {"family": "corner crop", "area": area,
                                                    "make": lambda im, a=area: _off_centre_crop(im, a)}
    kinds["rotate_13_crop_85_jpeg_70"] = {"family": "combined", "make": lambda im: _jpeg(_crop(_rotate(im, 13), 0.85),
                                                                                          70)}
    kinds["barrel_0.3"] = {"family": "distortion", "make": _barrel}
    kinds["elastic"] = {"family": "distortion", "make": lambda im: _elastic(im, rng)}
    return kinds


def synthetic_copies(data: Path, threshold: float, n: int = 60) -> dict[str, object]:
    """Share of copies scoring >= threshold against their source, per kind of copy and image set (pap-smear
    training originals and demo images), and from them what the doctor can be said to check: each family's kinds
    found in at least FOUND of the cases on both sets, and the smallest crop area found so."""
    from flexunet.demo import draw_cell_image
    from flexunet.prepare.fingerprint import aligned_scores, fingerprint

    rng = np.random.default_rng(CHECK_SEED + 1)
    sources = {"pap_smear": [read_rgb(p) for p in sorted((data / "train" / "images").glob("1*.jpg"))[:n]],
               "demo": [draw_cell_image(rng, DEMO_SIZE)[0] for _ in range(n)]}
    kinds = copy_kinds(np.random.default_rng(CHECK_SEED + 2))
    found: dict[str, dict[str, float]] = {}
    for name, images in sources.items():
        base = fingerprint(images)
        for kind, spec in kinds.items():
            make = spec["make"]
            copies = fingerprint([make(im) for im in images])  # type: ignore[operator]
            scores = [aligned_scores(base.spectra[i], copies.spectra[i:i + 1])[0] for i in range(len(images))]
            found.setdefault(kind, {})[name] = round(float(np.mean(np.asarray(scores) >= threshold)), 4)
    checked = {kind: all(v >= FOUND for v in found[kind].values()) for kind in kinds}
    smallest: dict[str, float | None] = {}
    for family in ("centre crop", "corner crop"):  # from the largest area down, while each is found
        smallest[family] = None
        for area in sorted(CROP_AREAS, reverse=True):
            kind = next(k for k, spec in kinds.items() if spec["family"] == family and spec.get("area") == area)
            if not checked[kind]:
                break
            smallest[family] = area
    return {"found": found, "rule": f"a kind is checked when >= {FOUND:g} of its copies score >= the threshold on "
                                    "both image sets; a crop area is checked when it and every larger one are",
            "checked": sorted(k for k, ok in checked.items() if ok),
            "not_checked": sorted(k for k, ok in checked.items() if not ok),
            "smallest_crop_area_checked": smallest, "images_per_set": n}


def main(data: Path) -> dict[str, object]:
    from flexunet.prepare.fingerprint import DEFAULT_THRESHOLD

    start = time.perf_counter()
    curves = score_curves(data)
    independent = curves["pap_other_cells"] + curves["grouped"] + curves["demo"]
    threshold = choose_threshold(curves["leak"], independent)
    with tempfile.TemporaryDirectory() as tmp:
        leaky = doctor_on_leaky(data, threshold)
        grouped = doctor_on_grouped(data, threshold, Path(tmp))
        demo = doctor_on_fresh_demo(threshold, Path(tmp) / "demo")
    return {
        "rule": "midway between the highest independent and the lowest leak score, rounded to 0.01",
        "threshold": threshold,
        "code_default": DEFAULT_THRESHOLD,
        "gap": [round(max(independent), 4), round(min(curves["leak"]), 4)],
        "scores": {"leak (valid/test image vs train copies of its cell, leaky folders)": summary(curves["leak"]),
                   "independent: leaky folders, other cells in train": summary(curves["pap_other_cells"]),
                   "independent: grouped split, valid/test vs train": summary(curves["grouped"]),
                   f"independent: {DEMO_IMAGES} demo images ({DEMO_SIZE} px, seed {DEMO_SEED}), each vs all others":
                       summary(curves["demo"])},
        "recall_leaky_pap_smear": leaky,
        "false_positives_grouped_split": grouped,
        "false_positives_fresh_demo": demo,
        "copies_by_kind": synthetic_copies(data, threshold),
        "dataset": str(data),
        "split_file": str(SPLIT_FILE.relative_to(REPO)),
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine_info(),
        "date": datetime.date.today().isoformat(),
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
    }


if __name__ == "__main__":
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    if not data.is_dir():
        sys.exit(f"{data}: pap-smear data not found")
    result = main(data)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
