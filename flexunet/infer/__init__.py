"""Inference: masks and overlays for a folder of images, whole-image or tiled, with PyTorch or ONNX Runtime."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flexunet.config.folders import check_output_folders, protected_inputs
from flexunet.config.schema import Config
from flexunet.console import Bar, note, progress_bars
from flexunet.data.dataset import pairs_for
from flexunet.data.io import read_image, resize_image
from flexunet.data.pairing import list_image_files
from flexunet.errors import ConfigError
from flexunet.files import check_outputs, guarded, sha256_of
from flexunet.infer.compiled import compile_for_inference
from flexunet.infer.export import ExportResult, Int8Result, export_onnx, int8_path, quantize_int8
from flexunet.infer.predict import FileSettings, InferResult, planned_outputs, predict_folder, settings_tag
from flexunet.infer.slides import list_slides, predict_slides, slide_stem
from flexunet.labels import LabelSpace
from flexunet.postprocess import PostprocessSettings, choice_for_run, postprocess_hook
from flexunet.predict import for_inference, predictor_from_config, tile_settings, to_input
from flexunet.predict.onnx import OnnxModel
from flexunet.runs.checkpoint import load_trained_model
from flexunet.runs.device import choose_device
from flexunet.runs.distributed import DistContext, gather_objects, init_distributed, shard, shutdown
from flexunet.runs.ensemble import load_ensemble
from flexunet.runs.rundir import locked_folders, run_dir_for

__all__ = ["ExportResult", "InferResult", "Int8Result", "OnnxModel", "export_from_config", "export_int8_from_config",
           "export_onnx", "infer_folders", "infer_from_config", "predict_folder", "quantize_int8"]


def _checkpoint(cfg: Config, checkpoint: Path | None) -> Path:

    return run_dir_for(cfg).checkpoint(checkpoint)


def infer_folders(cfg: Config, tiled: bool) -> tuple[str, Path, Path | None]:
    """(images_dir, output_dir, merged_dir): [tiledinfer] for tiled inference (images_dir falls back to [infer]'s).

    Overlays follow the masks: when output_dir comes from the command line (--output) and merged_dir does not, the
    config's merged_dir is replaced by `<output_dir>_merged` (decided at load, `cfg.resolved.merged_dirs`), so two
    passes with two --output never share overlays.
    """
    name = "tiledinfer" if tiled else "infer"
    section = getattr(cfg, name)
    images_dir = section.images_dir or cfg.infer.images_dir
    if not images_dir:
        raise ConfigError(f"{section.where('images_dir')}: required for inference (a folder of images)")
    merged = cfg.resolved.merged_dirs.get(name, section.merged_dir)
    return images_dir, Path(section.output_dir), Path(merged) if merged else None


def infer_from_config(cfg: Config, checkpoint: Path | None = None, device: str | None = None, quiet: bool = False,
                      tta: bool | None = None, tiled: bool = False, onnx: Path | None = None,
                      resume: bool = False, compile_model: bool | None = None, instances: bool = False,
                      slides: bool = False, ensemble: list[Path] | None = None) -> InferResult:
    """Segment [infer] images_dir (or [tiledinfer]'s with `tiled`) with the run's best checkpoint or an ONNX file.

    The API of `flexunet infer`. `resume` keeps masks (and overlays) that are newer than the weights and read back,
    so an interrupted pass over a large folder goes on where it stopped instead of starting again. `compile_model`
    (default [infer] compile) runs the checkpoint under torch.compile (flexunet/infer/compiled.py). Masks are
    postprocessed as [postprocess] says (with `auto`, as the run's postprocess.json chose); objects.csv and counts.csv
    go beside them, and with `instances` 16-bit instance maps to `<output_dir>/instances/`.

    Under torchrun (`torchrun --nproc_per_node=N -m flexunet infer CONFIG`) each process segments its share of the
    sorted file list (`runs.distributed.shard`) and every process returns the merged result of all of them.

    `slides`: whole-slide inference (flexunet/infer/slides.py) on the tiled TIFF / OME-Zarr slides of [tiledinfer]
    images_dir, each read and blended band by band; `<stem>.tif` pyramidal masks, no overlays, no [postprocess]
    (a slide's objects are not counted).
    """
    tiled = tiled or slides
    images_dir, output_dir, merged = infer_folders(cfg, tiled)
    merged = None if slides else merged
    cfg, settings = choice_for_run(cfg, run_dir_for(cfg).model_dir)  # with auto, the threshold chosen too
    section = cfg.tiledinfer if tiled else cfg.infer
    check_output_folders(cfg, [(section.where("output_dir"), output_dir)]
                         + ([(section.where("merged_dir"), merged)] if merged else []))
    if sum(x is not None for x in (onnx, checkpoint, ensemble)) > 1:
        raise ConfigError("--onnx, --checkpoint and --ensemble: give one model to infer with")
    weights = Path(onnx) if onnx is not None else ensemble[0] if ensemble else _checkpoint(cfg, checkpoint)
    reads = [(weights, "the ONNX file this command reads" if onnx is not None else "the checkpoint this command reads")]
    reads += [(member, "a checkpoint of the ensemble") for member in (ensemble or [])[1:]]
    folders = {output_dir: section.where("output_dir")} | ({merged: section.where("merged_dir")} if merged else {})
    dist_ctx, dist_device = init_distributed(device)
    try:
        with guarded(protected_inputs(cfg, reads)):
            instances_dir = output_dir / "instances" if instances else None
            if slides:
                files = shard(list_slides(images_dir), dist_ctx)
                check_outputs(output_dir / f"{slide_stem(p)}.tif" for p in files)  # before anything is written
            else:
                files = list_image_files(images_dir, "[tiledinfer] images_dir" if tiled else "[infer] images_dir")
                check_outputs(planned_outputs(files, output_dir, merged, instances_dir))  # before anything is written
            torch_device = dist_device or choose_device(device)
            model = inference_model(cfg, weights, onnx is not None, torch_device, compile_model, tiled,
                                    ensemble)  # checked first
            with locked_folders(folders) if dist_ctx.is_main else nullcontext():
                result = _infer(cfg, images_dir, output_dir, merged, torch_device, dist_ctx, model, weights,
                                quiet or not dist_ctx.is_main, tta, tiled, resume, slides, settings, instances,
                                sha256_of(ensemble) if ensemble else None)
        return merge_results(gather_objects(result, dist_ctx))
    finally:
        shutdown(dist_ctx)


def merge_results(results: list[InferResult]) -> InferResult:
    """One InferResult from every process's, in rank order; objects.csv and its counts are rank 0's (it wrote the
    rows of every process)."""
    main = results[0]
    return InferResult([p for r in results for p in r.written], [s for r in results for s in r.skipped],
                       [p for r in results for p in r.resumed], main.objects, main.counts, main.total_objects,
                       list(dict.fromkeys(n for r in results for n in r.notes)),
                       [p for r in results for p in r.nonfinite])


def inference_model(cfg: Config, weights: Path, onnx: bool, torch_device: torch.device,
                    compile_model: bool | None, tiled: bool, ensemble: list[Path] | None = None) -> nn.Module:
    """The checkpoint's model ready for inference (compiled when asked), or the ONNX file's session after checking
    its classes, channels and input size against `cfg`: before any output folder is made."""
    use_compile = cfg.infer.compile if compile_model is None else compile_model
    if onnx:
        if use_compile:
            source = cfg.infer.where("compile") if compile_model is None else "--compile"
            raise ConfigError(f"{source}: applies to PyTorch checkpoints, not --onnx; drop it (--no-compile) for ONNX")
        session = OnnxModel(weights, torch_device)
        session.check_fits(cfg.model, tile_settings(cfg)[0] if tiled else None)
        return session
    model: nn.Module
    if ensemble:
        model = load_ensemble(ensemble, torch_device, cfg)
    else:
        model = load_trained_model(weights, torch_device, cfg)[0]
    return compile_for_inference(model, torch_device) if use_compile else for_inference(model, torch_device)


def _infer(cfg: Config, images_dir: str, output_dir: Path, merged: Path | None, torch_device: torch.device,
           dist_ctx: DistContext, model: nn.Module, weights: Path, quiet: bool, tta: bool | None, tiled: bool,
           resume: bool, slides: bool = False, settings: PostprocessSettings | None = None,
           instances: bool = False, members: str | None = None) -> InferResult:
    settings = settings or {}
    instances_dir = output_dir / "instances" if instances else None
    if tiled and cfg.tiledinfer.debug and not quiet:
        note(f"{cfg.tiledinfer.where('debug')}: tile dumps are not written by flexunet; ignored")
    tta_on = cfg.infer.tta if tta is None else tta
    tag = settings_tag(cfg, weights, tta=tta_on, tiled=tiled, slides=slides, postprocess=settings,
                       **({"ensemble": members} if members else {}))
    predictor = predictor_from_config(cfg, model, torch_device, tiled, tta, postprocess=postprocess_hook(settings))
    if slides:
        slide_files = shard(list_slides(images_dir), dist_ctx)

        def probs_fn(tiles: np.ndarray) -> np.ndarray:  # (n, t, t, C) uint8 -> (n, K, t, t), TTA included
            return predictor.batch_probs(to_input(list(tiles), torch_device, predictor.channels_last)).cpu().numpy()

        with progress_bars(quiet) as progress:
            bar = Bar(progress, "inferring slides", len(slide_files))
            return predict_slides(slide_files, output_dir, probs_fn, cfg, resume, bar.advance, tag)
    files = list_image_files(images_dir, "[tiledinfer] images_dir" if tiled else "[infer] images_dir")
    with progress_bars(quiet) as progress:
        bar = Bar(progress, "inferring (tiled)" if tiled else "inferring", len(shard(files, dist_ctx)))
        return predict_folder(predictor, FileSettings.from_config(cfg, tiled), images_dir, output_dir, merged,
                              on_image=bar.advance, resume=resume, settings=settings, instances_dir=instances_dir,
                              dist_ctx=dist_ctx, tag=tag)


def export_from_config(cfg: Config, onnx: Path, checkpoint: Path | None = None,
                       ensemble: list[Path] | None = None) -> ExportResult:
    """Export the run's best checkpoint (or the mean of an `ensemble` of checkpoints, as one graph) to ONNX
    (logits out, dynamic batch and, where possible, height/width)."""
    if checkpoint is not None and ensemble:
        raise ConfigError("--checkpoint and --ensemble: give one model to export")
    members = list(ensemble or [_checkpoint(cfg, checkpoint)])
    with guarded(protected_inputs(cfg, [(m, "a checkpoint this command reads") for m in members])):
        check_outputs([Path(onnx)], kind="onnx")
        device = choose_device("cpu")
        model = load_ensemble(members, device, cfg) if ensemble else load_trained_model(members[0], device, cfg)[0]
        return export_onnx(model, cfg, Path(onnx))


def calibration_inputs(cfg: Config, count: int) -> list[np.ndarray]:
    """`count` float (1, C, H, W) model inputs for int8 calibration: [train] images (then [valid]'s when train has
    fewer), evenly spread over the sorted pairs, read and resized exactly as inference reads them."""
    pairs = pairs_for(cfg, "train", warn=False)
    if len(pairs) < count and cfg.valid.images_dir:
        pairs += pairs_for(cfg, "valid", warn=False)
    if not pairs:
        raise ConfigError(f"{cfg.train.where('images_dir')}: int8 calibration needs training images; none found")
    chosen = [pairs[round(i)] for i in np.linspace(0, len(pairs) - 1, min(count, len(pairs)))]
    m = cfg.model
    return [to_input([resize_image(read_image(p.image, m.image_channels, cfg.image.color_order), m.image_width,
                                   m.image_height)], torch.device("cpu")).numpy() for p in chosen]


def export_int8_from_config(cfg: Config, onnx: Path, calibration: int = 64, checkpoint: Path | None = None,
                            ensemble: list[Path] | None = None) -> tuple[ExportResult, Int8Result]:
    """`flexunet export --int8`: the fp32 ONNX file at `onnx`, then `<stem>.int8.onnx` beside it, statically
    quantized (onnxruntime, QDQ, per-channel) with `calibration` training images."""
    members = list(ensemble or [_checkpoint(cfg, checkpoint)])
    with guarded(protected_inputs(cfg, [(m, "a checkpoint this command reads") for m in members])):
        check_outputs([Path(onnx), int8_path(Path(onnx))], kind="onnx")  # both, before the first is written
        exported = export_from_config(cfg, onnx, checkpoint, ensemble)
        return exported, quantize_int8(Path(onnx), int8_path(Path(onnx)), calibration_inputs(cfg, calibration),
                                       LabelSpace.from_config(cfg))
