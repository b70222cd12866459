"""The hostile-user matrix of issue 27, re-runnable against any flexunet source tree.

    python benchmarks/hostile.py --tree PATH [--label before-2dfe1db] [--out results.json] [--only CASE ...]

Every case runs `python -m flexunet ...` (this interpreter, PYTHONPATH=PATH) in a fresh temp folder holding its own
tiny fixtures: a 32x32 binary disc dataset (train/valid/test), a tiny FlexUNet config, a checkpoint made once by
`flexunet train` (epochs 1) and copied in, ONNX graphs crafted with the onnx helper API, and a folder of user files.
Before the case's hostile command(s) every file in the case folder is hashed (sha256); afterwards each case is
classified from what the commands did:

    data_lost  a file that existed before is changed or gone (except the few files the case names as legitimately
               updated), or a case-specific loss (objects.csv rows dropped by --resume, a training's history.csv
               gone, a checkpoint left unreadable)
    traceback  "Traceback" in stderr, or an exit code outside {0, 1, 2} (a signal, or a kill at the case's timeout:
               then also flagged "timeout")
    silent     the silent-wrong-result cases: the outcome checked on the files written is wrong and nothing said so
    ok         none of the above
    skipped    the case cannot run on this machine (the reason is recorded)
    setup_failed  a preparatory command of the case failed, so the hostile step says nothing

Nothing is hard-coded: every class comes from the commands' exit codes, stderr and files. Results go to
benchmarks/results/hostile-<label>.json (or --out) with the machine, the tree's git commit and the date.
"""
# no `from __future__ import annotations`: the dataclasses below are built while the benchmarks import test loads
# this file without registering it in sys.modules, where string annotations break dataclass()
import argparse
import csv
import datetime as dt
import fnmatch
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NOBODY = 65534
# Two ways to run a command that file permissions bind (root ignores them): as nobody, or, where nobody cannot reach
# the interpreter (e.g. a pyenv Python under /root, mode 700), as root with the capabilities that bypass permission
# checks dropped from the bounding set (a 0555 folder then refuses writes to its owner too).
NOBODY_PREFIX = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
NO_DAC_PREFIX = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
GiB = 1 << 30
AS_LIMIT = 8 * GiB  # address-space cap for the cases that try to allocate without bound
DEFAULT_TIMEOUT = 150


