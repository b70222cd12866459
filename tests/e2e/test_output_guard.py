"""Every verb and every output option, pointed at what a user could point it at by mistake (the config, the checkpoint,
an input image, an input folder, a folder of the user's own files), stops with exit 2 and leaves every file as it was,
with nothing added. The list of verbs and output options is read from the CLI itself, so a new verb or a new output
option without a case here fails `test_every_verb_and_output_option_is_covered`."""
from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_config, run_cli, save_random_checkpoint


def snapshot(root: Path) -> dict[str, str]:
    """Every file (and symlink) under `root`: its path -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "link"
            for p in sorted(root.rglob("*")) if (p.is_file() or p.is_symlink()) and "__pycache__" not in p.parts}


class Place:
    """The paths a test points outputs at, in one temporary tree."""

    def __init__(self, root: Path, data: Path, config: Path) -> None:
        self.root, self.data, self.config = root, data, config
        self.checkpoint = root / "models" / "best.pt"
        self.image = data / "train" / "images" / "img_000.png"
        self.input_folder = data / "train" / "images"
        self.user = root / "user"  # the user's own folder: their files, with the names flexunet's outputs have

    def files(self) -> dict[str, Path]:
        """File targets: what a file option (--onnx, --out, --json, --plot, ...) may be pointed at."""
        return {"config": self.config, "checkpoint": self.checkpoint, "input image": self.image}

    def folders(self) -> dict[str, Path]:
        """Folder targets, for folder options (--output, model_dir, OUT, ...)."""
        return {"config": self.config, "checkpoint": self.checkpoint, "input image": self.image,
                "input folder": self.input_folder, "user folder": self.user}


USER_FILES = ["img_000.png", "img_001.png", "objects.csv", "counts.csv", "evaluation.csv", "per_image.csv",
              "metrics.json", "report.html", "split.csv", "train_eval_infer.config", "demo.config", "model.onnx",
              "model.int8.onnx", "summary.txt", "graph.png", "preview.png", "doctor.json", "stats.png", "notes.docx"]


@pytest.fixture
def place(tmp_path: Path, tiny_dataset: Path) -> Place:
    config = make_config(tmp_path, tiny_dataset)
    save_random_checkpoint(config)
    user = tmp_path / "user"
    (user / "images").mkdir(parents=True)
    for name in USER_FILES:
        (user / name).write_bytes(f"the user's own {name}\n".encode())
    (user / "images" / "cell_0000.png").write_bytes(b"the user's own image")
    return Place(tmp_path, tiny_dataset, config)


Args = Callable[[Place, Path], list[str]]
# (verb, option, kind of target, the command line pointing that option at the target)
CASES: list[tuple[str, str, str, Args]] = [
    ("train", "model_dir", "folder", lambda p, t: ["train", str(p.config), "--set", f"train.model_dir={t}"]),
    ("train", "eval_dir", "folder", lambda p, t: ["train", str(p.config), "--set", f"train.eval_dir={t}"]),
    ("train", "epoch_change_infer_dir", "folder",
     lambda p, t: ["train", str(p.config), "--set", f"train.epoch_change_infer_dir={t}"]),
    ("evaluate", "eval_dir", "folder", lambda p, t: ["evaluate", str(p.config), "--set", f"train.eval_dir={t}"]),
    ("infer", "output", "folder", lambda p, t: ["infer", str(p.config), "--output", str(t)]),
    ("infer", "merged", "folder", lambda p, t: ["infer", str(p.config), "--merged", str(t)]),
    ("infer", "output", "folder", lambda p, t: ["infer", str(p.config), "--output", str(t), "--instances"]),
    ("infer", "output", "folder", lambda p, t: ["infer", str(p.config), "--output", str(t), "--resume"]),
    ("export", "onnx", "file", lambda p, t: ["export", str(p.config), "--onnx", str(t)]),
    ("export", "onnx", "file", lambda p, t: ["export", str(p.config), "--onnx", str(t), "--int8"]),
    ("export", "onnx", "folder", lambda p, t: ["export", str(p.config), "--onnx", str(t)]),
    ("demo", "out", "folder", lambda p, t: ["demo", "--out", str(t), "--epochs", "1"]),
    ("augment", "out", "file", lambda p, t: ["augment", str(p.config), "--preview", "2", "--out", str(t)]),
    ("augment", "offline", "folder", lambda p, t: ["augment", str(p.config), "--offline", str(t)]),
    ("inspect", "out", "file", lambda p, t: ["inspect", str(p.config), "--out", str(t)]),
    ("inspect", "graph", "file", lambda p, t: ["inspect", str(p.config), "--graph", str(t)]),
    ("split", "out", "folder", lambda p, t: ["split", str(p.data / "train" / "images"), str(p.data / "train" / "masks"),
                                            str(t)]),
    ("split", "out", "folder", lambda p, t: ["split", str(p.data / "train" / "images"), str(p.data / "train" / "masks"),
                                            str(t), "--files", "copy"]),
    ("stats", "plot", "file", lambda p, t: ["stats", str(p.data), "--plot", str(t)]),
    ("init", "out", "file", lambda p, t: ["init", str(p.data), "--out", str(t)]),
    ("doctor", "json_out", "file", lambda p, t: ["doctor", str(p.config), "--json", str(t)]),
    ("doctor", "json_out", "file", lambda p, t: ["doctor", str(p.data), "--json", str(t)]),
]


def _prepare(name: str) -> Args:
    return lambda p, t: ["prepare", name, str(p.data / "train"), str(t)]


CASES += [(f"prepare {name}", "out_dir", "folder", _prepare(name))
          for name in ("herlev", "sipakmed", "isic", "ucsb", "generic")]

# the file each file option is pointed at inside the user's folder (an existing file of theirs)
USER_FILE_FOR = {"onnx": "model.onnx", "out": "summary.txt", "graph": "graph.png", "plot": "stats.png",
                 "json_out": "doctor.json"}
# options that name something the command reads, not writes
INPUT_OPTIONS = {"config", "checkpoint", "images", "onnx@infer", "onnx@evaluate", "doctor", "raw_dir", "images_dir", "masks_dir",
                 "dataset", "target", "data@init"}


def targets(place: Place, option: str, kind: str) -> dict[str, Path]:
    if kind == "folder":
        return place.folders()
    found = place.files()
    found["user's file"] = place.user / USER_FILE_FOR.get(option, "notes.docx")
    if option == "out":  # augment --preview writes <out>.png
        found["user's png"] = place.user / "preview.png"
    return found


@pytest.mark.parametrize("verb, option, kind, args", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{i}"
                                                                 for i, c in enumerate(CASES)])
def test_an_output_pointed_at_what_the_user_has_writes_nothing(place: Place, verb: str, option: str, kind: str,
                                                               args: Args, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(place.root)
    quiet = ["-q"] if verb in {"evaluate", "infer", "export", "augment", "inspect", "demo", "train"} else []
    for label, target in targets(place, option, kind).items():
        if verb.startswith("prepare") and label == "input folder":
            target = place.data / "train"  # the RAW folder itself
        # what the command reads stays refused with --overwrite, which only opts in to replacing a user's files (a
        # command that is not given the config does not read it: there it is a user's file like any other)
        read = "user" not in label and (label != "config" or str(place.config) in args(place, place.user))
        for extra in ([[], ["--overwrite"]] if verb != "train" and read else [[]]):
            before = snapshot(place.root)
            code = run_cli(monkeypatch, *args(place, target), *quiet, *extra)
            err = capsys.readouterr().err
            what = f"{verb} {option} -> {label} {target} {' '.join(extra)}"
            assert code == 2, f"{what}: exit {code}\n{err}"
            assert err.startswith("error: ") and "Traceback" not in err, f"{what}: {err}"
            assert snapshot(place.root) == before, f"{what} changed files\n{err}"


def _output_options(command: typing.Any, name: str) -> set[str]:
    """The Path-valued parameters of a CLI verb's function that are not inputs."""
    hints = typing.get_type_hints(command.callback, include_extras=True)
    found = set()
    for param in inspect.signature(command.callback).parameters:
        text = repr(hints.get(param))
        if "Path" in text and param not in INPUT_OPTIONS and f"{param}@{name}" not in INPUT_OPTIONS:
            found.add(param)
    return found


def test_every_verb_and_output_option_is_covered() -> None:
    from flexunet.cli import app, prepare_app

    verbs = {command.name or command.callback.__name__: command for command in app.registered_commands}
    verbs |= {f"prepare {command.name}": command for command in prepare_app.registered_commands}
    covered = {(verb, option) for verb, option, _, _ in CASES}
    config_options = {("train", "model_dir"), ("train", "eval_dir"), ("train", "epoch_change_infer_dir"),
                      ("evaluate", "eval_dir")}  # folders named by the config, pointed at with --set
    for name, command in verbs.items():
        options = {(name, option) for option in _output_options(command, name)}
        assert options <= covered, f"{name}: output options without a case: {options - covered}"
        assert any(verb == name for verb, _ in covered | config_options), f"verb {name} has no case"
