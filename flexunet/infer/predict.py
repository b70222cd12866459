"""Segment image files with a Predictor: masks at the original size and overlays, written as PNG."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from flexunet.config.schema import Config
from flexunet.config.section import DEFAULT_MAX_PIXELS
from flexunet.console import plural, say
from flexunet.data.io import read_image, read_mask, write_image
from flexunet.data.pairing import list_image_files
from flexunet.errors import DataError, OutputError
from flexunet.files import append_line, make_folder, manifest_tags, remove_temp_files
from flexunet.infer.objects import COUNTS, OBJECTS, ImageObjects, ObjectTable, image_objects, instance_png
from flexunet.labels import LabelSpace, overlay
from flexunet.postprocess import PostprocessSettings, separation_notes
from flexunet.predict import Predictor
from flexunet.runs.distributed import DistContext, gather_objects, shard


@dataclass
class InferResult:
    """What one inference pass wrote and what it skipped."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per unreadable file
    resumed: list[Path] = field(default_factory=list)  # masks kept from an earlier pass (resume)
    objects: Path | None = None  # objects.csv: one row per object of the masks written in this pass
    counts: Path | None = None  # counts.csv: objects per image and class
    total_objects: int = 0
    notes: list[str] = field(default_factory=list)  # e.g. an instance map that a 16-bit PNG cannot hold
    nonfinite: list[Path] = field(default_factory=list)  # inputs whose logits held NaN or inf: masks not to trust


