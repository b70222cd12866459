"""Every benchmarks/*.py script imports (its `main` not run), and trains through the public API only, so a change to
flexunet's internals cannot silently break a benchmark that is run only now and then."""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
# flexunet names a benchmark may not import: the training loop's parts, which train_from_config(on_epoch_end=...)
# replaces (issue 17)
PRIVATE = {"flexunet.train.loop", "flexunet.train.step", "flexunet.train.state", "flexunet.train.preview"}
HELPERS = {"machine"}  # imported by the scripts; no main of its own


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))  # scripts import their neighbours (machine.py) as their own folder allows
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_there_are_benchmarks_to_check() -> None:
    assert {"run", "quality", "tta_gain", "model_zoo_train", "memory_scaling"} <= {p.stem for p in SCRIPTS}


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_imports_and_has_a_main(path: Path) -> None:
    module = load(path)
    assert path.stem in HELPERS or callable(getattr(module, "main", None))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_uses_no_training_loop_internals(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert not imported & PRIVATE, f"{path.name} imports {sorted(imported & PRIVATE)}; train via train_from_config"
