"""Doctor: near-duplicates across splits survive flips, rotations, crops, shrinks and JPEG; other checks fire."""
from __future__ import annotations

import json
import random
import shlex
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from flexunet.config import load_config
from flexunet.evaluate import evaluate_run
from flexunet.evaluate.leakage import leak_summary
from flexunet.prepare.doctor import doctor, find_leaks
from flexunet.prepare.fingerprint import DEFAULT_THRESHOLD, aligned_scores, find_matches, fingerprint
from flexunet.prepare.split import source_id
from flexunet.data.split_file import write_split_file
from flexunet.files import atomic_write_text
from tests.conftest import make_config, requires_shared, run_cli


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
    """About the image centre, ((w - 1) / 2, (h - 1) / 2) in OpenCV's pixel coordinates; black corners."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1), (w, h))


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
    "shrink85": shrink,
}
# Copies that still resemble their source, but below the calibrated threshold for this drawn cell (the rates per kind
# of copy are in doctor_calibration.json copies_by_kind): the doctor misses these.
CROPPED = {"crop90": crop, "rot13_crop_jpeg": lambda im: jpeg(crop(rotate(im, 13), 0.92), 70)}


def test_variants_score_above_threshold_and_unrelated_below() -> None:
    base = fingerprint([cell(1)])
    variants = fingerprint([make(cell(1)) for make in VARIANTS.values()])
    cropped = fingerprint([make(cell(1)) for make in CROPPED.values()])
    others = fingerprint([cell(100 + i) for i in range(12)])
    copies = aligned_scores(base.spectra[0], variants.spectra)
    unrelated = aligned_scores(base.spectra[0], others.spectra)
    assert copies.min() >= DEFAULT_THRESHOLD, dict(zip(VARIANTS, copies.round(3)))
    assert aligned_scores(base.spectra[0], cropped.spectra).min() > unrelated.max() + 0.3
    assert unrelated.max() < 0.5 * DEFAULT_THRESHOLD


def test_default_threshold_is_the_calibrated_one() -> None:
    """The code's default is the threshold benchmarks/doctor_calibration.py chose from the score curves."""
    result = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "doctor_calibration.json").read_text())
    low, high = result["gap"]
    assert DEFAULT_THRESHOLD == result["threshold"] and low < DEFAULT_THRESHOLD <= high
    assert result["recall_leaky_pap_smear"]["recall"] == 1.0
    assert result["false_positives_grouped_split"]["false_positive_images"] == 0
    assert result["false_positives_fresh_demo"]["false_positive_images"] == 0


def test_the_verdict_claims_what_the_calibration_found_per_kind_of_copy() -> None:
    """CHECKED_COPIES / UNCHECKED_COPIES (the doctor's "clean" verdict) say what doctor_calibration.json measured."""
    from flexunet.prepare.fingerprint import CENTRE_CROP_AREA_FOUND, JPEG_QUALITY_FOUND

    kinds = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "results" /
                        "doctor_calibration.json").read_text())["copies_by_kind"]
    checked = set(kinds["checked"])
    assert {"mirror", "flip_vertical", "rotate_90", "rotate_37", "mirror_rotate_200"} <= checked
    assert kinds["smallest_crop_area_checked"]["centre crop"] == CENTRE_CROP_AREA_FOUND
    assert kinds["smallest_crop_area_checked"]["corner crop"] is None  # hence "off-centre crops" are not checked
    jpeg = sorted(int(k.split("_")[1]) for k in kinds["found"] if k.startswith("jpeg_"))
    assert min(q for q in jpeg if f"jpeg_{q}" in checked) == JPEG_QUALITY_FOUND
    assert all(f"jpeg_{q}" not in checked for q in jpeg if q < JPEG_QUALITY_FOUND)
    assert {"elastic", "barrel_0.3"} <= set(kinds["not_checked"])


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


def _pool(root: Path, images: dict[str, np.ndarray]) -> Path:
    """All pairs in sub-folders `a/` and `b/` of one pool (read with `pool/*/images/` patterns), square masks."""
    mask = np.zeros((128, 128), np.uint8)
    mask[40:80, 40:80] = 255
    for k, (stem, image) in enumerate(images.items()):
        folder = root / ("a" if k % 2 else "b")
        _write(folder / "images" / f"{stem}.png", image)
        _write(folder / "masks" / f"{stem}.png", mask)
    return root


