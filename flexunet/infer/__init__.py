"""Inference: masks and overlays for a folder of images, whole-image or tiled, with PyTorch or ONNX Runtime."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from flexunet.config.folders import check_output_folders
from flexunet.config.schema import Config
from flexunet.console import Bar, note, progress_bars
from flexunet.data.pairing import list_image_files
from flexunet.errors import ConfigError
from flexunet.infer.compiled import compile_for_inference
from flexunet.infer.export import ExportResult, OnnxModel, export_onnx
from flexunet.infer.predict import InferResult, predict_folder
from flexunet.postprocess import postprocess_hook, settings_for_run
from flexunet.predict import for_inference, predictor_from_config
from flexunet.runs.checkpoint import load_trained_model
from flexunet.runs.device import choose_device
from flexunet.runs.rundir import run_dir_for

__all__ = ["ExportResult", "InferResult", "OnnxModel", "export_from_config", "export_onnx", "infer_folders",
           "infer_from_config", "predict_folder"]


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
                      resume: bool = False, compile_model: bool | None = None, instances: bool = False) -> InferResult:
    """Segment [infer] images_dir (or [tiledinfer]'s with `tiled`) with the run's best checkpoint or an ONNX file.

    The API of `flexunet infer`. `resume` keeps masks (and overlays) that are newer than the weights and read back,
    so an interrupted pass over a large folder goes on where it stopped instead of starting again. `compile_model`
    (default [infer] compile) runs the checkpoint under torch.compile (flexunet/infer/compiled.py). Masks are
    postprocessed as [postprocess] says (with `auto`, as the run's postprocess.json chose); objects.csv and counts.csv
    go beside them, and with `instances` 16-bit instance maps to `<output_dir>/instances/`.
    """

    images_dir, output_dir, merged = infer_folders(cfg, tiled)
    settings = settings_for_run(cfg, run_dir_for(cfg).model_dir)
    section = cfg.tiledinfer if tiled else cfg.infer
    check_output_folders(cfg, [(section.where("output_dir"), output_dir)]
                         + ([(section.where("merged_dir"), merged)] if merged else []))
    torch_device = choose_device(device)
    model: nn.Module
    use_compile = cfg.infer.compile if compile_model is None else compile_model
    if onnx is not None:
        if use_compile:
            source = cfg.infer.where("compile") if compile_model is None else "--compile"
            raise ConfigError(f"{source}: applies to PyTorch checkpoints, not --onnx; drop it (--no-compile) for ONNX")
        model, weights = OnnxModel(Path(onnx), torch_device), Path(onnx)
    else:
        weights = _checkpoint(cfg, checkpoint)
        model, _ = load_trained_model(weights, torch_device, cfg)
        model = compile_for_inference(model, torch_device) if use_compile else for_inference(model, torch_device)
    if tiled and cfg.tiledinfer.debug and not quiet:
        note(f"{cfg.tiledinfer.where('debug')}: tile dumps are not written by flexunet; ignored")
    total = len(list_image_files(images_dir, "[tiledinfer] images_dir" if tiled else "[infer] images_dir"))
    with progress_bars(quiet) as progress:
        bar = Bar(progress, "inferring (tiled)" if tiled else "inferring", total)
        predictor = predictor_from_config(cfg, model, torch_device, tiled, tta, postprocess=postprocess_hook(settings))
        return predict_folder(predictor, cfg, images_dir, output_dir, merged, on_image=bar.advance,
                              resume_after=weights.stat().st_mtime if resume else None, settings=settings,
                              instances_dir=output_dir / "instances" if instances else None)


def export_from_config(cfg: Config, onnx: Path, checkpoint: Path | None = None) -> ExportResult:
    """Export the run's best checkpoint to ONNX (logits out, dynamic batch and, where possible, height/width)."""

    model, _ = load_trained_model(_checkpoint(cfg, checkpoint), choose_device("cpu"), cfg)
    return export_onnx(model, cfg, Path(onnx))
