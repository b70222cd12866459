"""The verbs that look at and prepare data: prepare (public datasets), split, init, stats, doctor."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flexunet.cli.app import (
    DeviceOpt,
    OverwriteOpt,
    SetOpt,
    _guard,
    _load,
    app,
)
from flexunet.console import note, plural, say
from flexunet.errors import FlexunetError
from flexunet.files import check_outputs

prepare_app = typer.Typer(no_args_is_help=True, help="Import a public dataset into <out>/all/{images,masks} "
                                                     "with a split list and a starter config.")
app.add_typer(prepare_app, name="prepare")
RawArg = Annotated[Path, typer.Argument(help="The dataset as downloaded.", show_default=False)]
OutArg = Annotated[Path, typer.Argument(help="Output folder (all/, split.csv, train_eval_infer.config).",
                                        show_default=False)]
SplitSeedOpt = Annotated[int, typer.Option(help="Seed of the train/valid/test split.")]


def _say_import(result) -> None:
    pairs = result.pairs
    say(f"imported {pairs} {plural(pairs, 'pair')} into {result.out_dir / 'all'}"
        + (f", {result.unlabelled} unlabelled {plural(result.unlabelled, 'image')}" if result.unlabelled else "")
        + (f"; config {result.config}" if result.config else ""))
    for line in result.skipped[:10]:
        note(line)
    if len(result.skipped) > 10:
        note(f"... and {len(result.skipped) - 10} more skipped files")


def _importing(raw_dir: Path, out_dir: Path, overwrite: bool):
    """An import's guard: RAW_DIR is never written, and OUT's config and split list are checked first."""
    from contextlib import ExitStack

    from flexunet.prepare.importers import importing

    stack = ExitStack()
    stack.enter_context(_guard(overwrite))
    stack.enter_context(importing(raw_dir, out_dir))
    return stack


@prepare_app.command("herlev")
def prepare_herlev(raw_dir: RawArg, out_dir: OutArg,
                   canvas: Annotated[int, typer.Option(help="Square canvas side the cell is pasted on.")] = 312,
                   crop: Annotated[int, typer.Option(help="Centre crop side (0: none).")] = 128,
                   size: Annotated[int, typer.Option(help="Resize the crop to this side (0: keep).")] = 0,
                   seamless: Annotated[bool, typer.Option(
                       help="Blend the cell into the canvas (cv2.seamlessClone).")] = False,
                   keep_unlabelled: Annotated[bool, typer.Option(
                       help="Frame images without mask into unlabelled/images.")] = False,
                   seed: SplitSeedOpt = 137, overwrite: OverwriteOpt = False) -> None:
    """Herlev/DTU smear2005: <category>/X.BMP images with X-d.bmp masks (nucleus = pure blue)."""
    from flexunet.prepare.herlev import Canvas, herlev

    with _importing(raw_dir, out_dir, overwrite):
        _say_import(herlev(raw_dir, out_dir, Canvas(canvas, crop or None, size or None, seamless), seed=seed,
                           keep_unlabelled=keep_unlabelled))


@prepare_app.command("sipakmed")
def prepare_sipakmed(raw_dir: RawArg, out_dir: OutArg, seed: SplitSeedOpt = 137,
                     overwrite: OverwriteOpt = False) -> None:
    """SIPaKMeD: <raw>/im_<Class>/<id>.bmp slides with <id>_nuc_<k>.dat nucleus boundaries."""
    from flexunet.prepare.importers import import_sipakmed

    with _importing(raw_dir, out_dir, overwrite):
        _say_import(import_sipakmed(raw_dir, out_dir, seed=seed))


@prepare_app.command("isic")
def prepare_isic(raw_dir: RawArg, out_dir: OutArg,
                 max_side: Annotated[int, typer.Option(help="Shrink larger images to this side.")] = 1024,
                 seed: SplitSeedOpt = 137, overwrite: OverwriteOpt = False) -> None:
    """ISIC 2017 Task 1: ISIC_*.jpg with ISIC_*_segmentation.png."""
    from flexunet.prepare.importers import import_isic

    with _importing(raw_dir, out_dir, overwrite):
        _say_import(import_isic(raw_dir, out_dir, max_side, seed=seed))


@prepare_app.command("ucsb")
def prepare_ucsb(raw_dir: RawArg, out_dir: OutArg, seed: SplitSeedOpt = 137, overwrite: OverwriteOpt = False) -> None:
    """UCSB breast-cancer cells: <name>_ccd.tif images with <name>.TIF masks (benign/malignant from the name)."""
    from flexunet.prepare.importers import import_ucsb

    with _importing(raw_dir, out_dir, overwrite):
        _say_import(import_ucsb(raw_dir, out_dir, seed=seed))


@prepare_app.command("generic")
def prepare_generic(raw_dir: RawArg, out_dir: OutArg,
                    mask_suffix: Annotated[str, typer.Option(help="Mask stem = image stem + this.")] = "",
                    seed: SplitSeedOpt = 137, overwrite: OverwriteOpt = False) -> None:
    """Any RAW_DIR/images + RAW_DIR/masks pair of folders, matched by file stem."""
    from flexunet.prepare.importers import import_generic

    with _importing(raw_dir, out_dir, overwrite):
        _say_import(import_generic(raw_dir / "images", raw_dir / "masks", out_dir, mask_suffix, seed=seed))


@app.command()
def split(images_dir: Annotated[Path, typer.Argument(show_default=False)],
          masks_dir: Annotated[Path, typer.Argument(show_default=False)],
          out: Annotated[Path, typer.Argument(
              help="Folder for split.csv (and split folders with --files).", show_default=False)],
          ratios: Annotated[str, typer.Option(help="train,valid[,test] fractions.")] = "0.8,0.1,0.1",
          group_by: Annotated[Optional[str], typer.Option(
              help="Regex whose first group is the source id (default: strip seed augmentation prefixes).")] = None,
          seed: SplitSeedOpt = 137,
          files: Annotated[str, typer.Option(
              help="none, copy or link files into OUT/<split>/{images,masks}.")] = "none",
          mask_suffix: Annotated[str, typer.Option(help="Mask stem = image stem + this.")] = "",
          overwrite: OverwriteOpt = False) -> None:
    """Split pairs into train/valid/test so that no source (with its augmented copies) crosses two splits."""
    from flexunet.prepare.split import split_dataset

    try:
        fractions = tuple(float(v) for v in ratios.split(","))
    except ValueError:
        raise FlexunetError(f"--ratios {ratios}: expected numbers like 0.8,0.1,0.1") from None
    with _guard(overwrite):
        result = split_dataset(images_dir, masks_dir, out, fractions, group_by, seed, mask_suffix, files)
    say(", ".join(f"{name} {len(p)} {plural(len(p), 'pair')} ({result.groups[name]} "
                  f"{plural(result.groups[name], 'group')})" for name, p in result.pairs.items())
        + f"; list in {result.split_file}")


@app.command()
def init(data: Annotated[Path, typer.Argument(
             help="Folder with images/ + masks/, or <split>/images + <split>/masks.", show_default=False)],
         out: Annotated[Optional[Path], typer.Option(
             help="Config file to write (default: <folder name>.config here).")] = None,
         budget: Annotated[Optional[str], typer.Option(
             help="Training time to plan for, e.g. 20m, 1h30m: times the candidate networks here and sizes the "
                  "run to it ([train] time_budget).")] = None,
         device: DeviceOpt = None,
         seed: Annotated[int, typer.Option(help="Seed of the split.")] = 137,
         overwrite: OverwriteOpt = False) -> None:
    """Write a commented config for a dataset folder: classes, mask decoding, input size, a grouped split, and with
    --budget the network, batch and epochs that fit the time on this machine; one line per decision."""
    from flexunet.init_project import init_project

    with _guard(overwrite, reads=((data, "the dataset init examines"),)):
        init_project(data, out or Path(f"{data.resolve().name}.config"), budget, device, seed)


@app.command()
def stats(dataset: Annotated[Path, typer.Argument(
              help="Folder with <split>/images and <split>/masks.", show_default=False)],
          plot: Annotated[Optional[Path], typer.Option(
              help="Bar-chart PNG (default: <name>_Statistics.png here).")] = None,
          mask_suffix: Annotated[str, typer.Option(help="Mask stem = image stem + this.")] = "",
          overwrite: OverwriteOpt = False) -> None:
    """Pairs per split, class pixel fractions, unpaired files, unmapped colours and files shared by two splits."""
    from flexunet.prepare.stats import dataset_stats, format_stats, plot_stats

    chart = plot or Path(f"{dataset.resolve().name}_Statistics.png")
    with _guard(overwrite, reads=((dataset, "the dataset being examined"),)):
        check_outputs([chart])  # before the dataset is read
        result = dataset_stats(dataset, mask_suffix=mask_suffix)
        for line in format_stats(result):
            say(line)
        for line in result.warnings:
            say(f"warning: {line}")
        say(f"chart: {plot_stats(result, chart)}")


@app.command()
def doctor(target: Annotated[Path, typer.Argument(help="A dataset folder or a config file.", show_default=False)],
           json_out: Annotated[Optional[Path], typer.Option(
               "--json", help="Report file (default: doctor-<name>.json here).")] = None,
           threshold: Annotated[Optional[float], typer.Option(help="Near-duplicate score threshold (0-1).")] = None,
           strict: Annotated[bool, typer.Option(help="Exit non-zero when any image is shared across splits.")] = False,
           set_: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Find pairing, decoding, mask and split problems, including augmented copies of one image in two splits.

    With a config, each split is the files training and evaluation use: folders or patterns, kept to split_file.
    """
    from flexunet.prepare.doctor import doctor as run_doctor
    from flexunet.prepare.doctor import format_report
    from flexunet.prepare.fingerprint import DEFAULT_THRESHOLD

    out = json_out or Path(f"doctor-{target.resolve().stem}.json")
    cfg = _load(target, set_, quiet=True) if target.is_file() else None
    with _guard(overwrite, cfg, reads=((target, "the doctor's TARGET"),)):
        check_outputs([out])  # before the (possibly long) examination
        report = run_doctor(target, threshold if threshold is not None else DEFAULT_THRESHOLD, overrides=set_ or ())
        for line in format_report(report):
            say(line)
        say(f"report: {report.write_json(out)}")
    if strict and report.leaks:
        raise SystemExit(1)  # not typer.Exit: with standalone_mode=False click returns its code instead of exiting
