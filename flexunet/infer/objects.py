"""The objects of predicted masks: objects.csv (one row per object), counts.csv (objects per image and class) and,
with `--instances`, 16-bit instance label PNGs (0 = background, 1..n = objects, numbered as in objects.csv)."""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flexunet.errors import DataError
from flexunet.files import atomic_write_text
from flexunet.postprocess import PostprocessSettings, instance_labels

OBJECT_COLUMNS = ("image", "object_id", "class", "area_px", "centroid_y", "centroid_x", "bbox_min_row",
                  "bbox_min_col", "bbox_max_row", "bbox_max_col", "mean_probability")
MAX_INSTANCES = 2**16 - 1  # a 16-bit PNG numbers at most 65,535 objects


def own_probability(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(H, W) probability of each pixel's own label: the foreground probability for binary models (C = 1)."""
    if probs.shape[0] == 1:
        return probs[0]
    return np.take_along_axis(probs, labels[None].astype(np.int64), axis=0)[0]


OBJECTS, COUNTS = "objects.csv", "counts.csv"  # written beside the masks

@dataclass(frozen=True)
class ImageObjects:
    """One image's objects: the instance map (H, W) int32, and one row per object (OBJECT_COLUMNS)."""

    instances: np.ndarray
    rows: list[dict[str, object]]
    counts: dict[str, int]  # class name -> objects


def image_objects(name: str, labels: np.ndarray, probs: np.ndarray | None, settings: PostprocessSettings,
                  names: Sequence[str]) -> ImageObjects:
    """Number the objects of one label map (H, W) (watershed-separated where settings say so) and measure each:
    area, centroid, bounding box (max exclusive, as numpy slices) and mean probability of its class."""
    from skimage.measure import regionprops_table  # not at import: infer is on the training path (previews)

    instances, classes = instance_labels(labels, settings, len(names))
    counts = {cls: 0 for cls in names[1:]}
    for c in classes:
        counts[names[c]] += 1
    if not classes:
        return ImageObjects(instances, [], counts)
    intensity = own_probability(labels, probs).astype(np.float64) if probs is not None else None
    props = regionprops_table(instances, intensity_image=intensity,
                              properties=("label", "area", "centroid", "bbox")
                              + (("intensity_mean",) if intensity is not None else ()))
    rows = []
    for i, label in enumerate(props["label"]):
        rows.append({
            "image": name, "object_id": int(label), "class": names[classes[int(label) - 1]],
            "area_px": int(props["area"][i]), "centroid_y": round(float(props["centroid-0"][i]), 2),
            "centroid_x": round(float(props["centroid-1"][i]), 2),
            "bbox_min_row": int(props["bbox-0"][i]), "bbox_min_col": int(props["bbox-1"][i]),
            "bbox_max_row": int(props["bbox-2"][i]), "bbox_max_col": int(props["bbox-3"][i]),
            "mean_probability": round(float(props["intensity_mean"][i]), 4) if intensity is not None else "",
        })
    return ImageObjects(instances, rows, counts)


def instance_png(instances: np.ndarray, name: str) -> np.ndarray:
    """The instance map as uint16; more than 65,535 objects cannot be written as a 16-bit PNG: DataError."""
    if int(instances.max(initial=0)) > MAX_INSTANCES:
        raise DataError(f"{name}: {int(instances.max())} objects; a 16-bit instance PNG holds at most "
                        f"{MAX_INSTANCES} (objects.csv still lists them all)")
    return instances.astype(np.uint16)


@dataclass
class ObjectTable:
    """objects.csv and counts.csv of one inference pass, gathered image by image and written at the end."""

    names: Sequence[str]  # every label's name, background first
    rows: list[dict[str, object]] = field(default_factory=list)
    counts: list[tuple[str, dict[str, int]]] = field(default_factory=list)

    def add(self, name: str, found: ImageObjects) -> None:
        self.rows += found.rows
        self.counts.append((name, found.counts))

    def write(self, folder: Path) -> tuple[Path, Path]:
        """<folder>/objects.csv and <folder>/counts.csv (columns image, then one per foreground class)."""
        objects, counts = folder / OBJECTS, folder / COUNTS
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=OBJECT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(objects, buffer.getvalue())
        buffer = io.StringIO()
        table = csv.writer(buffer, lineterminator="\n")
        table.writerow(["image", *self.names[1:]])
        table.writerows([image, *(c[k] for k in self.names[1:])] for image, c in self.counts)
        atomic_write_text(counts, buffer.getvalue())
        return objects, counts
