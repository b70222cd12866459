"""Per-epoch logs: the seed's train_losses.csv / train_metrics.csv (same headers and rows), a fuller history.csv,
and PNG plots redrawn every epoch."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from flexunet.files import atomic_write_bytes, atomic_write_text


def _read_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [row for row in csv.reader(handle, skipinitialspace=True) if row]


def class_dice_text(row: Mapping[str, float], label_names: Sequence[str]) -> str:
    """`cytoplasm 0.9132, nucleus 0.8511`: a history row's validation Dice per foreground class, by name."""
    return ", ".join(f"{name} {row[f'val_dice_{i}']:.4f}" for i, name in enumerate(label_names[1:], start=1)
                     if f"val_dice_{i}" in row)


class History:
    """Appends one row per epoch to the CSV logs; on resume, rows from the resumed epoch on are dropped first.

    Rows are numbered from 1 (column `epoch`), as the console, the preview file names and the checkpoints number them.
    """

    def __init__(self, eval_dir: Path, seed_metric_columns: Sequence[str], start_epoch: int = 0) -> None:
        """`start_epoch`: epochs already finished (the rows numbered 1..start_epoch are kept)."""
        self.eval_dir = eval_dir
        self.metric_columns = list(seed_metric_columns)
        self.losses_csv = eval_dir / "train_losses.csv"
        self.metrics_csv = eval_dir / "train_metrics.csv"
        self.history_csv = eval_dir / "history.csv"
        self.rows: list[dict[str, float]] = []
        if start_epoch > 0 and self.history_csv.is_file():
            table = _read_rows(self.history_csv)
            header = table[0] if table else []
            self.rows = [{k: float(v) for k, v in zip(header, r, strict=False)}  # as before: short rows kept short
                         for r in table[1:] if float(r[0]) <= start_epoch]
        self._rewrite()

    def _rewrite(self) -> None:
        """Write all three CSVs from self.rows (atomic, so a crash mid-write never leaves a torn log)."""
        losses = ["epoch, loss, val_loss"]
        losses += [f"{int(r['epoch'])}, {r['loss']:.4f}, {r['val_loss']:.4f}" for r in self.rows]
        atomic_write_text(self.losses_csv, "\n".join(losses) + "\n")
        metrics = ["epoch," + "".join(f"{c}," for c in self.metric_columns)]
        metrics += [", ".join([str(int(r["epoch"]))] + [f"{r.get(c, math.nan):.4f}" for c in self.metric_columns])
                    for r in self.rows]
        atomic_write_text(self.metrics_csv, "\n".join(metrics) + "\n")
        if self.rows:
            keys = list(self.rows[-1])
            lines = [",".join(keys)] + [",".join(f"{r.get(k, math.nan):.6g}" for k in keys) for r in self.rows]
            atomic_write_text(self.history_csv, "\n".join(lines) + "\n")

    def append(self, row: Mapping[str, float]) -> None:
        self.rows.append(dict(row))
        self._rewrite()
        self.plot()

    def plot(self) -> None:
        """train_losses.png and train_metrics.png: train green, validation red, dashed with markers (seed style)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in self.rows]
        for name, columns in (("train_losses", ["loss", "val_loss"]), ("train_metrics", self.metric_columns)):
            if not columns:
                continue
            fig, ax = plt.subplots(figsize=(8, 6))
            for column, colour in zip(columns, ("green", "red"), strict=False):  # the seed's plot: first two columns
                ax.plot(epochs, [r.get(column, math.nan) for r in self.rows], "o--", color=colour, label=column)
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.grid(True)
            ax.legend(loc="upper left")
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=80)
            plt.close(fig)
            atomic_write_bytes(self.eval_dir / f"{name}.png", buffer.getvalue())  # a full disk keeps the last plot
