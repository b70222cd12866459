"""The shape of the package at two commits, for issue 17's before/after: imports between packages, cycles, functions
that take the whole Config, the longest function, and where probabilities become labels.

    python benchmarks/code_shape.py 3bd7ddf HEAD    # writes benchmarks/results/code_shape.json

Counted with `ast` on `git archive` of each commit (nothing is imported or run):
- package graph: an arrow A -> B for every `flexunet.B` import in package A, at module level or inside a function;
  cycles are its strongly connected components with more than one package;
- stage imports: arrows among the three stages train, evaluate and infer;
- in-function imports: `flexunet` imports inside a function body whose module-level form would close a cycle in the
  package graph (imports kept inside functions only to load heavy libraries lazily are not counted);
- functions taking Config: function definitions with a parameter annotated `Config`; also counted without the
  builders whose job is to read it (`from_config`, `*_from_config`, `build_*`: config -> validated object);
- probs -> labels: expressions outside tests that turn probabilities into labels (`.argmax(` over classes, or a
  comparison of a probability with a threshold); listed with file and line so they can be checked by eye.
"""
from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"train", "evaluate", "infer"}


def sources(commit: str) -> dict[str, str]:
    """flexunet/**/*.py at `commit`: path -> text."""
    data = subprocess.run(["git", "archive", commit, "flexunet"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()  # type: ignore[union-attr]
                if m.isfile() and m.name.endswith(".py")}


def package_of(path_or_module: str) -> str:
    parts = path_or_module.replace("/", ".").removesuffix(".py").split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] != "__init__") else "flexunet"


def module_of(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def flexunet_imports(tree: ast.Module, module: str, is_package: bool) -> list[tuple[ast.AST, str, bool]]:
    """(node, imported module, inside a function) for every flexunet import."""
    out = []
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".")[: len(module.split(".")) - node.level + is_package] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            names = [f"flexunet.{a.name}" for a in node.names] if target == "flexunet" else [target]
        out += [(node, n, id(node) in inside) for n in names if n.split(".")[0] == "flexunet"]
    return out


def sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v == goal:
            return True
        if v not in seen:
            seen.add(v)
            todo += graph.get(v, ())
    return False


def is_label_rule(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "argmax":
        return True
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Gt, ast.GtE)):
        right = ast.unparse(node.comparators[0])
        left = ast.unparse(node.left)
        return "threshold" in right or (right == "0.5" and ("prob" in left or "sigmoid" in left))
    return False


def is_builder(name: str) -> bool:
    return name == "from_config" or name.endswith("_from_config") or name.startswith("build_")


def shape(commit: str) -> dict:
    files = sources(commit)
    graph: dict[str, set[str]] = defaultdict(set)
    trees = {path: ast.parse(text, path) for path, text in files.items()}
    imports = []
    for path, tree in trees.items():
        module = module_of(path)
        for node, name, inside in flexunet_imports(tree, module, path.endswith("__init__.py")):
            source, target = package_of(module), package_of(name)
            imports.append((path, node, source, target, inside))
            if source != target and "flexunet" not in (source, target):
                graph[source].add(target)
    cycles = sccs(graph)
    in_function = sorted({f"{path}:{node.lineno} -> {target}" for path, node, source, target, inside in imports
                          if inside and source != target and reaches(graph, target, source)})
    stage_arrows = sorted({f"{s} -> {t}" for s, targets in graph.items() for t in targets if {s, t} <= STAGES})
    taking_config, lengths, rules = [], [], []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))  # type: ignore[operator]
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if any(a.annotation is not None and ast.unparse(a.annotation) == "Config" for a in args):
                    taking_config.append(f"{path}:{node.lineno} {node.name}")
            if is_label_rule(node):
                rules.append(f"{path}:{node.lineno} {ast.unparse(node)[:60]}")
    longest = max(lengths)
    return {"commit": subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True,
                                     text=True, check=True).stdout.strip(),
            "python_files": len(files), "package_cycles": cycles, "package_cycle_count": len(cycles),
            "stage_imports": stage_arrows, "stage_import_count": len(stage_arrows),
            "cycle_closing_in_function_imports": in_function,
            "cycle_closing_in_function_import_count": len(in_function),
            "functions_taking_config": len(taking_config),
            "functions_taking_config_besides_builders":
                sum(not is_builder(f.rsplit(" ", 1)[1]) for f in taking_config),
            "longest_function": {"lines": longest[0], "where": longest[1]},
            "probs_to_labels": rules, "probs_to_labels_count": len(rules)}


def main() -> None:
    commits = sys.argv[1:] or ["3bd7ddf", "HEAD"]
    result = {"what": __doc__.split("\n\n")[0], "command": "python benchmarks/code_shape.py " + " ".join(commits),
              "commits": [shape(c) for c in commits]}
    out = ROOT / "benchmarks" / "results" / "code_shape.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    shown = ("functions_taking_config", "functions_taking_config_besides_builders", "longest_function")
    for c in result["commits"]:
        print(c["commit"], {k: v for k, v in c.items() if k.endswith("count") or k in shown})

if __name__ == "__main__":
    main()
