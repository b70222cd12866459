"""Deployment paths: tiled inference through the CLI, resume over a folder, ONNX export and ONNX Runtime inference."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flexunet.config import load_config
from flexunet.config.load import config_to_ini
from flexunet.errors import FlexunetError
from flexunet.infer import infer_from_config
from flexunet.labels import LabelSpace
from flexunet.models import build_model
from flexunet.runs.checkpoint import save_checkpoint
from flexunet.runs.rundir import run_dir_for
from tests.conftest import make_config
from tests.e2e.test_pipeline import run_cli

SIZES = {"big": (100, 75), "tiny": (20, 20), "wide": (33, 130)}


@pytest.fixture
def checkpointed(tmp_path: Path, tiny_dataset: Path) -> Path:
    """A config whose best.pt holds a tiny FlexUNet with random weights, and a folder of odd-sized images."""
    large = tmp_path / "large"
    large.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in SIZES.items():
        cv2.imwrite(str(large / f"{name}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    config = make_config(tmp_path, tiny_dataset, {
        "tiledinfer": {"images_dir": str(large), "output_dir": "./tiled", "merged_dir": "./tiled_merged", "overlapping": 8},
    })
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    run_dir_for(cfg).model_dir.mkdir(parents=True)
    save_checkpoint(run_dir_for(cfg).best, {"model": model.state_dict(), "config": config_to_ini(cfg), "epoch": 0})
    return config


def test_tiled_cli_writes_masks_at_the_original_size(checkpointed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = checkpointed.parent
    assert run_cli(monkeypatch, "infer", str(checkpointed), "--tiled", "--quiet", "--tta") == 0
    for name, (h, w) in SIZES.items():
        mask = cv2.imread(str(root / "tiled" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w) and set(np.unique(mask).tolist()) <= {0, 255}
        assert cv2.imread(str(root / "tiled_merged" / f"{name}.png")).shape == (h, w, 3)
    plain = cv2.imread(str(root / "tiled" / "big.png"), cv2.IMREAD_UNCHANGED)
    assert run_cli(monkeypatch, "infer", str(checkpointed), "--tiled", "-q", "--tta", "--output", str(root / "anded"),
                   "--set", "tiledinfer.bitwise_blending=True") == 0
    anded = cv2.imread(str(root / "anded" / "big.png"), cv2.IMREAD_UNCHANGED)
    assert not (anded & ~plain).any()  # AND with the whole-image mask only removes foreground


def test_overlap_of_a_whole_tile_is_a_config_error(checkpointed: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    capsys.readouterr()
    assert run_cli(monkeypatch, "infer", str(checkpointed), "--tiled", "-q", "--set", "tiledinfer.overlapping=32") == 2
    out = capsys.readouterr().err.strip().splitlines()
    assert len(out) == 1 and "test.config [tiledinfer] overlapping = 32: must be smaller than the tile size 32" in out[0]


def test_resume_keeps_masks_made_with_the_same_weights_and_reports_unreadable_files(checkpointed: Path) -> None:
    cfg = load_config(checkpointed)
    images = Path(cfg.tiledinfer.images_dir)
    (images / "broken.png").write_bytes(b"not a png")
    first = infer_from_config(cfg, quiet=True, tiled=True)
    assert len(first.written) == 3 and len(first.skipped) == 1 and "broken.png" in first.skipped[0]
    stamps = {p.name: p.stat().st_mtime_ns for p in first.written}
    again = infer_from_config(cfg, quiet=True, tiled=True, resume=True)
    assert (len(again.written), len(again.resumed)) == (0, 3)
    assert {p.name: p.stat().st_mtime_ns for p in first.written} == stamps
    # the same weights saved again (a newer file, same bytes): still kept; the manifest knows what made each mask
    best = run_dir_for(cfg).best
    later = max(stamps.values()) / 1e9 + 5
    os.utime(best, (later, later))
    kept = infer_from_config(cfg, quiet=True, tiled=True, resume=True)
    assert (len(kept.written), len(kept.resumed)) == (0, 3)
    # new weights: every mask is made again, and a note says so
    torch.manual_seed(1)
    save_checkpoint(best, {"model": build_model(cfg.model).state_dict(), "config": config_to_ini(cfg), "epoch": 1})
    redone = infer_from_config(cfg, quiet=True, tiled=True, resume=True)
    assert (len(redone.written), len(redone.resumed)) == (3, 0)
    assert any("3 masks made earlier with other settings" in n for n in redone.notes), redone.notes


def _csv(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_resume_merges_objects_and_redoes_masks_made_with_other_settings(checkpointed: Path) -> None:
    cfg = load_config(checkpointed)
    out = Path(cfg.infer.output_dir)
    first = infer_from_config(cfg, quiet=True)
    objects, counts = _csv(out / "objects.csv"), _csv(out / "counts.csv")
    assert len(first.written) == 4 and len(counts) == 5 and len(objects) > 1  # header + one row per image / object
    # a finished pass resumed: nothing redone, objects.csv and counts.csv keep every row (they were truncated to the
    # header: only the pass's own rows were written)
    again = infer_from_config(cfg, quiet=True, resume=True)
    assert (len(again.written), len(again.resumed)) == (0, 4)
    assert (_csv(out / "objects.csv"), _csv(out / "counts.csv")) == (objects, counts)
    # killed before the tables were written, and two masks lost: the journal gives the kept masks' rows
    for name in ("objects.csv", "counts.csv", "img_001.png"):
        (out / name).unlink()
    (Path(cfg.infer.merged_dir) / "img_002.png").unlink()
    partial = infer_from_config(cfg, quiet=True, resume=True)
    assert sorted(p.name for p in partial.written) == ["img_001.png", "img_002.png"] and len(partial.resumed) == 2
    assert (_csv(out / "objects.csv"), _csv(out / "counts.csv")) == (objects, counts)
    # another threshold shapes other masks: every mask is made again, with a note
    stricter = load_config(checkpointed, ["infer.threshold=0.9"])
    redone = infer_from_config(stricter, quiet=True, resume=True)
    assert (len(redone.written), len(redone.resumed)) == (4, 0)
    assert any("4 masks made earlier with other settings" in n for n in redone.notes), redone.notes


def test_onnx_export_matches_torch_and_infers_the_same_masks(checkpointed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from flexunet.infer import OnnxModel
    from flexunet.runs.checkpoint import load_trained_model

    root = checkpointed.parent
    onnx = root / "model.onnx"
    assert run_cli(monkeypatch, "export", str(checkpointed), "--onnx", str(onnx), "-q") == 0
    model, _ = load_trained_model(run_dir_for(load_config(checkpointed)).best, torch.device("cpu"))
    session = OnnxModel(onnx)
    for shape in [(1, 3, 32, 32), (3, 3, 48, 64)]:  # dynamic batch and spatial axes
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert (model(x) - session(x)).abs().max().item() < 1e-4
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--output", str(root / "torch")) == 0
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--onnx", str(onnx), "--output", str(root / "ort")) == 0
    for path in sorted((root / "torch").glob("*.png")):
        expected, got = cv2.imread(str(path), 0), cv2.imread(str(root / "ort" / path.name), 0)
        assert (expected != got).mean() < 0.001  # a pixel at exactly the threshold may flip


def test_evaluate_onnx_gives_the_checkpoints_report_with_the_graph_in_the_provenance(
        checkpointed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    import hashlib
    import json

    root = checkpointed.parent
    onnx = root / "model.onnx"
    assert run_cli(monkeypatch, "export", str(checkpointed), "--onnx", str(onnx), "-q") == 0
    assert run_cli(monkeypatch, "evaluate", str(checkpointed), "-q", "--set", f"train.eval_dir={root / 'pt'}") == 0
    assert run_cli(monkeypatch, "evaluate", str(checkpointed), "-q", "--onnx", str(onnx),
                   "--set", f"train.eval_dir={root / 'ort'}") == 0
    torch_metrics = json.loads((root / "pt" / "metrics.json").read_text())
    onnx_metrics = json.loads((root / "ort" / "metrics.json").read_text())
    for name, values in torch_metrics["per_class"].items():
        assert abs(values["dice"] - onnx_metrics["per_class"][name]["dice"]) < 1e-3
    sha = hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert onnx_metrics["provenance"]["onnx"] == {"file": str(onnx), "sha256": sha}
    assert "onnx" not in torch_metrics["provenance"]
    assert f"(ONNX, sha256 {sha[:16]})" in (root / "ort" / "report.html").read_text()
    capsys.readouterr()
    assert run_cli(monkeypatch, "evaluate", str(checkpointed), "-q", "--onnx", str(root / "missing.onnx"),
                   "--set", f"train.eval_dir={root / 'none'}") == 2
    assert "missing.onnx: ONNX file not found" in capsys.readouterr().err and not (root / "none").exists()


def test_missing_onnxruntime_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flexunet.infer import OnnxModel

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(FlexunetError, match=r"onnxruntime is not installed; install the optional extra") as info:
        OnnxModel(tmp_path / "model.onnx")
    assert "\n" not in str(info.value)


def test_tiled_previews_during_training(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(tmp_path, tiny_dataset, {
        "train": {"epochs": 1, "epoch_change_tiled_infer": True, "epoch_change_tiled_infer_dir": "./tiled_previews"},
        "tiledinfer": {"overlapping": 8},
    })
    assert run_cli(monkeypatch, "train", str(config), "-q", "--device", "cpu") == 0
    previews = sorted((tmp_path / "tiled_previews").glob("Epoch_1_*.png"))
    assert [p.name for p in previews] == ["Epoch_1_img_000.png", "Epoch_1_img_001.png"]  # num_infer_images = 2
    assert cv2.imread(str(previews[0]), 0).shape == (32, 32)


class Calls(torch.nn.Module):
    """Runs `before(x)` then `inner(x)`: a spy (or a saboteur) in place of a child module."""

    def __init__(self, inner: torch.nn.Module, before) -> None:
        super().__init__()
        self.inner, self.before = inner, before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.before(x)
        return self.inner(x)


@pytest.mark.slow
def test_compiled_inference_matches_eager_and_pads_a_short_batch(checkpointed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flexunet.infer.compiled import CompiledForInference, cpu_compiler
    from flexunet.runs.checkpoint import load_trained_model

    if cpu_compiler() is None:
        pytest.skip("no C++ compiler for torch.compile's CPU backend")
    model, _ = load_trained_model(run_dir_for(load_config(checkpointed)).best, torch.device("cpu"))
    compiled = CompiledForInference(model)
    shapes: list[tuple[int, ...]] = []
    compiled.compiled = Calls(compiled.compiled, lambda x: shapes.append(tuple(x.shape)))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for batch in (x, x[:3]):  # the short last batch runs padded to 4: one graph, no recompilation
            out = compiled(batch)
            assert out.shape == (len(batch), 1, 32, 32)
            assert (out - model(batch)).abs().max().item() < 1e-4
        other = torch.rand(1, 3, 48, 48)  # another image size compiles its own graph, unpadded
        assert (compiled(other) - model(other)).abs().max().item() < 1e-4
    assert not compiled.failed and shapes == [(4, 3, 32, 32)] * 2 + [(1, 3, 48, 48)]
    with torch.no_grad():  # frozen weights are constants of the compiled graph: proof that freezing was applied
        before = compiled(x)
        for param in model.parameters():
            param.zero_()
        assert torch.equal(compiled(x), before) and not torch.equal(model(x), before)
    root = checkpointed.parent
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--output", str(root / "eager")) == 0
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--compile", "--output", str(root / "compiled")) == 0
    masks = sorted((root / "eager").glob("*.png"))
    assert masks
    for path in masks:
        assert (cv2.imread(str(path), 0) != cv2.imread(str(root / "compiled" / path.name), 0)).mean() < 0.001


def test_compile_falls_back_to_eager_with_a_note(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from flexunet.infer import compiled as compiled_module

    model = torch.nn.Conv2d(3, 1, 3, padding=1).eval()
    x = torch.rand(2, 3, 8, 8)
    monkeypatch.setattr(compiled_module.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert compiled_module.compile_for_inference(model, torch.device("cpu")) is model
    assert "no C++ compiler" in capsys.readouterr().out

    def broken(x: torch.Tensor) -> None:
        raise RuntimeError("inductor cannot lower this\nsecond line")

    def silent(x: torch.Tensor) -> None:
        raise AssertionError  # no message at all

    wrapper = compiled_module.CompiledForInference(model)
    wrapper.compiled = Calls(model, broken)
    with torch.no_grad():
        assert torch.equal(wrapper(x), model(x)) and wrapper.failed
    assert "failed (RuntimeError: inductor cannot lower this); running eagerly" in capsys.readouterr().out
    wrapper = compiled_module.CompiledForInference(model)
    wrapper.compiled = Calls(model, silent)
    with torch.no_grad():
        assert torch.equal(wrapper(x), model(x)) and wrapper.failed
    assert "failed (AssertionError: ); running eagerly" in capsys.readouterr().out


def test_compile_with_onnx_is_a_config_error(checkpointed: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    capsys.readouterr()
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--compile", "--onnx", "x.onnx") == 2
    assert "error: --compile: applies to PyTorch checkpoints, not --onnx" in capsys.readouterr().err
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q", "--set", "infer.compile=True", "--onnx", "x.onnx") == 2
    assert "[infer] compile: applies to PyTorch checkpoints" in capsys.readouterr().err


def test_cpu_inference_runs_channels_last_with_the_same_numbers(checkpointed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flexunet import predict as predict_module
    from flexunet.predict import for_inference
    from flexunet.runs.checkpoint import load_trained_model

    model, _ = load_trained_model(run_dir_for(load_config(checkpointed)).best, torch.device("cpu"))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(x)
        served = for_inference(model, torch.device("cpu"))
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in served.parameters() if p.dim() == 4)
        assert (served(x) - before).abs().max().item() < 1e-5
    layouts: list[bool] = []
    real = predict_module.forward_probs

    def spy(net: torch.nn.Module, batch: torch.Tensor, space: LabelSpace, tta: bool = False) -> torch.Tensor:
        layouts.append(next(p for p in net.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last))
        return real(net, batch, space, tta)

    monkeypatch.setattr(predict_module, "forward_probs", spy)
    assert run_cli(monkeypatch, "infer", str(checkpointed), "-q") == 0
    assert layouts and all(layouts)  # `flexunet infer` on the CPU runs the channels_last model


@pytest.mark.parametrize("pattern, stems", [("*/images/img_001.png", ["img_001", "img_001", "img_001"]),
                                            ("test/images/img_002.png", ["img_002"]),
                                            ("no_such/*.png", [])])
def test_epoch_previews_take_the_inputs_infer_takes(tmp_path: Path, tiny_dataset: Path, pattern: str,
                                                     stems: list[str]) -> None:
    """[infer] images_dir may be a glob or one file (list_image_files); previews read the same, not only folders."""
    from flexunet.train.preview import EpochPreview

    cfg = load_config(make_config(tmp_path, tiny_dataset, {
        "train": {"epoch_change_infer": True, "num_infer_images": 5},
        "infer": {"images_dir": str(tiny_dataset / pattern)}}))
    notes: list[str] = []
    preview = EpochPreview(cfg, tmp_path / "previews", notes.append)
    assert [stem for stem, _ in preview.images] == stems
    missing = f"note: test.config [infer] images_dir {tiny_dataset / pattern}: no such folder or file"
    assert notes == ([] if stems else [f"{missing}; per-epoch previews are off"])


def _graph(path: Path, out_channels: int, fixed: tuple[int, int] | None = None, nan: bool = False) -> Path:
    """A 1x1-conv ONNX graph from 3-channel images to `out_channels` logits; height and width free unless `fixed`."""
    conv = torch.nn.Conv2d(3, out_channels, 1)
    if nan:
        torch.nn.init.constant_(conv.bias, float("nan"))
    height, width = fixed or (32, 32)
    axes = {0: "batch"} if fixed else {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(conv.eval(), (torch.rand(1, 3, height, width),), str(path), dynamo=False, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": axes, "logits": axes})
    return path


THREE_CLASSES = {"model": {"num_classes": 3, "loss": "categorical_crossentropy"},
                 "mask": {"rgb_map": {(0, 0, 0): 0, (0, 255, 0): 1, (255, 0, 0): 2}}}


def test_infer_onnx_refuses_a_graph_of_other_classes_or_size(tmp_path: Path, tiny_dataset: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27: a 1-class graph under a 3-class config wrote all-background masks; a graph exported at a fixed size
    failed inside onnxruntime under another size. Both are one line, exit 2, before any mask is written."""
    pytest.importorskip("onnxruntime")
    one_class = _graph(tmp_path / "one.onnx", 1)
    config = make_config(tmp_path, tiny_dataset, THREE_CLASSES)
    assert run_cli(monkeypatch, "infer", str(config), "-q", "--onnx", str(one_class)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {one_class}: the graph outputs 1 class channel(s), test.config [model] num_classes = 3; "
                   "infer with the config it was trained with, or export this config's checkpoint"]
    assert not (tmp_path / "out").exists()
    fixed = _graph(tmp_path / "fixed.onnx", 1, fixed=(24, 24))
    config = make_config(tmp_path, tiny_dataset, {"tiledinfer": {"overlapping": 8}})
    for extra, fed in (([], "test.config [model] image_width x image_height = 32x32"),
                       (["--tiled"], "tiled inference feeds 32x32 tiles")):
        assert run_cli(monkeypatch, "infer", str(config), "-q", "--onnx", str(fixed), *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{fixed}: the graph was exported at a fixed 24x24 input, {fed}" in err[0], err
    # the same graph at its own size, and a graph with free height and width, run
    config = make_config(tmp_path, tiny_dataset, {"model": {"image_width": 24, "image_height": 24}})
    assert run_cli(monkeypatch, "infer", str(config), "-q", "--onnx", str(fixed)) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    config = make_config(tmp_path, tiny_dataset, THREE_CLASSES)
    assert run_cli(monkeypatch, "infer", str(config), "-q", "--onnx", str(_graph(tmp_path / "three.onnx", 3)),
                   "--output", str(tmp_path / "three")) == 0


def test_non_finite_logits_are_a_warning_naming_the_images(tmp_path: Path, tiny_dataset: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27: NaN logits from an ONNX file thresholded to all-background masks with no word."""
    pytest.importorskip("onnxruntime")
    config = make_config(tmp_path, tiny_dataset)
    assert run_cli(monkeypatch, "infer", str(config), "--onnx", str(_graph(tmp_path / "nan.onnx", 1, nan=True))) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: the model gave non-finite logits (NaN or inf) for 4 inputs: img_000.png, "
                        "img_001.png, img_002.png, img_003.png; their masks are not to be trusted (check the weights "
                        "or the ONNX file)"]
    assert run_cli(monkeypatch, "infer", str(config), "--onnx", str(_graph(tmp_path / "ok.onnx", 1)),
                   "--output", str(tmp_path / "ok")) == 0
    assert "warning:" not in capsys.readouterr().out
