"""The verbs that train, evaluate, run and export models: train, evaluate, infer, export, demo, augment, inspect."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from flexunet.cli.app import (
    CheckpointOpt,
    ConfigArg,
    DeviceOpt,
    EnsembleOpt,
    OverwriteOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    TtaOpt,
    _ensemble,
    _guard,
    _load,
    app,
)
from flexunet.console import note, plural, say
from flexunet.errors import FlexunetError
from flexunet.files import check_outputs

if TYPE_CHECKING:
    from flexunet.config.schema import Config
    from flexunet.train import FitResult


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
