"""What the dataset doctor says about the evaluated split: a test score means little if its images are in train."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from flexunet.config.schema import Config
from flexunet.data.dataset import pairs_for
from flexunet.errors import DataError, FlexunetError
from flexunet.prepare.doctor import doctor_config, images_digest
from flexunet.prepare.fingerprint import CHECKED_COPIES, UNCHECKED_COPIES

# Running the doctor decodes every image of every split: done automatically only below this many pairs.
AUTO_DOCTOR_MAX_IMAGES = 5000
# Sections whose keys change which files the doctor examines (and how masks are read).
DATA_SECTIONS = ("train", "valid", "test", "mask")


@dataclass(frozen=True)
class LeakSummary:
    """`status` is "leak", "clean" or "not checked"; `lines` say what was found and `source` where it came from."""

    status: str
    lines: tuple[str, ...]
    source: str


def summarise_doctor(report: dict, section: str, source: str) -> LeakSummary:
    """Leak lines for the evaluated split from a doctor report (its JSON form, `DoctorReport.to_dict()`)."""
    splits = report.get("splits", {})
    copies = [d for d in report.get("near_duplicates", []) if d.get("split") == section]
    named = [d for d in report.get("name_copies", []) if d.get("split") == section]
    leaked = {d["image"] for d in copies} | {d["image"] for d in named}
    lines = []
    if section in splits:
        total = splits[section].get("pairs", 0)
        earlier = sorted({d["match_split"] for d in copies})
        lines.append(f"{len(leaked)} of {total} {section} images are near-copies (flips, rotations, crops, re-encodes) "
                     f"of images in {' and '.join(earlier) if earlier else 'another split'}")
    else:
        lines.append(f"the doctor report has no '{section}' split; its splits: {', '.join(splits) or 'none'}")
    if named:
        lines.append(f"{len({d['image'] for d in named})} {section} images are named as augmented copies (seed "
                     f"prefixes such as deformed_, barrdistorted_) of sources in "
                     f"{' and '.join(sorted({d['match_split'] for d in named}))}")
    shared = [d for d in report.get("shared_files", []) if d.get("split") == section]
    if shared:
        sources = " and ".join(sorted({d["match_split"] for d in shared}))
        lines.append(f"{len({d['image'] for d in shared})} {section} images are the same files as images in {sources}")
    lines += [p for p in report.get("problems", []) if "near-copies" in p and not p.startswith(f"{section}:")]
    exact = report.get("exact_duplicates", [])
    if exact:
        lines.append(f"{len(exact)} files are byte-identical across splits")
    status = "leak" if leaked or shared or exact else "clean"
    if status == "clean":  # "clean" only for what the doctor can find (doctor_calibration.json copies_by_kind)
        lines.append(f"checked: {CHECKED_COPIES}, seed-prefixed names; not checked: {UNCHECKED_COPIES}")
    return LeakSummary(status, tuple(lines), source)


def doctor_command(cfg: Config, eval_dir: Path) -> str:
    """The `flexunet doctor` command that examines the folders evaluated: the config with its data `--set` options."""
    sets = []
    for key in cfg.resolved.command_line_keys:
        section, _, name = key.partition(".")
        if section in DATA_SECTIONS or key == "model.num_classes":
            value = getattr(getattr(cfg, section), name)
            text = value if isinstance(value, str) else repr(value)
            sets.append(f"--set {shlex.quote(f'{key}={text}')}")
    config = shlex.quote(cfg.source) if cfg.source else "CONFIG"
    return " ".join(["flexunet doctor", config, *sets, "--json", shlex.quote(str(Path(eval_dir) / "doctor.json"))])


def describes(report: dict, section: str, images: list[Path]) -> bool:
    """Whether a doctor report's `section` holds exactly the image files evaluated (by name)."""
    return report.get("splits", {}).get(section, {}).get("images_digest") == images_digest(images)


def leak_summary(cfg: Config, section: str, eval_dir: Path, doctor_file: Path | None = None,
                 run_doctor: bool = True, evaluated: list[Path] | None = None) -> LeakSummary:
    """From `doctor_file`, else the newest doctor*.json in eval_dir, else by running the doctor on the config's
    splits when that is cheap (it is then saved as eval_dir/doctor.json); "not checked" otherwise.

    A saved report counts only when its `section` holds the files evaluated: one made before a `--set` changed the
    folders, or before split_file was honoured, describes other files. `evaluated`: the section's image files when
    the caller already listed them.
    """
    if evaluated is None:
        evaluated = [p.image for p in pairs_for(cfg, section, warn=False)]
    hint = f"run `{doctor_command(cfg, eval_dir)}`"
    if doctor_file is not None:
        try:
            report = json.loads(Path(doctor_file).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{doctor_file}: not a readable doctor JSON report ({exc.__class__.__name__})") from None
        if not describes(report, section, evaluated):
            return LeakSummary("not checked", (f"not checked: {doctor_file} does not describe the {len(evaluated)} "
                                               f"{section} images evaluated; {hint}",), "")
        return summarise_doctor(report, section, str(doctor_file))
    for found in sorted(Path(eval_dir).glob("doctor*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            report = json.loads(found.read_text())
        except ValueError:
            continue  # a torn or foreign file
        if describes(report, section, evaluated):
            return summarise_doctor(report, section, str(found))
    if not run_doctor:
        return LeakSummary("not checked", (f"not checked: {hint}",), "")
    splits = [s for s in ("train", "valid", "test") if getattr(cfg, s).images_dir and getattr(cfg, s).masks_dir]
    size = sum(len(pairs_for(cfg, s, warn=False)) for s in splits)
    if size > AUTO_DOCTOR_MAX_IMAGES:
        return LeakSummary("not checked", (f"not checked ({size} images is too many to check here): {hint}",), "")
    try:
        report = doctor_config(cfg)  # the evaluated Config, --set included: the same files as evaluated
    except FlexunetError as exc:
        return LeakSummary("not checked", (f"not checked: the doctor failed ({str(exc).splitlines()[0]})",), "")
    path = report.write_json(Path(eval_dir) / "doctor.json")
    return summarise_doctor(report.to_dict(), section, f"{path} (run now on the evaluated folders)")
