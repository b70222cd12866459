"""Every code block of README.md and docs/*.md marked `<!-- runnable -->` runs, as written, in a temporary folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from docs_blocks import Block, blocks, pages

from flexunet.demo import make_demo_dataset

RUNNABLE = [block for page in pages() for block in blocks(page)]


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[block.name for block in RUNNABLE])
def test_a_runnable_block_runs(block: Block, tmp_path: Path) -> None:
    if block.setup == "demo data":  # 32 px cells, 16/8/8 pairs: seconds, not the demo's minutes
        make_demo_dataset(tmp_path / "flexunet-demo", size=32, counts=(16, 8, 8))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{block.name} failed:\n{block.code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_there_are_runnable_blocks() -> None:
    assert len(RUNNABLE) >= 2