# ----------------------------------------------------------------------------------------------------- fixtures
def write_disc_pairs(folder: Path, count: int, size: int = 32, seed: int = 0) -> None:
    """`count` image/mask pairs: a bright noisy disc on a dark noisy background; masks 0/255 grey (as conftest)."""
    import cv2

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
        cv2.circle(mask, (int(cx), int(cy)), int(rng.integers(size // 8, size // 4)), 255, -1)
        image = np.where(mask[..., None] > 0, 200, 40) + rng.normal(0, 12, (size, size, 3))
        cv2.imwrite(str(folder / "images" / f"img_{i:03d}.png"), image.clip(0, 255).astype(np.uint8))
        cv2.imwrite(str(folder / "masks" / f"img_{i:03d}.png"), mask)


def config_text(sections: dict[str, dict[str, object]] | None = None) -> str:
    """A seed-format config for a tiny binary FlexUNet on ./data (paths relative to the case folder)."""
    values: dict[str, dict[str, object]] = {
        "model": {"image_width": 32, "image_height": 32, "num_classes": 1, "base_filters": 8, "num_layers": 3,
                  "dropout_rate": 0.0, "learning_rate": 0.01, "clipvalue": 0.5, "loss": "bce_dice_loss",
                  "metrics": ["iou_coef"]},
        "train": {"epochs": 1, "batch_size": 4, "patience": 10, "model_dir": "./models", "eval_dir": "./eval",
                  "images_dir": "data/train/images", "masks_dir": "data/train/masks",
                  "metrics": ["iou_coef", "val_iou_coef"], "num_infer_images": 2},
        "valid": {"images_dir": "data/valid/images", "masks_dir": "data/valid/masks"},
        "test": {"images_dir": "data/test/images", "masks_dir": "data/test/masks"},
        "infer": {"images_dir": "data/test/images", "output_dir": "./out", "merged_dir": "./merged"},
    }
    for section, entries in (sections or {}).items():
        values.setdefault(section, {}).update(entries)
        values[section] = {k: v for k, v in values[section].items() if v is not None}
    lines = []
    for section, entries in values.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value!r}" for key, value in entries.items()]
    return "\n".join(lines) + "\n"


def const_onnx(path: Path, logits: np.ndarray, fixed_input: tuple[int, int, int, int] | None = None) -> Path:
    """An ONNX graph input (N, 3, H, W) -> logits (N, C, h, w) = the constant `logits` (C, h, w) + 0 * sum(input):
    the output does not depend on the image, so a case knows exactly what the model says."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    in_shape = list(fixed_input) if fixed_input else ["N", 3, "H", "W"]
    const = numpy_helper.from_array(logits[None].astype(np.float32), "logits_const")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
    nodes = [helper.make_node("ReduceSum", ["input", "axes"], ["s"], keepdims=1),
             helper.make_node("Mul", ["s", "zero"], ["z"]),
             helper.make_node("Add", ["z", "logits_const"], ["logits"])]
    graph = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
                              initializer=[const, zero, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def ramp_logits(size: int = 32) -> np.ndarray:
    """(1, size, size) logits rising left to right: foreground right of the middle at threshold 0.5, right of
    ~3/4 at threshold 0.9; one object per image."""
    x = np.arange(size, dtype=np.float32)
    return np.broadcast_to((x - size / 2 + 0.5) / 4, (size, size))[None].copy()


def two_class_specks(size: int = 32) -> np.ndarray:
    """(3, size, size) logits: background 0; a 64 px class-1 speck whose runner-up is background, and a 100 px
    class-2 speck whose runner-up is class 1 (so a class-2 pixel removed by [postprocess] falls to class 1)."""
    out = np.zeros((3, size, size), np.float32)
    out[1, 2:10, 2:10], out[2, 2:10, 2:10] = 5, -5
    out[2, 20:30, 20:30], out[1, 20:30, 20:30] = 5, 4
    out[1][out[1] == 0], out[2][out[2] == 0] = -5, -5
    return out


def lying_tiff(path: Path, width: int = 100000, height: int = 65535, tile: int = 1024) -> Path:
    """A little-endian tiled RGB TIFF whose header claims width x height; every tile points at one deflated black
    tile, so the file is a few hundred KB."""
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    n = tiles_x * tiles_y
    data = zlib.compress(bytes(tile * tile * 3), 9)
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, None), (259, 3, 1, 8), (262, 3, 1, 2),
               (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile), (324, 4, n, None),
               (325, 4, n, None)]
    ifd_at = 8
    ifd_size = 2 + 12 * len(entries) + 4
    bps_at = ifd_at + ifd_size
    offsets_at = bps_at + 6
    counts_at = offsets_at + 4 * n
    data_at = counts_at + 4 * n
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at))
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            out += struct.pack("<HHII", tag, typ, count, bps_at)
        elif tag == 324:
            out += struct.pack("<HHII", tag, typ, count, offsets_at)
        elif tag == 325:
            out += struct.pack("<HHII", tag, typ, count, counts_at)
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    out += struct.pack("<HHH", 8, 8, 8)
    out += struct.pack(f"<{n}I", *([data_at] * n))
    out += struct.pack(f"<{n}I", *([len(data)] * n))
    out += data
    path.write_bytes(bytes(out))
    return path


def safetensors_variants() -> dict[str, bytes]:
    """Malformed .safetensors bodies: the ways a download or a hand-made file goes wrong."""
    def with_header(header: bytes, body: bytes = b"") -> bytes:
        return struct.pack("<Q", len(header)) + header + body
    good = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    return {
        "empty": b"",
        "garbage": bytes(range(256)) * 4,
        "huge_header_len": struct.pack("<Q", 1 << 60) + b"{}",
        "bad_json": with_header(b"{not json", b""),
        "truncated_data": with_header(good, b"\x00" * 4),
        "unknown_dtype": with_header(json.dumps({"w": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}})
                                     .encode(), b"\x00" * 8),
        "header_not_dict": with_header(b"[1, 2, 3]"),
        "text": b"these are not weights\n",
    }


# -------------------------------------------------------------------------------------------------- the harness
@dataclass
class Step:
    """One command. `args`: flexunet arguments, or `shell`: a bash -c line where {flexunet} is the command."""

    args: list[str] | None = None
    shell: str | None = None
    background: bool = False
    timeout: int = DEFAULT_TIMEOUT
    as_limit: int | None = None
    unprivileged: list[str] | None = None  # a command prefix (NOBODY_PREFIX / NO_DAC_PREFIX)
    wait_for: str | None = None  # (background steps) a path relative to the case folder to wait for before going on

    def describe(self) -> str:
        who = "[unprivileged] " if self.unprivileged else ""
        if self.shell is not None:
            return who + self.shell.replace("{flexunet}", "flexunet")
        return who + "flexunet " + " ".join(repr(a) if (not a or any(c in a for c in " \x00'\"")) else a
                                            for a in self.args or [])


@dataclass
class Plan:
    """What a case runs: setup steps (not judged for data loss), then the hostile steps (judged)."""

    steps: list[Step]
    setup: list[Step] = field(default_factory=list)
    after_setup: Callable[[Path], None] | None = None  # e.g. delete objects.csv to simulate a kill
    allowed: list[str] = field(default_factory=list)  # glob patterns (relative) the command may legitimately update
    check: Callable[[Path, dict], tuple[str | None, str]] | None = None  # -> (class or None, note)
    skip: str | None = None
    world_readable: bool = False


@dataclass
class Case:
    name: str
    group: str
    about: str
    build: Callable[[Path, dict], Plan]


def snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                with open(path, "rb") as fh:
                    if path.stat().st_size > 1 << 30:  # a sparse giant: hash its size and first MiB
                        out[str(path.relative_to(folder))] = f"size:{path.stat().st_size}:" + \
                            hashlib.sha256(fh.read(1 << 20)).hexdigest()
                    else:
                        digest = hashlib.sha256()
                        for block in iter(lambda: fh.read(1 << 20), b""):
                            digest.update(block)
                        out[str(path.relative_to(folder))] = digest.hexdigest()
            except OSError as exc:
                out[str(path.relative_to(folder))] = f"unreadable:{exc.errno}"
    return out


def limits(as_limit: int | None) -> Callable[[], None]:
    def apply() -> None:
        if as_limit:
            resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    return apply


class Runner:
    def __init__(self, tree: Path, work: Path) -> None:
        self.tree, self.work = tree, work
        self.home = work / "home"
        self.home.mkdir(exist_ok=True)
        os.chmod(self.home, 0o777)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PYTHONPATH=str(self.tree), PYTHONDONTWRITEBYTECODE="1", HOME=str(self.home),
                   MPLCONFIGDIR=str(self.home / "mpl"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env.pop("FLEXUNET_DEVICE", None)
        return env

    def command(self, step: Step) -> list[str]:
        flexunet = [sys.executable, "-m", "flexunet"]
        if step.shell is not None:
            line = step.shell.replace("{flexunet}", " ".join(flexunet))
            cmd = ["bash", "-c", line]
        else:
            cmd = flexunet + list(step.args or [])
        if step.unprivileged:
            cmd = step.unprivileged + cmd
        return cmd

    def start(self, step: Step, cwd: Path) -> tuple[subprocess.Popen, float]:
        proc = subprocess.Popen(self.command(step), cwd=cwd, env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=limits(step.as_limit))
        return proc, time.monotonic()

    @staticmethod
    def finish(step: Step, proc: subprocess.Popen, started: float) -> dict:
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, step.timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            timed_out = True
        text_err = stderr.decode("utf-8", "replace")
        text_out = stdout.decode("utf-8", "replace")
        lines = [line for line in text_err.strip().splitlines() if line.strip()]
        rc = proc.returncode
        return {"command": step.describe(), "exit_code": rc, "timed_out": timed_out,
                "seconds": round(time.monotonic() - started, 1),
                "stderr_last_line": (lines[-1][:400] if lines else ""),
                "traceback": "Traceback" in text_err or rc not in (0, 1, 2),
                "_stderr": text_err, "_stdout": text_out}

    def run_steps(self, steps: list[Step], cwd: Path) -> list[dict]:
        results: list[dict] = []
        background: list[tuple[Step, subprocess.Popen, float]] = []
        for step in steps:
            proc, started = self.start(step, cwd)
            if step.background:
                background.append((step, proc, started))
                if step.wait_for:
                    deadline = time.monotonic() + 90
                    while not (cwd / step.wait_for).exists() and proc.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.2)
                continue
            results.append(self.finish(step, proc, started))
        for step, proc, started in background:
            row = self.finish(step, proc, started)
            row["background"] = True
            results.append(row)
        return results


def changed_files(before: dict[str, str], after: dict[str, str], allowed: list[str]) -> tuple[list[str], list[str]]:
    """(lost: files changed or gone and not allowed, allowed_changed)."""
    lost, legit = [], []
    for name, digest in before.items():
        if after.get(name) == digest:
            continue
        # flexunet's own bookkeeping (.flexunet-files manifests, .flexunet-objects.<rank>.jsonl journals, locks and
        # run markers) is written by every run into the folders it writes: never a user's file
        own = Path(name).name.startswith(".flexunet-")
        (legit if own or any(fnmatch.fnmatch(name, pat) for pat in allowed) else lost).append(
            f"{name} ({'gone' if name not in after else 'changed'})")
    return lost, legit


def run_case(runner: Runner, case: Case, fixtures: dict) -> dict:
    row: dict = {"case": case.name, "group": case.group, "about": case.about}
    cwd = runner.work / case.name
    cwd.mkdir()
    try:
        plan = case.build(cwd, fixtures)
    except Exception as exc:  # a fixture this machine cannot make
        plan = Plan(steps=[], skip=f"fixture could not be made: {type(exc).__name__}: {exc}")
    if plan.skip:
        row.update(classification="skipped", reason=plan.skip, commands=[])
        return row
    if plan.world_readable:
        for path in [cwd, *cwd.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, (path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0)))
    setup = runner.run_steps(plan.setup, cwd) if plan.setup else []
    state: dict = {"setup": setup}
    bad = [r for r in setup if r["exit_code"] != 0 or r["traceback"]]
    if bad:
        row.update(classification="setup_failed", reason=f"setup step failed: {bad[0]['command']}: "
                   f"{bad[0]['stderr_last_line']}", commands=[strip(r) for r in setup])
        return row
    if plan.after_setup:
        plan.after_setup(cwd)
    state["cwd"] = cwd
    state["before_rows"] = {}
    before = snapshot(cwd)
    state["before"] = before
    results = runner.run_steps(plan.steps, cwd)
    state["results"] = results
    after = snapshot(cwd)
    lost, legit = changed_files(before, after, plan.allowed)
    note_check, check_class = "", None
    if plan.check:
        check_class, note_check = plan.check(cwd, state)
    tracebacks = [r for r in results if r["traceback"]]
    flags = []
    if lost:
        flags.append("data_lost")
    if check_class == "data_lost" and "data_lost" not in flags:
        flags.append("data_lost")
    if tracebacks:
        flags.append("traceback")
    timed_out = [r for r in results if r["timed_out"]]
    if timed_out:  # classified as traceback above (killed: exit code outside {0, 1, 2}); flagged so it is visible
        flags.append("timeout")
        note_check = (f"killed after {timed_out[0]['seconds']} s (timeout); " + note_check).rstrip("; ")
    if check_class == "silent":
        flags.append("silent")
    if check_class == "setup_failed":
        flags.append("setup_failed")
    row.update(classification=flags[0] if flags else "ok", flags=flags, lost_files=lost[:20],
               lost_count=len(lost), allowed_changed=legit[:20], check_note=note_check,
               allowed_patterns=plan.allowed, commands=[strip(r) for r in setup + results])
    return row


def strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def said(state: dict, pattern: str) -> bool:
    """Whether any hostile step's stdout or stderr matches the regex `pattern` (case-insensitive), the case
    folder's own path (which holds the case's name) left out."""
    text = " ".join(r["_stderr"] + r["_stdout"] for r in state["results"]).replace(str(state["cwd"]), "<case>")
    return re.search(pattern, text, re.IGNORECASE) is not None


def csv_rows(path: Path) -> int | None:
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        return max(sum(1 for _ in csv.reader(fh)) - 1, 0)


def mask_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("img_*.png")) if folder.is_dir() else []


# ------------------------------------------------------------------------------------------------------ the cases
def base_case(cwd: Path, fx: dict, config: dict | None = None, models: bool = True, user: dict | None = None,
              eval_dir: bool = False) -> Path:
    """data/, test.config (with `config` overrides), models/ (the trained checkpoint), and user/ files."""
    shutil.copytree(fx["data"], cwd / "data")
    if models:
        shutil.copytree(fx["models"], cwd / "models")
    if eval_dir:
        shutil.copytree(fx["eval"], cwd / "eval")
    (cwd / "test.config").write_text(config_text(config))
    if user is not None:
        (cwd / "user").mkdir()
        for name, text in user.items():
            (cwd / "user" / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return cwd / "test.config"


USER_FILES = {"notes.txt": "my lab notes, not flexunet's\n", "img_000.png": b"\x89PNG my own mask, keep it\n"}
IMG = "data/train/images/img_000.png"
CASES: list[Case] = []


def case(name: str, group: str, about: str):
    def register(build: Callable[[Path, dict], Plan]):
        CASES.append(Case(name, group, about, build))
        return build
    return register


# --- D1: a writer pointed at the weights, the config or a training image
for _name, _verb, _target, _extra in [
        ("d1_export_onto_best_pt", "export", "models/best.pt", ["--onnx"]),
        ("d1_export_onto_config", "export", "test.config", ["--onnx"]),
        ("d1_export_onto_train_image", "export", IMG, ["--onnx"]),
        ("d1_export_int8_onto_train_image", "export", IMG, ["--int8", "--onnx"]),
        ("d1_inspect_out_onto_config", "inspect", "test.config", ["--out"]),
        ("d1_inspect_out_onto_train_image", "inspect", IMG, ["--out"]),
        ("d1_doctor_json_onto_config", "doctor", "test.config", ["--json"]),
        ("d1_doctor_json_onto_train_image", "doctor", IMG, ["--json"]),
        ("d1_augment_preview_onto_train_image", "augment", IMG, ["--preview", "2", "--out"])]:
    def _build(cwd: Path, fx: dict, verb=_verb, target=_target, extra=_extra) -> Plan:
        base_case(cwd, fx)
        return Plan(steps=[Step([verb, "test.config", *extra, target])])
    case(_name, "D1", f"`{_verb} {' '.join(_extra)} {_target}`: a writer aimed at a file the run reads")(_build)


# --- D2: writers into a user's folder
@case("d2_evaluate_into_user_folder", "D2",
      "evaluate with eval_dir = a folder holding the user's metrics.json/report.html")
def _d2_eval(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, user={"metrics.json": '{"mine": 1}\n', "report.html": "<p>my report</p>\n",
                             "notes.txt": "notes\n"})
    return Plan(steps=[Step(["evaluate", "test.config", "--device", "cpu", "-q", "--set", "train.eval_dir=user"])])


@case("d2_infer_output_into_user_folder", "D2", "infer --output a non-empty user folder with a same-named file")
def _d2_infer_out(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, user=USER_FILES)
    return Plan(steps=[Step(["infer", "test.config", "--device", "cpu", "-q", "--output", "user"])])


@case("d2_infer_merged_into_user_folder", "D2", "infer --merged a non-empty user folder with a same-named file")
def _d2_infer_merged(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, user=USER_FILES)
    return Plan(steps=[Step(["infer", "test.config", "--device", "cpu", "-q", "--merged", "user"])])


@case("d2_split_over_user_split_csv", "D2", "split into a folder holding the user's own split.csv")
def _d2_split(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, models=False, user={"split.csv": "image,split\nmine.png,train\n"})
    return Plan(steps=[Step(["split", "data/train/images", "data/train/masks", "user"])])


# --- D3
@case("d3_prepare_generic_into_user_folder", "D3", "prepare generic RAW into a user folder with split.csv/config")
def _d3(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, models=False, user={"split.csv": "image,split\nmine.png,train\n",
                                           "train_eval_infer.config": "[model]\n# mine\n", "notes.txt": "n\n"})
    return Plan(steps=[Step(["prepare", "generic", "data/train", "user"])])


# --- D4 and S2: --resume
def _onnx_infer(onnx: str, *extra: str) -> list[str]:
    return ["infer", "test.config", "--device", "cpu", "-q", "--onnx", onnx, *extra]


def _rows_check(cwd: Path, state: dict) -> tuple[str | None, str]:
    full = state["full_rows"]
    now = csv_rows(cwd / "out" / "objects.csv")
    note = f"objects.csv rows: full pass {full}, after --resume {now}"
    if full is None or full == 0:
        return "setup_failed", note + " (the first pass found no objects: nothing to lose)"
    return ("data_lost" if now is None or now < full else None), note


def _d4_plan(cwd: Path, fx: dict, kill: bool) -> Plan:
    base_case(cwd, fx, models=False)
    const_onnx(cwd / "ramp.onnx", ramp_logits())
    state_rows: dict = {}

    def after_setup(folder: Path) -> None:
        state_rows["n"] = csv_rows(folder / "out" / "objects.csv")
        if kill:  # a kill -9 after the masks, before the tables
            for name in ("objects.csv", "counts.csv"):
                (folder / "out" / name).unlink(missing_ok=True)

    def check(folder: Path, state: dict) -> tuple[str | None, str]:
        state["full_rows"] = state_rows.get("n")
        return _rows_check(folder, state)
    return Plan(setup=[Step(_onnx_infer("ramp.onnx"))], after_setup=after_setup,
                steps=[Step(_onnx_infer("ramp.onnx", "--resume"))],
                allowed=["out/objects.csv", "out/counts.csv"], check=check)


case("d4_resume_after_finished_pass", "D4", "infer --resume after a finished pass: objects.csv rows kept?")(
    lambda cwd, fx: _d4_plan(cwd, fx, kill=False))
case("d4_resume_after_kill", "D4", "infer --resume after a kill (objects.csv/counts.csv deleted): rows of kept "
     "masks back?")(lambda cwd, fx: _d4_plan(cwd, fx, kill=True))


@case("s2_resume_after_threshold_change", "S2", "infer --resume with another [infer] threshold keeps old masks?")
def _s2(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, models=False)
    const_onnx(cwd / "ramp.onnx", ramp_logits())
    new = ["--set", "infer.threshold=0.9"]
    kept: dict = {}

    def after_setup(folder: Path) -> None:
        kept["old"] = {p.name: p.read_bytes() for p in mask_files(folder / "out")}
        kept["fresh"] = {p.name: p.read_bytes() for p in mask_files(folder / "fresh")}
        shutil.rmtree(folder / "fresh")
        shutil.rmtree(folder / "fresh_merged", ignore_errors=True)

    def check(folder: Path, state: dict) -> tuple[str | None, str]:
        old, fresh = kept["old"], kept["fresh"]
        differ = [n for n in old if fresh.get(n) != old[n]]
        if not old or not differ:
            return "setup_failed", f"{len(old)} masks; threshold 0.9 changes {len(differ)} of them: inconclusive"
        now = {p.name: p.read_bytes() for p in mask_files(folder / "out")}
        stale = [n for n in differ if now.get(n) == old[n]]
        return ("silent" if stale else None), (f"{len(stale)} of {len(differ)} masks that threshold 0.9 changes "
                                               "kept their threshold-0.5 content after --resume")
    return Plan(setup=[Step(_onnx_infer("ramp.onnx")),
                       Step(_onnx_infer("ramp.onnx", "--output", "fresh", "--merged", "fresh_merged", *new))],
                after_setup=after_setup, steps=[Step(_onnx_infer("ramp.onnx", "--resume", *new))],
                allowed=["out/img_*.png", "out/objects.csv", "out/counts.csv", "merged/*"], check=check)


# --- D5: two trainings, one eval_dir
A_EPOCHS = 40


@case("d5_two_trainings_one_eval_dir", "D5", f"train A ({A_EPOCHS} epochs, model_dir m1) in the background, then B "
      "(model_dir m2) with the same eval_dir: A's history.csv still in eval_dir?")
def _d5(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, models=False)

    def train(model_dir: str, epochs: int) -> list[str]:
        return ["train", "test.config", "--device", "cpu", "-q", "--set", f"train.model_dir={model_dir}",
                "--set", "train.eval_dir=shared_eval", "--set", f"train.epochs={epochs}"]

    def check(folder: Path, state: dict) -> tuple[str | None, str]:
        found = {str(p.relative_to(folder)): csv_rows(p) for p in folder.rglob("history.csv")}
        first = [name for name, rows in found.items() if rows == A_EPOCHS]
        a, b = state["results"][-1], state["results"][0]
        said = f"B exited {b['exit_code']} ({b['stderr_last_line'][:120]}); history.csv files: {found}"
        if a["exit_code"] != 0:
            return None, f"training A exited {a['exit_code']}; {said}"
        if "shared_eval/history.csv" in first:
            return None, f"A's {A_EPOCHS}-row history.csv is in the eval_dir; {said}"
        return "data_lost", f"A finished but its {A_EPOCHS}-row history.csv is not in shared_eval/; {said}"
    # A trains long enough (40 epochs) to be still running when B, started once A's first history row exists,
    # reaches its folders: with 4 epochs A had finished by then, and B moved a finished run aside, as documented
    return Plan(steps=[Step(train("m1", A_EPOCHS), background=True, wait_for="shared_eval/history.csv", timeout=600),
                       Step(train("m2", 1), timeout=200)], check=check)


# --- crashes: weights files
def _weights_case(kind: str, variant: str, body: bytes, suffix: str = ".safetensors"):
    def build(cwd: Path, fx: dict) -> Plan:
        name = f"weights{suffix}"
        if kind == "pretrained_weights":
            base_case(cwd, fx, config={"model": {"pretrained_weights": name}}, models=False)
        else:
            if not fx["smp"]:
                return Plan(steps=[], skip=f"segmentation_models_pytorch does not import here: {fx['smp_error']}")
            base_case(cwd, fx, config={"model": {"model": "unet", "encoder": "resnet18", "encoder_weights": name,
                                                 "base_filters": None, "num_layers": None}}, models=False)
        (cwd / name).write_bytes(body)
        return Plan(steps=[Step(["train", "test.config", "--device", "cpu", "-q", "--set", "train.model_dir=m",
                                 "--set", "train.eval_dir=e"])])
    return build


for _variant, _body in safetensors_variants().items():
    case(f"crash_pretrained_safetensors_{_variant}", "crash",
         f"[model] pretrained_weights = a malformed .safetensors ({_variant})")(
        _weights_case("pretrained_weights", _variant, _body))
for _variant in ("empty", "garbage", "huge_header_len", "truncated_data"):
    case(f"crash_encoder_safetensors_{_variant}", "crash",
         f"[model] encoder_weights (unet/resnet18) = a malformed .safetensors ({_variant})")(
        _weights_case("encoder_weights", _variant, safetensors_variants()[_variant]))
TEXT_PTH = {"hello": b"hello world\n", "a_note": b"a note about this run\n", "csv": b"epoch,loss\n1,0.5\n",
            "comment": b"# not a checkpoint, just text\n"}  # torch.load: KeyError, IndexError, IndexError, Unpickling
for _variant, _body in TEXT_PTH.items():
    case(f"crash_pretrained_text_pth_{_variant}", "crash", f"[model] pretrained_weights = a text file named .pth "
         f"({_body[:12]!r}...)")(_weights_case("pretrained_weights", "text", _body, ".pth"))


def _text_ckpt(body: bytes):
    def build(cwd: Path, fx: dict) -> Plan:
        base_case(cwd, fx, models=False)
        (cwd / "notes.pth").write_bytes(body)
        return Plan(steps=[Step(["infer", "test.config", "--device", "cpu", "-q", "--checkpoint", "notes.pth"])])
    return build


for _variant in ("a_note", "hello"):
    case(f"crash_infer_checkpoint_text_pth_{_variant}", "crash", f"infer --checkpoint a text file named .pth "
         f"({TEXT_PTH[_variant][:12]!r}...)")(_text_ckpt(TEXT_PTH[_variant]))


# --- crashes: settings and sizes
@case("crash_watershed_min_distance_1e9", "crash", "[postprocess] separate = watershed, min_distance = 1e9")
def _watershed(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, config={"postprocess": {"separate": "watershed", "min_distance": 1000000000}}, models=False)
    const_onnx(cwd / "ramp.onnx", ramp_logits())
    return Plan(steps=[Step(_onnx_infer("ramp.onnx"), as_limit=AS_LIMIT, timeout=120)])


@case("crash_onnx_fixed_size_other_size", "crash", "infer --onnx a graph fixed at 1x3x32x32 under a 64 px config")
def _fixed(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, config={"model": {"image_width": 64, "image_height": 64}}, models=False)
    const_onnx(cwd / "fixed.onnx", ramp_logits(), fixed_input=(1, 3, 32, 32))
    return Plan(steps=[Step(_onnx_infer("fixed.onnx"))])


@case("crash_export_onnx_dir", "crash", "export --onnx an existing folder")
def _export_dir(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, user={"notes.txt": "n\n"})
    return Plan(steps=[Step(["export", "test.config", "--onnx", "user"])])


def _ro_case(verb_args: list[str]):
    def build(cwd: Path, fx: dict) -> Plan:
        if not fx["unprivileged"]:
            return Plan(steps=[], skip=f"no way to run unprivileged here: {fx['unprivileged_error']}")
        base_case(cwd, fx)
        (cwd / "ro").mkdir()
        (cwd / "ro" / "keep.txt").write_text("read-only folder\n")
        os.chmod(cwd / "ro", 0o555)
        return Plan(steps=[Step(verb_args, unprivileged=fx["unprivileged"])], world_readable=True)
    return build


for _verb, _args in [
        ("train", ["train", "test.config", "--device", "cpu", "-q", "--set", "train.model_dir=ro/models",
                   "--set", "train.eval_dir=ro/eval"]),
        ("evaluate", ["evaluate", "test.config", "--device", "cpu", "-q", "--set", "train.eval_dir=ro/eval"]),
        ("infer", ["infer", "test.config", "--device", "cpu", "-q", "--output", "ro/out", "--merged", "ro/merged"]),
        ("export", ["export", "test.config", "--onnx", "ro/model.onnx"]),
        ("split", ["split", "data/train/images", "data/train/masks", "ro/split"]),
        ("doctor", ["doctor", "data", "--json", "ro/doctor.json"]),
        ("demo", ["demo", "--out", "ro/demo", "--epochs", "1", "--device", "cpu", "-q"])]:
    case(f"crash_readonly_parent_{_verb}", "crash", f"{_verb} writing under a read-only folder (run unprivileged)")(
        _ro_case(_args))


for _name, _args in [
        ("infer_output", ["infer", "test.config", "--device", "cpu", "-q", "--output", "test.config"]),
        ("train_model_dir", ["train", "test.config", "--device", "cpu", "-q", "--set", "train.model_dir=test.config"]),
        ("evaluate_eval_dir", ["evaluate", "test.config", "--device", "cpu", "-q", "--set",
                               "train.eval_dir=test.config"])]:
    def _build_cfg(cwd: Path, fx: dict, args=_args) -> Plan:
        base_case(cwd, fx)
        return Plan(steps=[Step(args)])
    case(f"crash_config_as_output_folder_{_name}", "crash", f"the config file given as an output folder ({_name})")(
        _build_cfg)


@case("crash_ulimit_f_checkpoint_save", "crash", "train --resume under `ulimit -f` below the checkpoint size: the "
      "previous checkpoints must stay loadable")
def _ulimit(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, eval_dir=True)
    size_kb = (cwd / "models" / "last.pt").stat().st_size // 1024
    limit = max(size_kb // 2, 8)

    def check(folder: Path, state: dict) -> tuple[str | None, str]:
        import torch

        broken = []
        for name in ("best.pt", "last.pt"):
            path = folder / "models" / name
            try:
                torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:
                broken.append(f"{name}: {type(exc).__name__}")
        note = f"ulimit -f {limit} KB (last.pt is {size_kb} KB); unloadable after: {broken or 'none'}"
        return ("data_lost" if broken else None), note
    return Plan(steps=[Step(shell=f"ulimit -f {limit}; exec {{flexunet}} train test.config --device cpu -q --resume "
                                  "--set train.epochs=2")],
                allowed=["models/last.pt", "models/best.pt", "models/*.ini", "models/*.config",
                         "models/.flexunet-run", "eval/*"], check=check)


@case("crash_nul_byte_in_path_set", "crash", "a NUL byte in infer.output_dir through --set (a Python escape)")
def _nul_set(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx)
    return Plan(steps=[Step(["infer", "test.config", "--device", "cpu", "-q", "--set",
                             "infer.output_dir='out\\x00evil'"])])


@case("crash_nul_byte_in_path_config", "crash", "a raw NUL byte in [infer] output_dir in the config file")
def _nul_cfg(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx)
    text = (cwd / "test.config").read_text().replace("output_dir = './out'", "output_dir = './out\x00evil'")
    (cwd / "test.config").write_text(text)
    return Plan(steps=[Step(["infer", "test.config", "--device", "cpu", "-q"])])


def _sparse_case(args: list[str]):
    def build(cwd: Path, fx: dict) -> Plan:
        base_case(cwd, fx)
        with open(cwd / "data" / "test" / "images" / "huge.png", "wb") as fh:
            fh.truncate(50 * 10**9)
        return Plan(steps=[Step(args, as_limit=AS_LIMIT, timeout=120)])
    return build


case("crash_sparse_50gb_png_infer", "crash", "infer on a folder holding a 50 GB sparse 'PNG'")(
    _sparse_case(["infer", "test.config", "--device", "cpu", "-q"]))
case("crash_sparse_50gb_png_doctor", "crash", "doctor on a split holding a 50 GB sparse 'PNG'")(
    _sparse_case(["doctor", "data/test", "--json", "doctor.json"]))


@case("crash_huge_base_filters", "crash", "[model] base_filters = 10**9 (train)")
def _huge_filters(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, config={"model": {"base_filters": 10**9}}, models=False)
    return Plan(steps=[Step(["train", "test.config", "--device", "cpu", "-q"], as_limit=AS_LIMIT, timeout=120)])


@case("crash_huge_image_size", "crash", "[model] image_width = image_height = 10**6 (infer)")
def _huge_size(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, config={"model": {"image_width": 10**6, "image_height": 10**6}})
    return Plan(steps=[Step(["infer", "test.config", "--device", "cpu", "-q"], as_limit=AS_LIMIT, timeout=120)])


@case("crash_slides_lying_tiff_header", "crash", "infer --slides on a ~100 KB TIFF whose header claims 100000 x 65535 "
      "(killed after 90 s: unbounded)")
def _slides(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, config={"tiledinfer": {"overlapping": 8}})
    (cwd / "slides").mkdir()
    lying_tiff(cwd / "slides" / "slide.tif")
    return Plan(steps=[Step(["infer", "test.config", "--device", "cpu", "-q", "--slides", "--images", "slides",
                             "--output", "slide_out"], as_limit=AS_LIMIT, timeout=90)])


# --- silent wrong results
@case("silent_min_object_px_relabel", "silent", "[postprocess] min_object_px = 1000 on a 3-class ONNX whose class-2 "
      "speck's runner-up is class 1: any object < 1000 px left?")
def _minobj(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, config={"model": {"num_classes": 3, "loss": None, "metrics": None},
                               "postprocess": {"min_object_px": 1000}}, models=False)
    const_onnx(cwd / "specks.onnx", two_class_specks())

    def check(folder: Path, state: dict) -> tuple[str | None, str]:
        path = folder / "out" / "objects.csv"
        r = state["results"][-1]
        if r["exit_code"] != 0:
            return None, f"exit {r['exit_code']}"
        if not path.is_file():
            return "setup_failed", "no objects.csv written"
        with open(path, newline="") as fh:
            areas = [int(float(row["area_px"])) for row in csv.DictReader(fh)]
        small = [a for a in areas if a < 1000]
        return ("silent" if small else None), f"{len(areas)} objects, {len(small)} under 1000 px: {small[:8]}"
    return Plan(steps=[Step(_onnx_infer("specks.onnx"))], check=check)


def _all_background_check(pattern: str):
    def check(folder: Path, state: dict) -> tuple[str | None, str]:
        import cv2

        r = state["results"][-1]
        masks = mask_files(folder / "out")
        if r["exit_code"] != 0:
            return None, f"exit {r['exit_code']}: {r['stderr_last_line']}"
        if not masks:
            return None, "exit 0, no masks written"
        empty = sum(1 for p in masks if not np.any(cv2.imread(str(p), cv2.IMREAD_UNCHANGED)))
        warned = said(state, pattern)
        note = f"{len(masks)} masks, {empty} all background; output matching /{pattern}/: {warned}"
        return ("silent" if empty == len(masks) and not warned else None), note
    return check


@case("silent_onnx_1class_under_3class", "silent", "infer --onnx a 1-class graph (all foreground) under a 3-class "
      "config: all-background masks with no warning?")
def _one_class(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, config={"model": {"num_classes": 3, "loss": None, "metrics": None}}, models=False)
    const_onnx(cwd / "one.onnx", np.full((1, 32, 32), 5.0, np.float32))
    return Plan(steps=[Step(_onnx_infer("one.onnx"))], check=_all_background_check(r"warn|channel|class"))


@case("silent_onnx_nan_logits", "silent", "infer --onnx a graph whose logits are NaN: masks written with no warning?")
def _nan(cwd: Path, fx: dict) -> Plan:
    base_case(cwd, fx, models=False)
    const_onnx(cwd / "nan.onnx", np.full((1, 32, 32), np.nan, np.float32))

    def check(folder: Path, state: dict) -> tuple[str | None, str]:
        r = state["results"][-1]
        masks = mask_files(folder / "out")
        warned = said(state, r"\bnan\b|finite")
        note = f"exit {r['exit_code']}, {len(masks)} masks written; output matching /\\bnan\\b|finite/: {warned}"
        return ("silent" if r["exit_code"] == 0 and masks and not warned else None), note
    return Plan(steps=[Step(_onnx_infer("nan.onnx"))], check=check)


# ------------------------------------------------------------------------------------------------------- driving
def make_fixtures(runner: Runner, root: Path) -> dict:
    """The dataset, one trained checkpoint (epochs 1), and what this machine can do (smp, an unprivileged user)."""
    base = root / "base"
    for split, n, seed in (("train", 16, 0), ("valid", 4, 1), ("test", 4, 2)):
        write_disc_pairs(base / "data" / split, n, seed=seed)
    (base / "test.config").write_text(config_text())
    result = runner.run_steps([Step(["train", "test.config", "--device", "cpu", "-q"], timeout=300)], base)[0]
    if result["exit_code"] != 0 or not (base / "models" / "best.pt").is_file():
        raise SystemExit(f"fixture training failed: {result['stderr_last_line']}\n{result['_stderr'][-3000:]}")
    fx: dict = {"data": base / "data", "models": base / "models", "eval": base / "eval",
                "train_seconds": result["seconds"]}
    probe = subprocess.run([sys.executable, "-c", "from flexunet.models.smp_models import import_smp; import_smp()"],
                           env=runner.env(), capture_output=True, text=True, timeout=300)
    fx["smp"] = probe.returncode == 0
    fx["smp_error"] = (probe.stderr.strip().splitlines() or [""])[-1][:200]
    fx["unprivileged"], fx["unprivileged_how"], fx["unprivileged_error"] = None, None, "setpriv not found"
    if shutil.which("setpriv"):
        ro = root / "probe_ro"
        ro.mkdir()
        os.chmod(ro, 0o555)
        for how, prefix in (("nobody", NOBODY_PREFIX), ("root without DAC capabilities", NO_DAC_PREFIX)):
            probe = subprocess.run(prefix + ["sh", "-c", f"{sys.executable} -c 'import flexunet' && "
                                             f"! touch {ro}/x 2>/dev/null && echo can-run-cannot-write"],
                                   env=runner.env(), capture_output=True, text=True, timeout=120)
            if "can-run-cannot-write" in probe.stdout:
                fx["unprivileged"], fx["unprivileged_how"] = prefix, how
                break
            fx["unprivileged_error"] = f"{how}: {(probe.stderr.strip().splitlines() or [''])[-1][:160]}"
        os.chmod(ro, 0o755)
    return fx


def git_commit(tree: Path) -> dict:
    """HEAD of the tree, and the last commit that changed flexunet/ (the code under test), each with "-dirty" when
    flexunet/ has uncommitted changes; None outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True)
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None
    dirty = "-dirty" if git("status", "--porcelain", "--untracked-files=no", "--", "flexunet") else ""
    head, code = git("rev-parse", "HEAD"), git("log", "-1", "--format=%H", "--", "flexunet")
    return {"head": head and head + dirty, "flexunet_last_change": code and code + dirty}


