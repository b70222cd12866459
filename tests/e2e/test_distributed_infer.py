"""torchrun inference and evaluation: 2 gloo processes on CPU write exactly the masks and metrics of one process,
each mask once, and a pass whose rank was killed with SIGKILL resumes to the same masks."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from flexunet.config import load_config
from flexunet.train import train_from_config
from tests.conftest import make_config, write_disc_pairs

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flexunet(*args: str, procs: int = 1) -> list[str]:
    launch = [sys.executable, "-m", "flexunet"]
    if procs > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                  "--master_port", str(free_port()), "-m", "flexunet"]
    return launch + list(args)


def run(cwd: Path, *args: str, procs: int = 1) -> str:
    done = subprocess.run(flexunet(*args, procs=procs), env=ENV, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def masks(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch tiny model, 4 test pairs and 120 unlabelled 40x40 images to infer (odd sizes: resized back)."""
    root = tmp_path_factory.mktemp("dist")
    for split, n, seed in (("train", 8, 0), ("valid", 4, 1), ("test", 7, 2)):
        write_disc_pairs(root / "data" / split, n, seed=seed)
    write_disc_pairs(root / "data" / "many", 120, size=40, seed=3)
    config = make_config(root, root / "data", {"train": {"epochs": 1, "epoch_change_infer": False},
                                               "infer": {"images_dir": str(root / "data" / "many" / "images"),
                                                         "output_dir": "./out", "merged_dir": "./merged"},
                                               "eval": {"batch_size": 2}})
    cwd = Path.cwd()
    os.chdir(root)
    try:
        train_from_config(load_config(config), device="cpu", quiet=True)
    finally:
        os.chdir(cwd)
    return config


def test_two_processes_write_the_masks_of_one_each_once(trained: Path) -> None:
    root = trained.parent
    one = run(root, "infer", str(trained), "-q", "--output", "one")
    two = run(root, "infer", str(trained), "-q", "--output", "two", procs=2)
    assert "wrote 120 masks" in one and "wrote 120 masks" in two  # 120 written in all: none twice, none missing
    assert two.count("wrote") == 1  # rank 0 alone reports
    reference = masks(root / "one")
    assert len(reference) == 120 and masks(root / "two") == reference
    assert masks(root / "two_merged") == masks(root / "one_merged")


def test_two_processes_evaluate_to_the_metrics_of_one(trained: Path) -> None:
    """7 test images in batches of 2: rank 0 takes batches 0 and 2, rank 1 batches 1 and 3 (of one image)."""
    root = trained.parent
    run(root, "evaluate", str(trained), "-q", "--no-report", "--set", "train.eval_dir=./eval_one")
    run(root, "evaluate", str(trained), "-q", "--no-report", "--set", "train.eval_dir=./eval_two", procs=2)
    for name in ("per_image.csv", "per_class.csv", "evaluation.csv"):
        assert (root / "eval_two" / name).read_text() == (root / "eval_one" / name).read_text(), name
    one = json.loads((root / "eval_one" / "metrics.json").read_text())
    # the eval folder is named (provenance: the --set key, leakage: the doctor command): the only difference
    two = json.loads((root / "eval_two" / "metrics.json").read_text().replace("eval_two", "eval_one"))
    assert one["images"] == 7 and two == one


def worker_pids(launcher: int) -> list[int]:
    children = Path(f"/proc/{launcher}/task/{launcher}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def test_sigkill_of_one_rank_then_resume_gives_every_mask_once(trained: Path) -> None:
    root = trained.parent
    run(root, "infer", str(trained), "-q", "--output", "ref")
    proc = subprocess.Popen(flexunet("infer", str(trained), "-q", "--output", "killed", procs=2), env=ENV, cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = root / "killed"
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(out.glob("*.png"))):
        time.sleep(0.005)
    workers = worker_pids(proc.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    partial = masks(out)
    assert 0 < len(partial) < 120  # killed mid-way
    names = sorted(partial)
    (out / names[0]).write_bytes(partial[names[0]][:20])  # a truncated file, newer than the checkpoint
    os.utime(out / names[-1], (1, 1))  # one written before the checkpoint: other weights
    # a mask is finished when its overlay is written too (the kill may fall between the two)
    kept = len({n for n in names[1:-1] if (root / "killed_merged" / n).is_file()})
    resumed = run(root, "infer", str(trained), "-q", "--output", "killed", "--resume", procs=2)
    assert f"wrote {120 - kept} masks" in resumed
    assert (f"kept {kept} from an earlier pass" in resumed) == (kept > 0)  # a kill after 2 masks keeps none
    assert masks(out) == masks(root / "ref")
    for path in out.glob("*.png"):
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None
    assert not list(out.glob(".*.tmp"))  # the killed rank's temporary files are cleaned up
