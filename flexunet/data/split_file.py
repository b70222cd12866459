"""The split list: a CSV of `stem,group,split` rows saying which split each image belongs to.

A config's `split_file` key points at it, so one folder of files can serve train, valid and test without copies.
This module imports nothing from `flexunet.data`, which reads it while pairing files.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

from flexunet.errors import DataError
from flexunet.files import atomic_write_text

HEADER = ("stem", "group", "split")


def write_split_file(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """Write (stem, group, split) rows, sorted by stem so that two runs with one seed give identical files."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    writer.writerows(sorted(rows))
    atomic_write_text(path, buffer.getvalue())
    return path


def read_split_file(path: str | Path) -> Mapping[str, str]:
    """Image stem -> split name, from a file written by `write_split_file` (or by hand with the same header)."""
    return {row["stem"]: row["split"] for row in _read_rows(path)}


def read_split_groups(path: str | Path) -> Mapping[str, str]:
    """Image stem -> source group, from the same file; empty when it has no 'group' column."""
    return {row["stem"]: row["group"] for row in _read_rows(path) if row.get("group")}


def _read_rows(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"stem", "split"} <= set(reader.fieldnames):
                raise DataError(f"{path}: not a split list (expected a CSV header with 'stem' and 'split')")
            return list(reader)
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read split file ({exc})") from None


def split_stems(path: str | Path, split: str) -> frozenset[str]:
    """The stems a split list assigns to `split`: what training, evaluation and `doctor` keep of a section's folders."""
    return frozenset(stem for stem, name in read_split_file(path).items() if name == split)
