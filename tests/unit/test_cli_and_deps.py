"""First contact: usage errors are one line on stderr with exit 2, --version works, and every import is declared."""
from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flexunet"


def _flexunet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m flexunet ARGS` in a fresh interpreter, as a user's shell would run it."""
    return subprocess.run([sys.executable, "-m", "flexunet", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, expected", [
    (("train",), "Missing argument 'config'"),
    (("train", "x.config", "--bogus"), "No such option: --bogus"),
    (("nosuchverb",), "No such command 'nosuchverb'"),
    (("evaluate", "x.config", "--examples", "-3"), "Invalid value for '--examples'"),
    (("demo", "--epochs", "zero"), "Invalid value for '--epochs'"),
])
def test_usage_errors_are_one_line_on_stderr_with_exit_2(args: tuple[str, ...], expected: str, tmp_path: Path) -> None:
    proc = _flexunet(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""


def test_usage_error_names_the_verbs_help(tmp_path: Path) -> None:
    proc = _flexunet("prepare", "herlev", cwd=tmp_path)
    assert proc.returncode == 2 and "flexunet prepare herlev --help)" in proc.stderr


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    proc = _flexunet("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"flexunet {metadata.version('flexunet')}"


def test_no_arguments_shows_the_help(tmp_path: Path) -> None:
    proc = _flexunet(cwd=tmp_path)
    assert proc.returncode == 2 and "Usage:" in proc.stdout and "Traceback" not in proc.stderr


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(top-level module name, imported at module level) for every absolute import in one file."""
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module.split(".")[0], id(node) in top_level))
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    """Distribution names flexunet declares: (core dependencies, optional extras)."""
    core, extras = set(), set()
    for requirement in metadata.requires("flexunet") or []:
        name = _normal(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0])
        (extras if "extra ==" in requirement else core).add(name)
    return core, extras


def test_every_import_is_a_declared_dependency() -> None:
    """An import whose distribution pyproject does not declare fails here (as scipy and click once did on a fresh
    machine); a module-level import must be a core dependency, an extra only inside a function (behind its error)."""
    core, extras = _declared()
    distributions = metadata.packages_distributions()
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, at_module_level in _imports(ast.parse(path.read_text(), str(path))):
            if module in sys.stdlib_module_names or module in {"flexunet", "__future__"}:
                continue
            owners = {_normal(d) for d in distributions.get(module, [])}
            where = f"{path.relative_to(PACKAGE.parent)}: import {module}"
            if not owners:
                problems.append(f"{where}: no installed distribution provides it")
            elif not owners & (core | extras):
                problems.append(f"{where}: provided by {sorted(owners)}, which pyproject does not declare")
            elif at_module_level and not owners & core:
                problems.append(f"{where}: an optional extra imported at module level")
    assert not problems, "\n".join(problems)


def test_the_dependency_check_sees_an_undeclared_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: pygments (installed, as rich needs it, but not declared by flexunet) is reported,
    and so is an optional extra (pytest, of [dev]) imported at module level."""
    fake = tmp_path / "flexunet"
    fake.mkdir()
    (fake / "colours.py").write_text("def f():\n    import pygments\n")
    (fake / "uses_pytest.py").write_text("import pytest\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError) as failure:
        test_every_import_is_a_declared_dependency()
    assert "colours.py: import pygments: provided by ['pygments'], which pyproject does not declare" in str(failure.value)
    assert "uses_pytest.py: import pytest: an optional extra imported at module level" in str(failure.value)