def nonfinite_warning(paths: Sequence[Path]) -> str:
    """The warning line for inputs whose model output held NaN or inf (their masks are still written)."""
    shown = ", ".join(p.name for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    count = f"{len(paths)} {plural(len(paths), 'input')}"
    return (f"warning: the model gave non-finite logits (NaN or inf) for {count}: {shown}; "
            "their masks are not to be trusted (check the weights or the ONNX file)")


def output_names(files: Sequence[Path], name_prefix: str = "") -> list[str]:
    """`<prefix><stem>.png` per input file; two inputs with one name (a/x.png and b/x.png, x.png and x.jpg) raise
    DataError before anything is written, so no mask ever overwrites another."""
    seen: dict[str, Path] = {}
    for path in files:
        name = f"{name_prefix}{path.stem}.png"
        if name in seen:
            raise DataError(f"{seen[name]} and {path}: both would be written as {name}; run infer once per folder, "
                            "each with its own --output, or rename one of them")
        seen[name] = path
    return list(seen)


def _readable(path: Path) -> bool:
    try:
        read_mask(path)
    except DataError:
        return False
    return True


def is_done(targets: Sequence[Path], tag: str) -> bool:
    """Resume: the mask (and overlay, instance map) is kept when the manifest says it was made with the settings
    `tag` names (weights, threshold, TTA, postprocessing, ...) and it reads back as an image; a missing one, one made
    with other settings or a truncated one is made again."""
    return all(t.is_file() and manifest_tags(t.parent).get(t.name) == tag and _readable(t) for t in targets)


def made_otherwise(targets: Sequence[Path], tag: str) -> bool:
    """Whether flexunet made one of `targets` earlier with other settings (resume redoes it, and says how many)."""
    return any(t.is_file() and manifest_tags(t.parent).get(t.name, tag) != tag for t in targets)


_FOLDER_KEYS = ("images_dir", "output_dir", "merged_dir")  # where a pass reads and writes, not how it predicts


def settings_tag(cfg: Config, weights: Path, **choices: object) -> str:
    """A short hash of everything that shapes a pass's masks: the weights file's bytes, the sections that say how
    images are read, predicted, thresholded, postprocessed and drawn, and the command's `choices` (tta, tiled,
    the postprocessing in force, ...). Resume keeps a mask only when its tag is this one."""
    digest = hashlib.sha256()
    try:
        with Path(weights).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        digest.update(str(weights).encode())
    shaping = {name: getattr(cfg, name).model_dump(mode="json", exclude=set(_FOLDER_KEYS))
               for name in ("model", "image", "mask", "segmentation", "infer", "tiledinfer", "postprocess")}
    digest.update(json.dumps({"config": shaping, "choices": choices}, sort_keys=True, default=repr).encode())
    return digest.hexdigest()[:16]


JOURNAL = ".flexunet-objects.{rank}.jsonl"  # beside the masks: each written mask's objects, for a resumed pass


def read_journal(output_dir: Path, tag: str) -> dict[str, dict]:
    """mask name -> {"rows", "counts"} of masks made with `tag`, from every process's journal (last entry wins)."""
    entries: dict[str, dict] = {}
    for path in sorted(Path(output_dir).glob(JOURNAL.format(rank="*"))):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut short by a kill: that mask is made again
                continue
            if entry.get("tag") == tag:
                entries[entry["image"]] = entry
    return entries


def append_journal(output_dir: Path, rank: int, name: str, tag: str, found: ImageObjects) -> None:
    """Add one mask's objects to this process's journal (appended; a kill loses at most the line being written)."""
    append_line(Path(output_dir) / JOURNAL.format(rank=rank),
                json.dumps({"image": name, "tag": tag, "rows": found.rows, "counts": found.counts}))


def planned_outputs(files: Sequence[Path], output_dir: Path, merged_dir: Path | None, instances_dir: Path | None,
                    name_prefix: str = "") -> list[Path]:
    """Every file a pass over `files` may write, for the output guard to check before anything is written."""
    names = output_names(files, name_prefix)
    folders = [f for f in (output_dir, merged_dir, instances_dir) if f is not None]
    return [folder / name for folder in folders for name in names] + [output_dir / OBJECTS, output_dir / COUNTS]


@dataclass(frozen=True)
class FileSettings:
    """How infer reads images and draws what it writes: [model] image_channels, [image] color_order and pixel
    limit, [segmentation] blursize and [infer] overlay_alpha; built once from the config by the entry point."""

    channels: int = 3
    color_order: str = "RGB"
    pixel_limit: int = DEFAULT_MAX_PIXELS
    blursize: tuple[int, int] | None = None  # the overlay's image is blurred first (the seed's option)
    overlay_alpha: float = 0.4

    @classmethod
    def from_config(cls, cfg: Config, tiled: bool = False) -> FileSettings:
        blur = cfg.segmentation.blursize
        return cls(cfg.model.image_channels, cfg.image.color_order, cfg.image.pixel_limit(tiled),
                   (int(blur[0]), int(blur[1])) if blur else None, cfg.infer.overlay_alpha)


def write_prediction(path: Path, image: np.ndarray, labels: np.ndarray, space: LabelSpace, files: FileSettings,
                     output_dir: Path, merged_dir: Path | None, name_prefix: str = "", tag: str = "") -> Path:
    """`<output_dir>/<stem>.png` mask and, with a merged_dir, the overlay of the same name; returns the mask path.
    `tag` names the settings that made them (the manifest keeps it, for resume)."""
    target = output_dir / f"{name_prefix}{path.stem}.png"
    write_image(target, space.mask_pixels(labels), tag)
    if merged_dir is not None:
        shown = image if files.color_order == "RGB" else image[:, :, ::-1]
        if files.blursize:
            shown = cv2.blur(shown, files.blursize)
        merged = overlay(shown, labels, space.overlay_colours(), files.overlay_alpha)
        write_image(merged_dir / f"{name_prefix}{path.stem}.png", merged, tag)
    return target


def predict_folder(predictor: Predictor, files_settings: FileSettings, images_dir: str, output_dir: Path,
                   merged_dir: Path | None, name_prefix: str = "", limit: int | None = None,
                   on_image: Callable[[], None] | None = None, resume: bool = False,
                   settings: PostprocessSettings | None = None, instances_dir: Path | None = None,
                   dist_ctx: DistContext = DistContext(), tag: str = "") -> InferResult:
    """Segment every image of `images_dir` (sorted) with `predictor`: `<stem>.png` masks at the original size,
    optional overlays, read and drawn as `files_settings` say.

    Streams: only `predictor.images_per_pass` images (a batch; one image when tiled) are in memory at a time.
    Unreadable files are skipped and reported, not fatal: one bad file must not lose a long batch. Every file is
    written with `tag` (the settings that shape it) in its folder's manifest; with `resume`, masks and overlays
    already made with the same tag are kept, with their objects from the journal, so a stopped or finished pass can
    go on; those made with other settings are made again (and a note says how many). Each file is written
    atomically; a full disk stops the pass with OutputError. Under torchrun (`dist_ctx`) this process takes every
    world_size-th file of the sorted list from its rank, so each mask is written by exactly one process; names are
    checked for clashes over the whole list first.

    The objects of every mask of the pass, kept or written (numbered as `settings` say: connected components, or
    watershed where `separate` asks for it), go to `<output_dir>/objects.csv` and `counts.csv` (under torchrun,
    gathered from every process and written by rank 0, in file order); with `instances_dir`, their 16-bit instance
    maps to `<instances_dir>/<stem>.png`. The masks themselves are the predictor's (its postprocess).
    """
    table = ObjectTable(predictor.space.names)
    settings = settings or {}
    files = list_image_files(images_dir, "[infer] images_dir")[:limit]
    names = output_names(files, name_prefix)
    position = {name: i for i, name in enumerate(names)}  # objects.csv follows the sorted files, however sharded
    files, names = shard(files, dist_ctx), shard(names, dist_ctx)
    for folder in (output_dir, merged_dir, instances_dir):
        if folder is not None:
            make_folder(folder)
    journal = read_journal(output_dir, tag) if resume else {}
    result, redone = InferResult(), 0
    batch_size = predictor.images_per_pass
    for start in range(0, len(files), batch_size):
        chunk, images = [], []
        for path, name in zip(files[start : start + batch_size], names[start : start + batch_size], strict=True):
            targets = [output_dir / name] + [folder / name for folder in (merged_dir, instances_dir) if folder]
            if resume and name in journal and is_done(targets, tag):
                result.resumed.append(output_dir / name)
                kept = journal[name]
                table.add(name, ImageObjects(np.zeros((0, 0), np.int32), kept["rows"], kept["counts"]))
                if on_image is not None:
                    on_image()
                continue
            if resume:
                redone += made_otherwise(targets, tag)
                for target in targets:  # this process alone writes these names: a killed pass's leftovers go
                    remove_temp_files(target)
            try:
                images.append(read_image(path, files_settings.channels, files_settings.color_order,
                                         files_settings.pixel_limit))
                chunk.append(path)
            except DataError as exc:
                result.skipped.append(str(exc))
                if on_image is not None:
                    on_image()
        predictions = predictor.predict(images) if images else []
        for path, image, prediction in zip(chunk, images, predictions, strict=True):
            lab, name = prediction.labels, f"{name_prefix}{path.stem}.png"
            if not np.isfinite(prediction.probs).all():  # NaN logits threshold to background: never silently
                result.nonfinite.append(path)
            try:
                result.written.append(write_prediction(path, image, lab, predictor.space, files_settings,
                                                       output_dir, merged_dir, name_prefix, tag))
                found = _add_objects(table, name, path, lab, prediction.probs, settings, instances_dir, result, tag)
                append_journal(output_dir, dist_ctx.rank, name, tag, found)
            except OutputError as exc:
                finished = len(result.written) + len(result.resumed)
                raise OutputError(f"{exc} with --resume ({finished} of {len(files)} images are finished)") from None
            if on_image is not None:
                on_image()
    if redone:
        result.notes.append(f"--resume: {redone} {plural(redone, 'mask')} made earlier with other settings (weights, "
                            "threshold, TTA or postprocessing) made again")
    _write_objects(table, position, dist_ctx, output_dir, result)
    if result.nonfinite:
        say(nonfinite_warning(result.nonfinite))
    if files and len(result.resumed) < len(files):  # classes with no object anywhere in what was segmented
        totals = {name: sum(c[name] for _, c in table.counts) for name in table.names[1:]}
        result.notes += separation_notes(settings, table.names, totals)
    return result


def _add_objects(table: ObjectTable, name: str, path: Path, labels: np.ndarray, probs: np.ndarray,
                 settings: PostprocessSettings, instances_dir: Path | None, result: InferResult,
                 tag: str = "") -> ImageObjects:
    """One written mask's objects into `table`, and its 16-bit instance map into `instances_dir` when asked."""
    found = image_objects(name, labels, probs, settings, table.names)
    table.add(name, found)
    if instances_dir is not None:
        try:
            instance_map = instance_png(found.instances, str(path))
        except DataError as exc:  # > 65,535 objects: the mask and objects.csv rows are still written
            result.notes.append(str(exc))
        else:
            write_image(instances_dir / name, instance_map, tag)
    return found


def _write_objects(table: ObjectTable, position: dict[str, int], dist_ctx: DistContext, output_dir: Path,
                   result: InferResult) -> None:
    """objects.csv and counts.csv of the pass, in the sorted files' order; under torchrun every process's rows,
    written once by rank 0."""
    parts = gather_objects((table.rows, table.counts), dist_ctx)  # [this process's] in one process
    # file order: kept masks' rows join as their batch is read, written ones after it is predicted
    table.rows = sorted((r for rows, _ in parts for r in rows), key=lambda r: position[str(r["image"])])
    table.counts = sorted((c for _, counts in parts for c in counts), key=lambda c: position[c[0]])
    if dist_ctx.is_main:
        result.objects, result.counts = table.write(output_dir)
    result.total_objects = len(table.rows)
