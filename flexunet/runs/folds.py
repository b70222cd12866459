"""K-fold cross-validation by source group: nnU-Net's protocol over [train] + [valid].

Every pair of [train] and [valid] gets a fold; the copies of one source (the split file's `group` column, else
`flexunet split`'s name prefixes merged with the doctor's near-copy clusters) share it, so no source is validated by
a model that trained on it. [test] is never touched. Fold k trains on the other folds and validates on fold k, as a
normal run in `model_dir/fold_<k>/` (eval_dir and preview folders likewise), so each fold resumes on its own and
folds can run on different machines (`--fold k`): `model_dir/folds.csv` records the assignment, and a run that finds
it uses it (the assignment is seeded, so two machines compute the same one anyway).
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from flexunet.config.schema import Config
from flexunet.data.dataset import pairs_for
from flexunet.data.pairing import Pair
from flexunet.data.split_file import read_split_groups
from flexunet.errors import ConfigError, DataError
from flexunet.files import atomic_write_text
from flexunet.prepare.split import assign_groups, merge_near_copies, source_id

FOLD_FILE = "folds.csv"


@dataclass(frozen=True)
class Folds:
    """The pairs of [train] + [valid], each one's name in folds.csv, source group and fold."""

    pairs: tuple[Pair, ...]
    keys: dict[Path, str]  # image -> the pair's name in folds.csv (see `pair_keys`)
    group: dict[str, str]  # pair name -> source group
    fold: dict[str, int]  # pair name -> fold
    count: int
    source: str  # where the groups came from

    def key(self, pair: Pair) -> str:
        return self.keys[pair.image]

    def split(self, k: int) -> tuple[list[Pair], list[Pair]]:
        """(training pairs, validation pairs) of fold k."""
        held = [self.fold[self.key(p)] == k for p in self.pairs]
        return ([p for p, out in zip(self.pairs, held, strict=True) if not out],
                [p for p, out in zip(self.pairs, held, strict=True) if out])


def pair_keys(pairs: list[Pair], names: list[str] | None = None) -> dict[Path, str]:
    """image -> the pair's name in folds.csv (or `names[i]` in its place): its stem, or `<folder>/<stem>` when a stem
    repeats (the demo's train/cell_0000 and valid/cell_0000 are two cells); the same on every machine, unlike a
    full path."""
    qualified = len({p.stem for p in pairs}) < len(pairs)
    names = names or [p.stem for p in pairs]
    return {p.image: f"{p.image.parent.parent.name}/{name}" if qualified else name
            for p, name in zip(pairs, names, strict=True)}


def pooled_pairs(cfg: Config) -> list[Pair]:
    """[train] and [valid] pairs (one list; a pair both sections list counts once)."""
    pairs = pairs_for(cfg, "train")
    if cfg.valid.images_dir or cfg.valid.masks_dir:
        seen = {p.image for p in pairs}
        pairs += [p for p in pairs_for(cfg, "valid") if p.image not in seen]
    return sorted(pairs, key=lambda p: p.image)


def source_groups_of(cfg: Config, pairs: list[Pair], keys: dict[Path, str]) -> tuple[dict[str, str], str]:
    """pair name -> group: the split files' group column when they have one for every pair, else name prefixes
    (within their folder when names repeat across folders) merged with near-copy clusters."""
    listed: dict[str, str] = {}
    for section in (cfg.train, cfg.valid):
        if section.split_file:
            listed |= dict(read_split_groups(section.split_file))
    if listed and all(p.stem in listed for p in pairs):
        return {keys[p.image]: listed[p.stem] for p in pairs}, "the split file's group column"
    sources = pair_keys(pairs, [source_id(p.stem) for p in pairs])
    by_image = merge_near_copies({str(p.image): sources[p.image] for p in pairs})
    return ({keys[p.image]: by_image[str(p.image)] for p in pairs},
            "file-name prefixes and near-copies (the doctor's fingerprints)")


def plan_folds(cfg: Config, count: int) -> Folds:
    """Assign [train] + [valid] to `count` folds by source group (seeded by [train] seed); ConfigError when there
    are fewer groups than folds."""
    pairs = pooled_pairs(cfg)
    keys = pair_keys(pairs)
    group, source = source_groups_of(cfg, pairs, keys)
    sizes = Counter(group.values())
    if count > len(sizes):
        raise ConfigError(f"{cfg.train.where('folds')} = {count}: [train] + [valid] hold only {len(sizes)} source "
                          f"groups ({source}); use at most {len(sizes)} folds")
    where = assign_groups(dict(sizes), tuple([1 / count] * count), cfg.train.seed)
    return Folds(tuple(pairs), keys, group, {key: where[g] for key, g in group.items()}, count, source)


def fold_file_text(folds: Folds) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["pair", "group", "fold"])
    writer.writerows(sorted((key, folds.group[key], folds.fold[key]) for key in map(folds.key, folds.pairs)))
    return buffer.getvalue()


def read_assignment(path: Path) -> dict[str, tuple[str, int]]:
    """pair name -> (group, fold) as folds.csv records them."""
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
        return {r["pair"]: (r["group"], int(r["fold"])) for r in rows}
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise DataError(f"{path}: not a fold file ({exc})") from None


def recorded_count(path: Path) -> int:
    """How many folds folds.csv assigns."""
    return len({fold for _, fold in read_assignment(path).values()})


def read_fold_file(path: Path, folds: Folds) -> Folds:
    """The assignment recorded at `path` (an earlier run, another machine), checked to cover the same pairs."""
    recorded = read_assignment(path)
    names = set(folds.keys.values())
    count = len({f for _, f in recorded.values()})
    if set(recorded) != names or count != folds.count:
        raise DataError(f"{path}: records {len(recorded)} pairs in {count} folds, [train] + [valid] hold "
                        f"{len(names)} in {folds.count}: the data or folds changed; move the old model_dir aside to "
                        "start again")
    return Folds(folds.pairs, folds.keys, {s: g for s, (g, _) in recorded.items()},
                 {s: f for s, (_, f) in recorded.items()}, folds.count, f"{path.name}")


def folds_for_run(cfg: Config, count: int, model_dir: Path, write: bool = True) -> Folds:
    """The folds of this run: model_dir/folds.csv when an earlier run (or machine) wrote it, else planned and
    written there (`write`: by torchrun's rank 0 only)."""
    planned = plan_folds(cfg, count)
    path = model_dir / FOLD_FILE
    if path.is_file():
        return read_fold_file(path, planned)
    if write:
        atomic_write_text(path, fold_file_text(planned))
    return planned


def fold_config(cfg: Config, k: int) -> Config:
    """`cfg` with every run folder one level down, in fold_<k>/."""
    t, name = cfg.train, f"fold_{k}"
    train = t.model_copy(update={key: str(Path(getattr(t, key)) / name) for key in (
        "model_dir", "eval_dir", "epoch_change_infer_dir", "epoch_change_tiled_infer_dir")} | {"folds": None})
    update: dict[str, object] = {"train": train}
    if cfg.eval.eval_dir:
        update["eval"] = cfg.eval.model_copy(update={"eval_dir": str(Path(cfg.eval.eval_dir) / name)})
    return cfg.model_copy(update=update)
