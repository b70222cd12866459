"""What the dataset doctor says about the evaluated split: a test score means little if its images are in train."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flexunet.config.schema import Config
from flexunet.errors import DataError, FlexunetError

# Running the doctor decodes every image of every split: done automatically only below this many pairs.
AUTO_DOCTOR_MAX_IMAGES = 5000


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
    leaked = {d["image"] for d in copies}
    lines = []
    if section in splits:
        total = splits[section].get("pairs", 0)
        earlier = sorted({d["match_split"] for d in copies})
        lines.append(f"{len(leaked)} of {total} {section} images are near-copies (flips, rotations, crops, re-encodes) "
                     f"of images in {' and '.join(earlier) if earlier else 'another split'}")
    else:
        lines.append(f"the doctor report has no '{section}' split; its splits: {', '.join(splits) or 'none'}")
    lines += [p for p in report.get("problems", []) if "near-copies" in p and not p.startswith(f"{section}:")]
    exact = report.get("exact_duplicates", [])
    if exact:
        lines.append(f"{len(exact)} files are byte-identical across splits")
    status = "leak" if leaked or exact else "clean"
    return LeakSummary(status, tuple(lines), source)


def leak_summary(cfg: Config, section: str, eval_dir: Path, doctor_file: Path | None = None,
                 run_doctor: bool = True) -> LeakSummary:
    """From `doctor_file`, else the newest doctor*.json in eval_dir, else by running the doctor on the config's
    splits when that is cheap (it is then saved as eval_dir/doctor.json); "not checked" otherwise."""
    if doctor_file is not None:
        try:
            return summarise_doctor(json.loads(Path(doctor_file).read_text()), section, str(doctor_file))
        except (OSError, ValueError) as exc:
            raise DataError(f"{doctor_file}: not a readable doctor JSON report ({exc.__class__.__name__})") from None
    found = sorted(Path(eval_dir).glob("doctor*.json"), key=lambda p: p.stat().st_mtime)
    if found:
        try:
            return summarise_doctor(json.loads(found[-1].read_text()), section, str(found[-1]))
        except ValueError:
            pass  # a torn or foreign file: fall through to running the doctor
    hint = f"run `flexunet doctor {cfg.source or 'CONFIG'} --json {Path(eval_dir) / 'doctor.json'}`"
    source = Path(cfg.source) if cfg.source else None
    if not run_doctor or source is None or not source.is_file():
        return LeakSummary("not checked", (f"not checked: {hint}",), "")
    if any(origin == "command line" and key.split(".")[0] in ("train", "valid", "test", "mask")
           for key, origin in cfg.origins.items()):
        return LeakSummary("not checked", (f"not checked (data keys changed with --set): {hint}",), "")
    from flexunet.data.dataset import pairs_for
    from flexunet.prepare.doctor import doctor

    splits = [s for s in ("train", "valid", "test") if getattr(cfg, s).images_dir and getattr(cfg, s).masks_dir]
    size = sum(len(pairs_for(cfg, s, warn=False)) for s in splits)
    if size > AUTO_DOCTOR_MAX_IMAGES:
        return LeakSummary("not checked", (f"not checked ({size} images is too many to check here): {hint}",), "")
    try:
        report = doctor(source)  # the config file's own splits: the same as evaluated, --set having changed none
    except FlexunetError as exc:
        return LeakSummary("not checked", (f"not checked: the doctor failed ({str(exc).splitlines()[0]})",), "")
    path = report.write_json(Path(eval_dir) / "doctor.json")
    return summarise_doctor(report.to_dict(), section, f"{path} (run now on {source.name})")
