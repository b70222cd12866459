"""Fingerprints that survive flips, rotations and JPEG re-encoding (small crops only partly), to find augmented copies.

An image's gradient magnitude (its shape) and a band-pass of its intensity (its texture) are sampled on a polar grid
around its centre (grey, square centre crop, downsampled). A rotation about the centre is then a circular shift along
the angle axis and a flip is a reversal of it, so:
- the magnitude of the angular FFT of each ring is unchanged by both: a cheap summary to find candidates, and
- the best circular cross-correlation over all shifts (and the reversed copy) scores a candidate pair exactly.
Corners padded by a rotation lie outside the inscribed circle and are never sampled. Small crops and shrinks
change the scale, so each image is also sampled with smaller radii and the scales are compared crosswise.
Shape and texture weigh half each: different images of near-identical shape (synthetic cells, one round cell at
the same distance from the centre) share the shape, and only a copy also shares the texture (the noise, the grain).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Radius of each extra sampling, as a fraction of the inscribed circle: covers crops/shrinks to ~80%.
SCALES = tuple(0.95 * f for f in (1.0, 0.95, 0.9, 0.85, 0.8))
# Aligned correlation at or above which two images count as copies: midway between the highest score of
# independent images (0.864, a pair among 1200 synthetic demo cells) and the lowest score of a true copy (0.944,
# pap-smear flips/rotations), rounded; chosen and measured by benchmarks/doctor_calibration.py, recorded in
# benchmarks/results/doctor_calibration.json.
DEFAULT_THRESHOLD = 0.9
# What that threshold finds, per kind of copy (doctor_calibration.json "copies_by_kind": a kind counts when >= 95% of
# 60 pap-smear and 60 demo copies score above it): flips, rotations by any angle, JPEG down to this quality, and
# crops about the image centre keeping at least this share of the area. Crops off the centre (even 90% of the
# area from a corner), smaller crops, stronger JPEG and elastic or barrel distortions are mostly missed.
JPEG_QUALITY_FOUND = 70
CENTRE_CROP_AREA_FOUND = 0.7
CHECKED_COPIES = (f"identical files, flips, rotations, JPEG re-encodes down to quality {JPEG_QUALITY_FOUND}, crops "
                  f"about the centre keeping >= {CENTRE_CROP_AREA_FOUND:.0%} of the area")
UNCHECKED_COPIES = (f"off-centre crops, smaller crops, JPEG below quality {JPEG_QUALITY_FOUND}, elastic or barrel "
                    "distortions, unless their names carry the source's")
_SIZE, _RINGS, _ANGLES, _SUMMARY_TERMS = 128, 16, 128, 8
_ROWS = 2 * _RINGS  # shape rings, then texture rings
_TEXTURE_WEIGHT = 0.5
_TEXTURE_BAND = (1.0, 3.0)  # sigmas (px at _SIZE) of the difference of Gaussians that keeps the texture


@dataclass(frozen=True)
class Fingerprints:
    """Per image: the angular spectra of its polar samples, and their rotation/flip-invariant summary."""

    spectra: np.ndarray  # (N, S, 2R, A//2+1) complex64: rfft along angle of the weighted, z-scored polar samples
    summary: np.ndarray  # (N, S, D) float32 unit vectors: low angular-FFT magnitudes of every ring

    def __len__(self) -> int:
        return len(self.spectra)


@dataclass(frozen=True)
class Match:
    """Image `query` of one set resembles image `ref` of another set with aligned correlation `score`."""

    query: int
    ref: int
    score: float


def polar_samples(image: np.ndarray) -> np.ndarray:
    """(S, 2R, A) float32 polar samples of the centred square of `image`: shape rings, then texture rings.

    Each part is z-scored on its own at each scale and weighted so that the correlation of two samples is the
    weighted mean of their shape and texture correlations.
    """
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    side = min(h, w)
    # a centred square stays the same square under 90-degree rotations of a non-square image
    top, left = (h - side) // 2, (w - side) // 2
    square = grey[top:top + side, left:left + side].astype(np.float32)
    small = cv2.resize(square, (_SIZE, _SIZE), interpolation=cv2.INTER_AREA if side > _SIZE else cv2.INTER_LINEAR)
    # gradient magnitude is itself rotation-invariant and ignores the flat background that every image shares
    blurred = cv2.GaussianBlur(small, (0, 0), 1.0)  # also smooths JPEG block edges
    edges = cv2.magnitude(cv2.Sobel(blurred, cv2.CV_32F, 1, 0), cv2.Sobel(blurred, cv2.CV_32F, 0, 1))
    texture = cv2.GaussianBlur(small, (0, 0), _TEXTURE_BAND[0]) - cv2.GaussianBlur(small, (0, 0), _TEXTURE_BAND[1])
    centre = (_SIZE / 2 - 0.5, _SIZE / 2 - 0.5)
    out = np.empty((len(SCALES), _ROWS, _ANGLES), dtype=np.float32)
    for s, fraction in enumerate(SCALES):
        for part, (plane, weight) in enumerate(((edges, 1 - _TEXTURE_WEIGHT), (texture, _TEXTURE_WEIGHT))):
            polar = cv2.warpPolar(plane, (_RINGS, _ANGLES), centre, _SIZE / 2 * fraction, cv2.WARP_POLAR_LINEAR)
            polar = polar.T  # (R, A): rings by angle
            # the scale makes (sum of products over both parts) / (_ROWS * _ANGLES) the weighted mean correlation
            normalised = (polar - polar.mean()) / (polar.std() + 1e-6)
            out[s, part * _RINGS:(part + 1) * _RINGS] = normalised * np.sqrt(2 * weight)
    return out


def fingerprint(images: list[np.ndarray]) -> Fingerprints:
    """Fingerprints of uint8 images (H, W) or (H, W, 3) RGB."""
    if not images:
        return Fingerprints(np.zeros((0, len(SCALES), _ROWS, _ANGLES // 2 + 1), np.complex64),
                            np.zeros((0, len(SCALES), _ROWS * _SUMMARY_TERMS), np.float32))
    polar = np.stack([polar_samples(image) for image in images])  # (N, S, 2R, A)
    spectra = np.fft.rfft(polar, axis=3).astype(np.complex64)
    # term 0 is the ring's sum (signed: the radial profile); the magnitudes of terms 1.. its angular structure
    summary = np.concatenate([spectra[..., :1].real, np.abs(spectra[..., 1:_SUMMARY_TERMS])], axis=3)
    summary = summary.reshape(len(images), len(SCALES), -1)
    summary -= summary.mean(axis=2, keepdims=True)
    summary /= np.linalg.norm(summary, axis=2, keepdims=True) + 1e-6
    return Fingerprints(spectra, summary.astype(np.float32))


def _scale_pairs() -> list[tuple[int, int]]:
    """Query scale against reference scale: full against every scale and every scale against full."""
    return [(0, 0)] + [(0, s) for s in range(1, len(SCALES))] + [(s, 0) for s in range(1, len(SCALES))]


def summary_similarity(query: Fingerprints, ref: Fingerprints) -> np.ndarray:
    """(Nq, Nr) best cosine similarity of the invariant summaries over the scale pairs."""
    best = np.full((len(query), len(ref)), -1.0, dtype=np.float32)
    for qs, rs in _scale_pairs():
        np.maximum(best, query.summary[:, qs] @ ref.summary[:, rs].T, out=best)
    return best


def aligned_scores(query: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """(K,) best correlation of one query's spectra (S, R, F) with K references (K, S, R, F).

    Maximised over rotation (circular shift), flip (the conjugate spectrum is the reversed signal) and scale pairs.
    """
    best = np.full(len(refs), -1.0, dtype=np.float32)
    norm = _ROWS * _ANGLES
    for qs, rs in _scale_pairs():
        q, r = query[qs][None], refs[:, rs]  # (1, R, F), (K, R, F)
        for cross in (q * np.conj(r), q * r):  # same orientation, mirrored
            corr = np.fft.irfft(cross.sum(axis=1), n=_ANGLES, axis=1)  # (K, A): one value per rotation
            np.maximum(best, corr.max(axis=1) / norm, out=best)
    return best


def find_matches(query: Fingerprints, ref: Fingerprints, threshold: float = DEFAULT_THRESHOLD,
                 candidates: int = 32, exclude_self: bool = False) -> list[Match]:
    """Every query image's references that score >= `threshold`, best first.

    Only the `candidates` references with the most similar summaries are scored exactly: the summary already
    ignores rotation and flips, so true copies rank near the top and the costly alignment runs on a few.
    """
    if not len(query) or not len(ref):
        return []
    similarity = summary_similarity(query, ref)
    if exclude_self:
        np.fill_diagonal(similarity, -2.0)
    k = min(candidates, len(ref) - (1 if exclude_self else 0))
    if k <= 0:
        return []
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]  # (Nq, k)
    matches = []
    for i, row in enumerate(top):
        scores = aligned_scores(query.spectra[i], ref.spectra[row])
        for j in np.argsort(-scores):
            if scores[j] < threshold:
                break
            matches.append(Match(i, int(row[j]), float(scores[j])))
    return matches


def near_copy_clusters(images: Sequence[Path]) -> list[str]:
    """One label per image: images linked by a chain of near-copies (the doctor's fingerprints) share a label."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from flexunet.data.io import read_image

    each = [fingerprint([read_image(p)]) for p in images]  # one decoded image in memory at a time
    prints = Fingerprints(np.concatenate([f.spectra for f in each]), np.concatenate([f.summary for f in each]))
    matches = find_matches(prints, prints, exclude_self=True)
    links = coo_matrix(([1] * len(matches), ([m.query for m in matches], [m.ref for m in matches])),
                       shape=(len(images), len(images)))
    return [str(label) for label in connected_components(links, directed=False)[1]]
