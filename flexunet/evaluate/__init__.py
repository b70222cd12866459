"""Evaluation on held-out data: the seed's evaluation.csv plus honest per-image and per-class numbers."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from torch import nn

from flexunet.config.folders import check_output_folders, protected_inputs
from flexunet.config.schema import Config
from flexunet.console import Bar, note, progress_bars
from flexunet.data.dataset import make_dataset, pairs_for
from flexunet.errors import ConfigError
from flexunet.evaluate.groups import resampling_for
from flexunet.evaluate.measure import Evaluation, Example, at_original_size, evaluate_details, keep_extremes
from flexunet.evaluate.settings import EvalSettings
from flexunet.evaluate.summary import summarise
from flexunet.evaluate.write import EvalResult, eval_dir_outputs, write_evaluation
from flexunet.files import check_outputs, guarded, sha256_of
from flexunet.postprocess import choice_for_run, postprocess_hook
from flexunet.predict import for_inference, predictor_from_config
from flexunet.predict.onnx import OnnxModel
from flexunet.runs.checkpoint import TrainingConfig, load_checkpoint, model_from_state, read_training_config
from flexunet.runs.device import choose_device
from flexunet.runs.distributed import DistContext, init_distributed, shutdown
from flexunet.runs.ensemble import load_ensemble
from flexunet.runs.rundir import locked_folders, run_dir_for

__all__ = [
    "EvalResult", "EvalSettings", "Evaluation", "Example", "at_original_size", "eval_dir_outputs", "evaluate_details",
    "evaluate_from_config", "evaluate_run", "keep_extremes", "summarise", "write_evaluation",
]




def evaluate_from_config(cfg: Config, checkpoint: Path | None = None, device: str | None = None,
                         quiet: bool = False, tta: bool | None = None, doctor: Path | None = None,
                         examples: int = 4, report: bool = True, onnx: Path | None = None,
                         ensemble: list[Path] | None = None) -> EvalResult:
    """Evaluate the run's best checkpoint (or the ONNX file `onnx`, e.g. an int8 export, or the mean probability of
    the checkpoints in `ensemble`) on [test] (or [valid] when there is no [test]).

    The API of `flexunet evaluate`. Under torchrun each process evaluates its share of the batches, and rank 0
    writes the reports from every process's per-image rows: the same files as one process.
    """
    run = run_dir_for(cfg)
    check_output_folders(cfg, [(run.eval_key, run.eval_dir)])
    if sum(x is not None for x in (onnx, checkpoint, ensemble)) > 1:
        raise ConfigError("--onnx, --checkpoint and --ensemble: give one model to evaluate")
    checkpoint = Path(onnx) if onnx is not None else ensemble[0] if ensemble else run.checkpoint(checkpoint)
    what = "the ONNX file this command reads" if onnx is not None else "the checkpoint this command reads"
    reads = [(checkpoint, what), (doctor, "the doctor report this command reads")]
    reads += [(member, "a checkpoint of the ensemble") for member in (ensemble or [])[1:]]
    dist_ctx, dist_device = init_distributed(device)
    try:
        with guarded(protected_inputs(cfg, reads)):
            check_outputs(eval_dir_outputs(run.eval_dir, report))  # before anything is written
            torch_device = dist_device or choose_device(device)
            session, graph = None, None  # type: OnnxModel | None, dict[str, object] | None
            if onnx is not None:  # read and checked before eval_dir is made
                session = OnnxModel(Path(onnx), torch_device)
                session.check_fits(cfg.model)
                graph = {"file": str(onnx), "sha256": sha256_of([Path(onnx)])}
            with locked_folders({run.eval_dir: run.eval_key}) if dist_ctx.is_main else nullcontext():
                if session is not None and graph is not None:
                    name = f"{onnx} (ONNX, sha256 {str(graph['sha256'])[:16]})"
                    return evaluate_run(session, cfg, run.eval_dir, name, quiet, tta, doctor, examples, report, None,
                                        dist_ctx, graph)
                if ensemble:
                    members = load_ensemble(ensemble, torch_device, cfg)
                    record: dict[str, object] = {"ensemble": [str(p) for p in ensemble],
                                                 "sha256": sha256_of(ensemble)}
                    return evaluate_run(for_inference(members, torch_device), cfg, run.eval_dir, f"ensemble of "
                                        f"{len(ensemble)}: " + ", ".join(str(p) for p in ensemble), quiet, tta,
                                        doctor, examples, report, members.trainings[0], dist_ctx, record)
                state = load_checkpoint(checkpoint, torch_device)
                model = for_inference(model_from_state(state, Path(checkpoint), cfg, torch_device), torch_device)
                return evaluate_run(model, cfg, run.eval_dir, str(checkpoint), quiet, tta, doctor, examples, report,
                                    read_training_config(state, checkpoint), dist_ctx)
    finally:
        shutdown(dist_ctx)


def evaluate_run(model: nn.Module, cfg: Config, eval_dir: Path, checkpoint: str = "", quiet: bool = False,
                 tta: bool | None = None, doctor: Path | None = None, examples: int = 4, report: bool = True,
                 training: TrainingConfig | None = None, dist_ctx: DistContext = DistContext(),
                 model_files: dict[str, object] | None = None) -> EvalResult:
    """Evaluate `model` on [test] (or [valid]) and write the CSVs, metrics.json and, with `report`, report.html.

    The page shows the `examples` worst and best images, and the leakage verdict from the `doctor` JSON, a
    doctor*.json in eval_dir, or a doctor run on small datasets. `training` is the config the checkpoint was trained
    with, shown apart from `cfg` (the evaluation's); None when the model was not read from a checkpoint.
    Under torchrun (`dist_ctx`) every process measures its share and rank 0 alone writes; the other processes
    return the same numbers with no files and no leakage verdict.
    """
    section = "test"
    if not (cfg.test.images_dir and cfg.test.masks_dir):
        section = "valid"
        if not quiet:
            note("no [test] folders: evaluating on [valid] (the numbers are not held-out)")
    tta = cfg.eval.tta if tta is None else tta
    cfg, postprocess = choice_for_run(cfg, run_dir_for(cfg).model_dir)  # with auto, the threshold chosen too
    pairs = pairs_for(cfg, section)  # listed (and oversized files reported) once for every step below
    settings = EvalSettings.from_config(cfg)
    with progress_bars(quiet or not dist_ctx.is_main) as progress:
        bar = Bar(progress, f"evaluating {section}", len(pairs))
        device = next((p.device for p in model.parameters()), None) or choose_device("cpu")  # ONNX: no parameters
        predictor = predictor_from_config(cfg, model, device, tta=tta, batch_size=cfg.eval.batch_size,
                                          postprocess=postprocess_hook(postprocess))
        ev = evaluate_details(predictor, make_dataset(cfg, pairs), settings, bar, hd95=True,
                              examples=examples if report else 0, postprocess=postprocess, dist_ctx=dist_ctx)
    resampling = resampling_for(cfg, section, pairs)  # pairs in the order evaluated
    leaks = None  # decided by write_evaluation on rank 0 (the doctor)
    return write_evaluation(ev, pairs, resampling, cfg, settings, eval_dir, section, checkpoint, quiet, tta, doctor,
                            report, training, dist_ctx, model_files, postprocess, leaks)
