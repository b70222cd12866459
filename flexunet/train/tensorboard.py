"""Optional TensorBoard logging ([train] tensorboard = True): every history column, the learning rate, and the
epoch preview masks, in eval_dir/tensorboard.

Off by default so that a run folder does not depend on which packages happen to be installed; the package is
imported only when asked for, so training without it pays nothing.
"""
from __future__ import annotations

from pathlib import Path

from flexunet.config.schema import TrainSection
from flexunet.errors import ConfigError


class EpochBoard:
    """One SummaryWriter for the run; `log_epoch` after each history row. Does nothing when logging is off."""

    def __init__(self, folder: Path | None) -> None:
        self.writer = None
        if folder is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(folder))

    def log_epoch(self, epoch: int, row: dict[str, float], preview_dir: Path) -> None:
        """Scalars of `row` (loss, val_*, lr, seconds...) at step `epoch` (numbered from 1), and its previews."""
        if self.writer is None:
            return
        step = epoch  # the same epoch number as the console, history.csv and the preview file names
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, step)
        from flexunet.data.io import read_image

        for path in sorted(Path(preview_dir).glob(f"Epoch_{step}_*.png")):
            image = read_image(path)  # (H, W, 3) uint8 RGB
            self.writer.add_image(f"preview/{path.stem.removeprefix(f'Epoch_{step}_')}", image, step, dataformats="HWC")
        self.writer.flush()  # one epoch is slow enough; a crash should not lose the curves

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_board(section: TrainSection, eval_dir: Path, is_main: bool = True) -> EpochBoard:
    """The run's TensorBoard logger: writing to eval_dir/tensorboard when [train] tensorboard is on (and, under
    torchrun, only on rank 0, which writes every other file too)."""
    if not section.tensorboard or not is_main:
        return EpochBoard(None)
    try:
        import tensorboard  # noqa: F401  (torch's SummaryWriter needs it)
    except ImportError:
        raise ConfigError(f"{section.where('tensorboard')} = True: the tensorboard package is not installed; "
                          "pip install 'flexunet[tensorboard]' or set it to False") from None
    return EpochBoard(Path(eval_dir) / "tensorboard")