def _grouped_config(tmp_path: Path, pool: Path, assignment: dict[str, str]) -> Path:
    """A config whose three sections share the pool's folder patterns and one split list, as `flexunet split` makes."""
    split = write_split_file(tmp_path / "split.csv", [(stem, stem, name) for stem, name in assignment.items()])
    section = {"images_dir": str(pool / "*" / "images"), "masks_dir": str(pool / "*" / "masks"), "split_file": str(split)}
    return make_config(tmp_path, pool, {"train": section, "valid": section, "test": section})


DISJOINT = {"c0": "train", "c1": "train", "c2": "train", "c3": "train", "c4": "valid", "c5": "test"}


def test_doctor_with_split_file_examines_each_splits_own_files(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool", {stem: cell(i) for i, stem in enumerate(DISJOINT)})
    report = doctor(_grouped_config(tmp_path, pool, DISJOINT))
    assert {s.name: sorted(p.stem for p in s.files.images) for s in report.stats.splits} == {
        "train": ["c0", "c1", "c2", "c3"], "valid": ["c4"], "test": ["c5"]}
    assert not report.leaks and report.near_duplicates == () and report.stats.duplicates == () and report.shared == ()
    assert report.problems == []


def test_doctor_with_split_file_finds_a_test_copy_of_a_train_image(tmp_path: Path) -> None:
    images = {stem: cell(i) for i, stem in enumerate(DISJOINT)} | {"t_copy": jpeg(rotate(cell(0), 120))}
    pool = _pool(tmp_path / "pool", images)
    (pool / "b" / "images" / "t_same.png").write_bytes((pool / "a" / "images" / "c1.png").read_bytes())
    (pool / "b" / "masks" / "t_same.png").write_bytes((pool / "a" / "masks" / "c1.png").read_bytes())
    report = doctor(_grouped_config(tmp_path, pool, DISJOINT | {"t_copy": "test", "t_same": "test"}))
    assert {(Path(d.image).name, Path(d.match).name, d.match_split) for d in report.near_duplicates} == {
        ("t_copy.png", "c0.png", "train"), ("t_same.png", "c1.png", "train")}
    assert [(a.name, b.name) for a, b in report.stats.duplicates] == [("c1.png", "t_same.png")]
    assert report.leaks and "test: 2 of 3 images are near-copies of images in train" in report.problems


def test_a_file_named_by_two_splits_is_shared_not_its_own_copy(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool", {f"c{i}": cell(i) for i in range(4)})
    same = {"images_dir": str(pool / "*" / "images"), "masks_dir": str(pool / "*" / "masks")}
    report = doctor(make_config(tmp_path, pool, {"train": same, "valid": same, "test": same}))
    assert report.near_duplicates == () and report.stats.duplicates == ()  # nothing matched with itself
    assert len(report.shared) == 4 + 4 + 4 and {d.match_split for d in report.shared} == {"train", "valid"}
    assert report.leaks and "test: 4 of 4 images are the same files as in train" in "\n".join(report.problems)


def test_doctor_set_changes_the_folders_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(tmp_path / "pool", {stem: cell(i) for i, stem in enumerate(DISJOINT)})
    config = _grouped_config(tmp_path, pool, DISJOINT)
    leaky = _pool(tmp_path / "other", {"flipped_c2": cell(2)[::-1].copy()})
    out = tmp_path / "doctor.json"
    assert run_cli(monkeypatch, "doctor", str(config), "--strict", "--json", str(out)) == 0
    assert json.loads(out.read_text())["splits"]["test"]["pairs"] == 1
    code = run_cli(monkeypatch, "doctor", str(config), "--strict", "--json", str(out),
                   "--set", f"test.images_dir={leaky / '*' / 'images'}", "--set", f"test.masks_dir={leaky / '*' / 'masks'}",
                   "--set", "test.split_file=None")
    saved = json.loads(out.read_text())
    assert code == 1 and saved["leaks"] is True
    assert [(Path(d["image"]).name, Path(d["match"]).name) for d in saved["near_duplicates"]] == [("flipped_c2.png", "c2.png")]


class MeanBrightness(nn.Module):
    """A stand-in model: foreground where the image is brighter than its mean."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # evaluation asks the model for its device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] - x[:, :1].mean()) * 40 + self.anchor


def test_evaluate_on_a_grouped_split_shows_no_leak(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool", {stem: cell(i) for i, stem in enumerate(DISJOINT)})
    cfg = load_config(_grouped_config(tmp_path, pool, DISJOINT))
    result = evaluate_run(MeanBrightness(), cfg, tmp_path / "eval")
    assert result.leaks.status == "clean", result.leaks.lines
    assert result.leaks.lines[0] == "0 of 1 test images are near-copies (flips, rotations, crops, re-encodes) of images in another split"
    assert result.leaks.lines[-1].startswith("checked: identical files, flips")  # "clean" says for what
    assert "not checked: off-centre crops" in result.leaks.lines[-1]
    page = (tmp_path / "eval" / "report.html").read_text()
    assert 'data-status="clean"' in page and "LEAK" not in page
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["leakage"]["status"] == "clean"


def test_evaluate_hint_after_set_names_a_doctor_command_for_the_same_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(tmp_path / "pool", {stem: cell(i) for i, stem in enumerate(DISJOINT)})
    config = make_config(tmp_path, pool)  # its own folders do not exist: only --set makes the data
    sets = [f"{s}.{k}={v}" for s in ("train", "valid", "test") for k, v in (
        ("images_dir", pool / "*" / "images"), ("masks_dir", pool / "*" / "masks"), ("split_file", tmp_path / "split.csv"))]
    write_split_file(tmp_path / "split.csv", [(stem, stem, name) for stem, name in DISJOINT.items()])
    (tmp_path / "eval").mkdir()
    atomic_write_text(tmp_path / "eval" / "doctor.json", json.dumps(  # an earlier doctor's report about other files
        {"splits": {"test": {"pairs": 6}}, "near_duplicates": [{"image": "x", "split": "test", "match_split": "train"}]}))
    cfg = load_config(config, sets)
    leaks = leak_summary(cfg, "test", tmp_path / "eval", run_doctor=False)
    assert leaks.status == "not checked"
    words = shlex.split(leaks.lines[0].split("`")[1])
    assert words[:3] == ["flexunet", "doctor", str(config)]
    assert sorted(words[i + 1] for i, w in enumerate(words) if w == "--set") == sorted(sets), words
    monkeypatch.chdir(tmp_path)
    assert run_cli(monkeypatch, *words[1:]) == 0
    assert leak_summary(cfg, "test", tmp_path / "eval", run_doctor=False).status == "clean"  # the hint's report counts


def test_doctor_config_checks_sizes_with_its_own_max_pixels(tmp_path: Path) -> None:
    """[image] max_pixels decides which files training skips; the doctor must flag the same ones, not the default's."""
    from tests.conftest import write_disc_pairs

    for split, n in (("train", 3), ("valid", 1), ("test", 1)):
        write_disc_pairs(tmp_path / "data" / split, n, seed=len(split))
    write_disc_pairs(tmp_path / "big", 1, size=40)
    for kind in ("images", "masks"):
        (tmp_path / "big" / kind / "img_000.png").rename(tmp_path / "data" / "test" / kind / "big.png")
    report = doctor(make_config(tmp_path, tmp_path / "data", {"image": {"max_pixels": 1200}}))
    over = [p for p in report.problems if "over the limit of 1,200 ([image] max_pixels)" in p]
    assert sorted(Path(p.split(":")[0]).parent.name for p in over) == ["images", "masks"]
    assert all("big.png: 40x40 pixels" in p for p in over)


def test_copies_named_with_a_seed_prefix_are_a_leak_even_when_they_look_different(tmp_path: Path) -> None:
    """The breast set's deformed_/barrdistorted_ copies escape the fingerprints; their names give them away. Equal
    names in two splits (the demo's cell_0000) are not taken for copies."""
    rng = np.random.default_rng(0)
    for split, stems in (("train", ["12", "cell_0000"]), ("test", ["deformed_alpha_1300_sigmoid_8_12", "cell_0000"])):
        for stem in stems:
            for kind in ("images", "masks"):
                (tmp_path / split / kind).mkdir(parents=True, exist_ok=True)
                array = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) if kind == "images" else \
                    np.where(rng.random((48, 48)) > 0.5, 255, 0).astype(np.uint8)
                cv2.imwrite(str(tmp_path / split / kind / f"{stem}.png"), array)
    report = doctor(tmp_path)
    assert report.leaks and not report.near_duplicates
    assert [(Path(d.image).name, Path(d.match).name) for d in report.named] == [
        ("deformed_alpha_1300_sigmoid_8_12.png", "12.png")]
    assert any("named as augmented copies of sources in train" in p for p in report.problems)
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["name_copies"][0]["split"] == "test"
