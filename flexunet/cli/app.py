"""The typer app, its --version, and the arguments and options the verbs share (config, --set, device, ...),
with the config loading and the output guard every verb goes through."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from flexunet.console import note, say

if TYPE_CHECKING:
    pass

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
