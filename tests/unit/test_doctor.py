"""Doctor: near-duplicates across splits survive flips, rotations, crops, shrinks and JPEG; other checks fire."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import cv2
import numpy as np

from flexunet.prepare.doctor import doctor, find_leaks
from flexunet.prepare.fingerprint import DEFAULT_THRESHOLD, aligned_scores, find_matches, fingerprint
from flexunet.prepare.split import source_id
from tests.conftest import requires_shared


def cell(seed: int, size: int = 128) -> np.ndarray:
    """A textured 'cell' image: random ellipses and smooth noise on a plain background (RGB uint8)."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), (120, 130, 150), np.uint8)
    for _ in range(6):
        centre = tuple(int(v) for v in rng.integers(20, size - 20, 2))
        axes = tuple(int(v) for v in rng.integers(6, 30, 2))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, tuple(int(v) for v in rng.integers(30, 230, 3)), -1)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (size, size, 3)).astype(np.float32), (0, 0), 2)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1), (w, h))  # black corners


def jpeg(image: np.ndarray, quality: int = 60) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def crop(image: np.ndarray, keep: float = 0.9) -> np.ndarray:
    h, w = image.shape[:2]
    ch, cw = int(h * keep), int(w * keep)
    top, left = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(image[top:top + ch, left:left + cw], (w, h))


def shrink(image: np.ndarray, ratio: float = 0.85) -> np.ndarray:
    h, w = image.shape[:2]
    small = cv2.resize(image, (int(w * ratio), int(h * ratio)))
    out = np.empty_like(image)
    out[...] = image[2, 2]
    top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out


VARIANTS = {
    "rot37": lambda im: rotate(im, 37), "rot90": lambda im: np.rot90(im).copy(), "flip": lambda im: im[::-1].copy(),
    "mirror_rot200": lambda im: rotate(im[:, ::-1].copy(), 200), "jpeg50": lambda im: jpeg(im, 50),
    "crop90": crop, "shrink85": shrink, "rot13_crop_jpeg": lambda im: jpeg(crop(rotate(im, 13), 0.92), 70),
}


def test_variants_score_above_threshold_and_unrelated_below() -> None:
    base = fingerprint([cell(1)])
    variants = fingerprint([make(cell(1)) for make in VARIANTS.values()])
    others = fingerprint([cell(100 + i) for i in range(12)])
    copies = aligned_scores(base.spectra[0], variants.spectra)
    unrelated = aligned_scores(base.spectra[0], others.spectra)
    assert copies.min() >= DEFAULT_THRESHOLD, dict(zip(VARIANTS, copies.round(3)))
    assert unrelated.max() < 0.5 * DEFAULT_THRESHOLD


def test_find_matches_pairs_each_copy_with_its_source() -> None:
    sources = [cell(i) for i in range(10)]
    queries = [VARIANTS["rot37"](sources[3]), jpeg(sources[7][:, ::-1].copy()), cell(99)]
    matches = find_matches(fingerprint(queries), fingerprint(sources))
    best = {m.query: m.ref for m in matches}
    assert best == {0: 3, 1: 7}


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def test_doctor_reports_leaks_pairing_and_empty_masks(tmp_path: Path) -> None:
    mask = np.zeros((128, 128), np.uint8)
    mask[40:80, 40:80] = 255
    for i in range(6):
        _write(tmp_path / "train" / "images" / f"c{i}.png", cell(i))
        _write(tmp_path / "train" / "masks" / f"c{i}.png", mask)
    _write(tmp_path / "valid" / "images" / "leak.jpg", jpeg(rotate(cell(2), 120)))
    _write(tmp_path / "valid" / "masks" / "leak.png", np.zeros_like(mask))  # empty mask
    _write(tmp_path / "valid" / "images" / "new.png", cell(50))
    _write(tmp_path / "valid" / "masks" / "new.png", mask)
    _write(tmp_path / "valid" / "images" / "lonely.png", cell(51))
    (tmp_path / "valid" / "images" / "broken.png").write_bytes(b"not an image")
    _write(tmp_path / "valid" / "masks" / "broken.png", mask)

    report = doctor(tmp_path)

    assert [(Path(d.image).name, Path(d.match).name) for d in report.near_duplicates] == [("leak.jpg", "c2.png")]
    assert report.leaks
    text = "\n".join(report.problems)
    assert "lonely.png: no mask" in text
    assert "broken.png: not a readable image" in text
    assert "leak.png: mask has no foreground" in text
    assert "valid: 1 of 4 images are near-copies of images in train" in text
    saved = json.loads(report.write_json(tmp_path / "out" / "doctor.json").read_text())
    assert saved["leaks"] is True and saved["near_duplicates"][0]["match_split"] == "train"


def test_doctor_on_real_pap_smear_subset(tmp_path: Path) -> None:
    """≥ 95 % of valid/test images whose source is in train are flagged, ≥ 99 % of flagged pairs are right."""
    data = requires_shared("pap-smear")
    by_source: dict[str, list[Path]] = {}
    for path in sorted(data.glob("*/images/*.jpg")):
        by_source.setdefault(source_id(path.stem), []).append(path)
    chosen = random.Random(0).sample(sorted(by_source), 40)
    decoded: dict[str, tuple[list[Path], list[np.ndarray]]] = {"train": ([], []), "valid": ([], []), "test": ([], [])}
    for sid in chosen:
        for path in by_source[sid]:
            paths, images = decoded[path.parent.parent.name]
            paths.append(path)
            images.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    start = time.perf_counter()
    leaks = find_leaks(decoded)
    seconds = time.perf_counter() - start
    train_ids = {source_id(p.stem) for p in decoded["train"][0]}
    leaking = {p for s in ("valid", "test") for p in decoded[s][0] if source_id(p.stem) in train_ids}
    flagged = {Path(d.image) for d in leaks if d.match_split == "train"}
    right = [source_id(Path(d.image).stem) == source_id(Path(d.match).stem) for d in leaks]
    assert len(leaking) >= 20
    assert len(leaking & flagged) / len(leaking) >= 0.95
    assert sum(right) / len(right) >= 0.99
    assert seconds < 30