def machine(tree: Path) -> dict:
    try:
        sys.path.insert(0, str(HERE))
        sys.path.insert(0, str(tree))
        from machine import machine_info

        return machine_info()
    except Exception as exc:  # the tree may lack flexunet.runs.device
        return {"cpu_model": platform.processor(), "error": f"machine_info: {exc}",
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    finally:
        sys.path[:] = [p for p in sys.path if p not in (str(HERE), str(tree))]


CLASSES = ("data_lost", "traceback", "silent", "ok", "skipped", "setup_failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True, help="flexunet source tree (its root holds flexunet/)")
    parser.add_argument("--label", default=None, help="results file: benchmarks/results/hostile-<label>.json")
    parser.add_argument("--out", type=Path, default=None, help="results file (overrides --label's)")
    parser.add_argument("--only", nargs="*", default=None, help="case names (or fnmatch patterns) to run")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (its path is printed)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args()
    if args.list:
        for c in CASES:
            print(f"{c.name:45s} {c.group:7s} {c.about}")
        return
    tree = args.tree.resolve()
    if not (tree / "flexunet" / "__main__.py").is_file() and not (tree / "flexunet").is_dir():
        raise SystemExit(f"{tree}: no flexunet/ package here")
    selected = [c for c in CASES if not args.only or any(fnmatch.fnmatch(c.name, pat) for pat in args.only)]
    if not selected:
        raise SystemExit("no case matches --only")
    os.nice(5) if os.nice(0) < 10 else None
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="flexunet-hostile-"))
    os.chmod(root, 0o755)
    runner = Runner(tree, root)
    rows = []
    try:
        fx = make_fixtures(runner, root)
        print(f"fixtures ready in {time.monotonic() - started:.0f} s (training {fx['train_seconds']} s); "
              f"smp: {fx['smp']}; unprivileged: {fx['unprivileged_how'] or fx['unprivileged_error']}", flush=True)
        for c in selected:
            t0 = time.monotonic()
            row = run_case(runner, c, fx)
            row["seconds"] = round(time.monotonic() - t0, 1)
            rows.append(row)
            last = row["commands"][-1] if row.get("commands") else {}
            print(f"{row['classification']:12s} {c.name:45s} {row['seconds']:6.1f}s exit={last.get('exit_code')} "
                  f"{(row.get('check_note') or row.get('reason') or last.get('stderr_last_line', ''))[:110]}",
                  flush=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            for path in root.rglob("*"):  # the read-only folders of the nobody cases
                if path.is_dir() and not path.is_symlink():
                    os.chmod(path, 0o755)
            shutil.rmtree(root, ignore_errors=True)
    totals = {k: sum(1 for r in rows if r["classification"] == k) for k in CLASSES}
    flagged = {k: sum(1 for r in rows if k in r.get("flags", []))
               for k in ("data_lost", "traceback", "timeout", "silent")}
    result = {"benchmark": "hostile", "issue": 27, "tree": str(tree), "tree_commit": git_commit(tree),
              "label": args.label, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(tree), "python": sys.executable, "seconds": round(time.monotonic() - started, 1),
              "totals": totals, "flag_totals": flagged,
              "rule": "data_lost > traceback > silent > ok (a case's class is its first flag); flag_totals count "
                      "every flag a case raised",
              "cases": rows}
    out = args.out or (HERE / "results" / f"hostile-{args.label or 'run'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print()
    print(f"{'case':45s} {'group':7s} {'class':12s} exit  stderr (last line) / note")
    for r in rows:
        last = r["commands"][-1] if r.get("commands") else {}
        print(f"{r['case']:45s} {r['group']:7s} {r['classification']:12s} {str(last.get('exit_code', '')):5s} "
              f"{(r.get('check_note') or r.get('reason') or last.get('stderr_last_line', ''))[:90]}")
    print()
    print("totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()) +
          f"   (flags: {', '.join(f'{k} {v}' for k, v in flagged.items())})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
