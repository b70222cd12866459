"""Inference: masks and overlays for a folder of images."""
from __future__ import annotations

from pathlib import Path

from flexunet.config.schema import Config
from flexunet.console import Bar, progress_bars
from flexunet.data.pairing import list_image_files
from flexunet.errors import ConfigError
from flexunet.infer.predict import InferResult, forward_probs, overlay, predict_folder, predict_images, probs_to_labels
from flexunet.train.device import choose_device

__all__ = ["InferResult", "forward_probs", "infer_from_config", "overlay", "predict_folder", "predict_images", "probs_to_labels"]


def infer_from_config(cfg: Config, checkpoint: Path | None = None, device: str | None = None, quiet: bool = False,
                      tta: bool | None = None) -> InferResult:
    """Segment [infer] images_dir with the run's best checkpoint; the API of `flexunet infer`."""
    from flexunet.evaluate import load_trained_model
    from flexunet.train import run_dir_for

    if not cfg.infer.images_dir:
        raise ConfigError(f"{cfg.infer.where('images_dir')}: required for inference (a folder of images)")
    run = run_dir_for(cfg)
    torch_device = choose_device(device)
    checkpoint = Path(checkpoint) if checkpoint else (run.best if run.best.is_file() else run.last)
    model, _ = load_trained_model(checkpoint, torch_device, cfg)
    merged = Path(cfg.infer.merged_dir) if cfg.infer.merged_dir else None
    total = len(list_image_files(cfg.infer.images_dir, "[infer] images_dir"))
    with progress_bars(quiet) as progress:
        bar = Bar(progress, "inferring", total)
        return predict_folder(model, cfg, cfg.infer.images_dir, Path(cfg.infer.output_dir), merged, torch_device,
                              cfg.infer.tta if tta is None else tta, on_image=bar.advance)
