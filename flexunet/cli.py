"""`flexunet VERB CONFIG`: each verb reads arguments, loads the config, calls one library function, prints a summary."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from flexunet.console import error, error_console, note, plural, say
from flexunet.errors import FlexunetError
from flexunet.files import check_outputs, output_error

if TYPE_CHECKING:
    from flexunet.config.schema import Config
    from flexunet.train import FitResult

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Train, evaluate and run UNet-family segmentation models from one seed-format INI config.",
)

def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            say(f"flexunet {version('flexunet')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            say("flexunet (not installed: version unknown)")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")] = False) -> None:
    """Train, evaluate and run UNet-family segmentation models from one seed-format INI config."""


ConfigArg = Annotated[Path, typer.Argument(help="The train_eval_infer.config (INI) file.", show_default=False)]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config value: section.key=value (repeatable), "
                                     "e.g. train.images_dir=./data/train/images"),
]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 or auto (default: auto).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed ([train] seed).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or per-epoch lines.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option(help="Checkpoint to use (default: model_dir/best.pt).")]
EnsembleOpt = Annotated[Optional[list[str]], typer.Option(
    help="Average the probabilities of these checkpoints (repeat it, or quote a glob: 'models/fold_*/best.pt'); "
         "they must share the config's classes.")]


def _ensemble(values: Optional[list[str]]) -> Optional[list[Path]]:
    from flexunet.runs.ensemble import ensemble_paths

    return ensemble_paths(values) if values else None
TtaOpt = Annotated[Optional[bool], typer.Option("--tta/--no-tta", help="Average predictions over flips.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace existing files that flexunet did not write (never the config, a checkpoint the "
                        "command reads, or an input).")]


def _guard(overwrite: bool, cfg=None, reads: tuple[tuple[Optional[Path], str], ...] = ()):
    """Every write of the command goes through flexunet.files: it refuses the config, its inputs and `reads`, and
    (without --overwrite) existing files flexunet did not write."""
    from flexunet.config.folders import protected_inputs
    from flexunet.files import Protected, guarded

    if cfg is not None:
        return guarded(protected_inputs(cfg, reads), overwrite)
    return guarded([Protected(Path(path), why) for path, why in reads if path is not None], overwrite)


def _load(config: Path, overrides: Optional[list[str]], seed: Optional[int] = None, quiet: bool = False):
    from flexunet.config import load_config

    extra = list(overrides or []) + ([f"train.seed={seed}"] if seed is not None else [])
    cfg = load_config(config, extra)
    if not quiet:
        for text in cfg.notes:
            note(text)
    return cfg


@app.command()
def train(config: ConfigArg, set_: SetOpt = None, device: DeviceOpt = None, seed: SeedOpt = None,
          resume: Annotated[bool, typer.Option(help="Continue the run in model_dir from last.pt.")] = False,
          budget: Annotated[Optional[str], typer.Option(
              help="Finish within this time, e.g. 20m or 1h30m ([train] time_budget): the learning rate anneals "
                   "to the deadline and the best-validation weights are kept.")] = None,
          folds: Annotated[Optional[int], typer.Option(
              min=2, help="K-fold cross-validation by source group over [train] + [valid] ([train] folds): one run "
                          "per fold in model_dir/fold_<k>/.")] = None,
          fold: Annotated[Optional[int], typer.Option(
              min=0, help="Train only this fold (0-based), e.g. one fold per machine.")] = None,
          quiet: QuietOpt = False) -> None:
    """Train the model described by CONFIG; checkpoints go to [train] model_dir, logs to eval_dir."""
    from flexunet.train import train_folds, train_from_config

    cfg = _load(config, list(set_ or []) + ([f"train.time_budget={budget}"] if budget else []), seed, quiet)
    if folds or cfg.train.folds or fold is not None:
        results = train_folds(cfg, device=device, resume=resume, quiet=quiet, folds=folds, fold=fold)
    else:
        results = [train_from_config(cfg, device=device, resume=resume, quiet=quiet)]
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    for result in results:
        _say_trained(cfg, result)


def _say_trained(cfg: Config, result: FitResult) -> None:
    from flexunet.console import format_duration
    from flexunet.train.history import class_dice_text

    best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
    say(f"trained {result.epochs_run} {plural(result.epochs_run, 'epoch')}; best epoch {result.best_epoch} "
        f"({cfg.train.monitor} {abs(result.best_value):.4f}; val Dice "
        f"{class_dice_text(best, cfg.label_names) or 'n/a'}); checkpoints in {result.run.model_dir}")
    if result.budget_s:
        say(f"took {format_duration(result.seconds)} of the {format_duration(result.budget_s)} budget "
            f"({result.seconds / result.budget_s:.0%})")


@app.command()
def evaluate(config: ConfigArg, set_: SetOpt = None, device: DeviceOpt = None, checkpoint: CheckpointOpt = None,
             tta: TtaOpt = None,
             doctor: Annotated[Optional[Path], typer.Option(
                 help="Doctor JSON for the leakage check "
                      "(default: eval_dir/doctor*.json, or run on small datasets).")] = None,
             examples: Annotated[int, typer.Option(
                 min=0, help="How many worst and best images report.html shows.")] = 4,
             report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.html.")] = True,
             onnx: Annotated[Optional[Path], typer.Option(
                 help="Evaluate this ONNX file (e.g. an int8 export) with onnxruntime instead of the checkpoint.")
             ] = None,
             ensemble: EnsembleOpt = None,
             folds: Annotated[bool, typer.Option(
                 "--folds", help="Out of fold: score every [train] + [valid] image with the fold model (train "
                                 "--folds) that did not train on it; the report goes to eval_dir/out_of_fold.")
             ] = False,
             overwrite: OverwriteOpt = False, quiet: QuietOpt = False) -> None:
    """Evaluate on [test]: evaluation.csv (seed format), per_image.csv, per_class.csv, metrics.json, report.html."""
    from flexunet.evaluate import evaluate_from_config
    from flexunet.evaluate.out_of_fold import evaluate_folds_from_config

    cfg = _load(config, set_, quiet=quiet)
    with _guard(overwrite, cfg):
        if folds:
            if checkpoint or onnx or ensemble:
                raise typer.BadParameter("--folds evaluates the fold models; drop --checkpoint, --onnx and --ensemble")
            result = evaluate_folds_from_config(cfg, device=device, quiet=quiet, tta=tta, examples=examples,
                                                report=report)
        else:
            result = evaluate_from_config(cfg, checkpoint=checkpoint, device=device, quiet=quiet, tta=tta,
                                          doctor=doctor, examples=examples, report=report, onnx=onnx,
                                          ensemble=_ensemble(ensemble))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    for name, values in result.per_class.items():
        say(f"{name}: dice {values['dice']:.4f} [{values['dice_ci_low']:.4f}, {values['dice_ci_high']:.4f}]  "
            f"iou {values['iou']:.4f}  precision {values['precision']:.4f}  recall {values['recall']:.4f}  "
            f"hd95 {values['hd95']:.2f} px  (per-image mean dice {values['dice_image_mean']:.4f})")
        if "object_f1" in values:
            say(f"{name} objects: {values['true_objects']} true, {values['predicted_objects']} predicted  "
                f"F1 {values['object_f1']:.4f}  recall {values['object_recall']:.4f}  PQ {values['pq']:.4f}  "
                f"count error {values['count_mae']:.2f} per image")
    if result.resampling is not None:  # an interval means little without what was drawn: copies of one cell are one
        r = result.resampling
        say(f"[low, high]: 95% CI over {r.count} {r.unit} (bootstrap, {r.source})")
    for name, value in result.seed_metrics.items():
        caveat = "  (counts background: not comparable with Dice)" if name == "dice_coef_multiclass" else ""
        say(f"seed metric {name}: {value:.4f}{caveat}")
    if result.leaks is not None and result.leaks.status != "clean":
        for line in result.leaks.lines:
            say(f"{'LEAK' if result.leaks.status == 'leak' else 'leakage'}: {line}")
    say(f"foreground mean dice {result.mean_dice:.4f}; reports in {result.files[0].parent}"
        + (f"; open {result.files[-1].name} in a browser" if report else ""))


@app.command()
def infer(config: ConfigArg, set_: SetOpt = None, device: DeviceOpt = None, checkpoint: CheckpointOpt = None,
          images: Annotated[Optional[str], typer.Option(
              help="A folder, an image file, or a quoted glob of files or folders ('scans/*.tif', 'slides/*/images') "
                   "(default: [infer] or [tiledinfer] images_dir).")] = None,
          output: Annotated[Optional[Path], typer.Option(
              help="Mask folder (default: [infer] or [tiledinfer] output_dir); "
                   "overlays then go to OUTPUT_merged.")] = None,
          merged: Annotated[Optional[Path], typer.Option(
              help="Overlay folder (default: [infer] or [tiledinfer] merged_dir).")] = None,
          tta: TtaOpt = None,
          tiled: Annotated[bool, typer.Option(
              "--tiled", help="Sliding-window inference at native scale with [tiledinfer] settings.")] = False,
          onnx: Annotated[Optional[Path], typer.Option(
              help="Run this ONNX file with onnxruntime instead of the checkpoint.")] = None,
          resume: Annotated[bool, typer.Option(
              "--resume", help="Keep masks already made with the same weights and settings; make the rest.")] = False,
          compile_model: Annotated[Optional[bool], typer.Option(
              "--compile/--no-compile",
              help="torch.compile the model: ~10 s to compile, then faster; pays off on large folders.")] = None,
          instances: Annotated[bool, typer.Option(
              "--instances", help="Also write 16-bit instance label PNGs (one number per object, as in objects.csv) "
                                  "to OUTPUT/instances.")] = False,
          slides: Annotated[bool, typer.Option(
              "--slides", help="Whole slides: tiled TIFF / OME-Zarr read and blended band by band with [tiledinfer] "
                               "settings; pyramidal TIFF masks (needs flexunet[slides]).")] = False,
          ensemble: EnsembleOpt = None,
          overwrite: OverwriteOpt = False, quiet: QuietOpt = False) -> None:
    """Segment images (a folder, a file or a glob): PNG masks at the original size, overlays in merged_dir,
    objects.csv and counts.csv beside the masks."""
    from flexunet.infer import infer_folders, infer_from_config

    tiled = tiled or slides
    section = "tiledinfer" if tiled else "infer"
    extra = list(set_ or [])
    extra += [f"{section}.images_dir={images}"] if images else []
    extra += [f"{section}.output_dir={output}"] if output else []
    extra += [f"{section}.merged_dir={merged}"] if merged else []
    cfg = _load(config, extra, quiet=quiet)
    with _guard(overwrite, cfg):
        result = infer_from_config(cfg, checkpoint=checkpoint, device=device, quiet=quiet, tta=tta, tiled=tiled,
                                   onnx=onnx, resume=resume, compile_model=compile_model, instances=instances,
                                   slides=slides, ensemble=_ensemble(ensemble))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports (every process's files)
    for line in result.skipped:
        say(f"skipped: {line}")
    for line in result.notes:
        note(line)
    _, output_dir, merged_dir = infer_folders(cfg, tiled)
    merged_dir = None if slides else merged_dir
    written, skipped = len(result.written), len(result.skipped)
    say(f"wrote {written} {plural(written, 'mask')} to {output_dir}"
        + (f" and overlays to {merged_dir}" if merged_dir else "")
        + (f"; kept {len(result.resumed)} from an earlier pass" if result.resumed else "")
        + (f"; skipped {skipped} {plural(skipped, 'file')} it could not read" if skipped else ""))
    if result.objects is not None:
        say(f"{result.total_objects} objects in {result.objects.name} and per image in {result.counts}"
            + (f"; instance maps in {output_dir / 'instances'}" if instances else ""))


@app.command()
def export(config: ConfigArg, set_: SetOpt = None, checkpoint: CheckpointOpt = None,
           onnx: Annotated[Path, typer.Option(help="The ONNX file to write.")] = Path("model.onnx"),
           int8: Annotated[bool, typer.Option(
               "--int8", help="Also write <stem>.int8.onnx, statically quantized with training images.")] = False,
           calibration: Annotated[int, typer.Option(
               min=1, help="How many [train] images calibrate the int8 ranges.")] = 64,
           ensemble: EnsembleOpt = None,
           overwrite: OverwriteOpt = False, quiet: QuietOpt = False) -> None:
    """Export the trained model to ONNX (outputs logits; dynamic batch, and height/width where the model allows)."""
    from flexunet.infer import export_from_config, export_int8_from_config

    cfg = _load(config, set_, quiet=quiet)
    with _guard(overwrite, cfg):
        if int8:
            result, quantized = export_int8_from_config(cfg, onnx, calibration, checkpoint, _ensemble(ensemble))
        else:
            result = export_from_config(cfg, onnx, checkpoint, _ensemble(ensemble))
    say(f"wrote {result.path}: input 'image' (N, {cfg.model.image_channels}, H, W) floats in [0, 1], output 'logits' "
        f"(N, {cfg.model.num_classes}, H, W); "
        + ("batch, height and width are dynamic" if result.dynamic_spatial
           else f"batch is dynamic, size fixed at {cfg.model.image_height}x{cfg.model.image_width}")
        + f"; max |torch - onnxruntime| = {result.max_abs_diff:.2e}")
    if int8:
        say(f"wrote {quantized.path}: int8 (QDQ, per-channel), calibrated on {quantized.calibration_images} [train] "
            f"images; on them {quantized.label_agreement:.2%} of pixels get the fp32 label, max |fp32 - int8| "
            f"probability {quantized.max_abs_prob_diff:.3f}; run it with flexunet infer --onnx {quantized.path}")


@app.command()
def demo(out: Annotated[Path, typer.Option(
             help="Folder for the synthetic data, config and results.")] = Path("flexunet-demo"),
         epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 30,
         device: DeviceOpt = None, overwrite: OverwriteOpt = False, quiet: QuietOpt = False) -> None:
    """Generate a synthetic 3-class cell dataset, then train -> evaluate -> infer on it (a few minutes on a CPU)."""
    from flexunet.demo import run_demo

    with _guard(overwrite):
        result = run_demo(out, epochs=epochs, device=device, quiet=quiet)
    per_class = "  ".join(f"{k} {v:.4f}" for k, v in result.per_class_dice.items())
    say(f"demo: test dice per class: {per_class}")
    say(f"demo: foreground Dice {result.foreground_dice:.4f}; {result.masks_written} masks in {result.output_dir}, "
        f"overlays in {result.merged_dir}; config {result.config}")
    if result.report is not None:
        say(f"demo: report {result.report.resolve()} (open it in a browser)")


@app.command()
def augment(config: ConfigArg, set_: SetOpt = None, seed: SeedOpt = None,
            preview: Annotated[Optional[int], typer.Option(
                help="Write one PNG grid of N augmented [train] samples.")] = None,
            out: Annotated[Path, typer.Option(help="The PNG file of --preview.")] = Path("augment_preview.png"),
            offline: Annotated[Optional[Path], typer.Option(
                help="Write augmented [train] pairs to OUT_DIR/images and OUT_DIR/masks.")] = None,
            copies: Annotated[int, typer.Option(help="Augmented copies of each pair with --offline.")] = 1,
            overwrite: OverwriteOpt = False, quiet: QuietOpt = False) -> None:
    """Show what [augmentor] does to [train] samples (--preview N), or write an augmented set (--offline OUT_DIR)."""
    from flexunet.augment import augment_offline, preview_grid

    if preview is None and offline is None:
        raise FlexunetError("augment: give --preview N or --offline OUT_DIR")
    cfg = _load(config, set_, seed, quiet)
    with _guard(overwrite, cfg):
        if preview is not None:
            if Path(out).suffix.lower() != ".png":
                raise FlexunetError(f"--out {out}: the preview is a PNG image; give a file name ending in .png")
            check_outputs([Path(out)])  # before --offline writes anything either
            say(f"wrote {preview} augmented {plural(preview, 'sample')} to "
                f"{preview_grid(cfg, preview, out, cfg.train.seed)}")
        if offline is not None:
            count = augment_offline(cfg, offline, copies, cfg.train.seed)
            say(f"wrote {count} augmented image/mask {plural(count, 'pair')} to {offline / 'images'} and "
                f"{offline / 'masks'}")


@app.command()
def inspect(config: ConfigArg, set_: SetOpt = None,
            out: Annotated[Optional[Path], typer.Option(help="Summary text file (default: [inspect] summary).")] = None,
            graph: Annotated[Optional[Path], typer.Option(
                help="Graph image (default: [inspect] model_graph); needs graphviz dot.")] = None,
            overwrite: OverwriteOpt = False, quiet: QuietOpt = False) -> None:
    """Show [model]: parameters, FLOPs per image at the config size, receptive field, and a layer table file."""
    from flexunet.models.inspect import inspect_model, write_graph, write_summary

    cfg = _load(config, set_, quiet=quiet)
    summary_path, graph_path = out or Path(cfg.inspect.summary), graph or Path(cfg.inspect.model_graph)
    with _guard(overwrite, cfg):
        check_outputs([summary_path, graph_path])  # both, before the first is written
        summary = inspect_model(cfg)
        for line in summary.headline().splitlines():
            say(line)
        say(f"layer table: {write_summary(summary, summary_path)}")
        drawn = write_graph(summary, graph_path)
    say(f"graph: {drawn}" if drawn else "graph: skipped (graphviz `dot` not found)")


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


def _usage_error(exc: Exception) -> int | None:
    """The exit code of a command-line usage error from typer's parser (typer's own or click's), else None.

    Recent typer carries its own copy of click and older typer uses click itself, so the parser's exceptions are
    recognised by what they offer (a message and an exit code), not by importing either module."""
    message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
    if not callable(message) or not isinstance(code, int):
        return None
    if type(exc).__name__ == "NoArgsIsHelpError":  # `flexunet` or a verb alone: its help, as --help shows it
        say(str(message()))
        return code or 2
    context = getattr(exc, "ctx", None)
    command = getattr(context, "command_path", None) or "flexunet"
    text = " ".join(str(message()).split()) or type(exc).__name__
    error(f"{text} (see: {command} --help)")
    return code or 2


def main() -> None:
    """Entry point: user and usage errors print one line per problem on stderr and exit 2.

    --debug shows the traceback.
    """
    debug = "--debug" in sys.argv or os.environ.get("FLEXUNET_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        code = app(standalone_mode=False)  # returns a command's typer.Exit code instead of raising it
        if isinstance(code, int) and code:
            sys.exit(code)
    except FlexunetError as exc:
        if debug:
            raise
        for line in str(exc).splitlines():
            error(line)
        sys.exit(2)
    except KeyboardInterrupt:
        error_console.print("interrupted: the last completed epoch's checkpoint is kept (resume with --resume)",
                            markup=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:  # outside flexunet's own writers (a DataLoader, TensorBoard, a library's own file)
        if debug or (exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and exc.filename is None):
            raise
        error(str(output_error(Path(exc.filename or "output"), exc)))
        sys.exit(2)
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # Ctrl-C at a prompt (typer's or click's Abort)
            sys.exit(130)
        code = None if debug else _usage_error(exc)
        if code is None:
            raise
        sys.exit(code)


if __name__ == "__main__":
    main()
