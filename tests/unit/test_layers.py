"""Imports point down the layer order written in docs/architecture.md, at module level and inside functions."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "flexunet"

# The arrows that still point up, as (importing module, imported module), each with what will remove it.
ALLOWED_UPWARD: set[tuple[str, str]] = set()  # none left (issue 17)


def documented_layers() -> dict[str, int]:
    """Package -> its line in the ```layers block of docs/architecture.md (0 = lowest)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    return {name.strip(): i for i, line in enumerate(lines) for name in line.split(",")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every flexunet import anywhere in the tree, relative ones resolved."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".")[: len(module.split(".")) - node.level + is_package] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            if target == "flexunet":  # `from flexunet import labels`: the names are modules
                found += [(node.lineno, f"flexunet.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name.split(".")[0] == "flexunet"]


def layer_package(module: str) -> str:
    """flexunet.train.loop -> train; flexunet.labels -> labels."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "flexunet"


def all_imports() -> list[tuple[str, int, str]]:
    """(importing module, line, imported module) for every flexunet import in the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        out += [(module, line, name) for line, name in imported(tree, module, path.name == "__init__.py")]
    return out


def violations(layers: dict[str, int]) -> list[str]:
    """Imports from a package on the importer's own line or a line below it, except ALLOWED_UPWARD."""
    bad = []
    for module, line, name in all_imports():
        source, target = layer_package(module), layer_package(name)
        if source == target or source == "flexunet" or (module, name) in ALLOWED_UPWARD:
            continue
        if layers[target] >= layers[source]:
            bad.append(f"{module}:{line} imports {name} ({source} is not above {target} in docs/architecture.md)")
    return bad


def test_every_package_has_a_documented_layer() -> None:
    layers = documented_layers()
    packages = {layer_package(module_name(p)) for p in PACKAGE.rglob("*.py")} - {"flexunet"}
    assert sorted(packages - layers.keys()) == []


def test_no_import_points_up_or_sideways() -> None:
    assert violations(documented_layers()) == []


def test_every_allowed_upward_arrow_still_exists() -> None:
    """An arrow that is gone leaves the allowlist, so it cannot silently come back."""
    arrows = {(module, name) for module, _, name in all_imports()}
    assert sorted(ALLOWED_UPWARD - arrows) == []


def test_an_upward_import_inside_a_function_is_found() -> None:
    tree = ast.parse("def f():\n    from flexunet.train import fit\n")
    assert imported(tree, "flexunet.infer.predict", False) == [(2, "flexunet.train")]
    tree = ast.parse("from . import tiling\nfrom ..train import loop\n")
    assert imported(tree, "flexunet.infer", True) == [(1, "flexunet.infer"), (2, "flexunet.train")]


MAX_MODULE_LINES = 400  # one concept per module (issue 31): a module past this holds several


def test_no_module_is_over_the_line_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
