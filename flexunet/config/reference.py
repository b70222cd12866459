"""The config reference (docs/config.md), generated from the schema so that it cannot go stale.

`python -m flexunet.config.reference > docs/config.md` writes it; tests/unit/test_docs_config.py checks that the
file equals what `markdown()` returns now and that every key of every section is in it.
"""
from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
from typing import Any

from pydantic.fields import FieldInfo

from flexunet.config.schema import Config
from flexunet.config.section import Section

HEADER = """<!-- Generated from flexunet/config/schema.py by `python -m flexunet.config.reference > docs/config.md`;
do not edit by hand (tests/unit/test_docs_config.py fails when this file and the schema differ). -->
# Config reference

Every section and every key a config file can hold, with its type, its default and what it means, in the order of
`flexunet/config/schema.py`. Paths are relative to the config file's folder; `--set section.key=value` overrides a
key from the command line (paths given there are relative to the current folder). A key that is not listed here is
an error naming the file, section and key, except the seed spellings described in
[seed-configs.md](seed-configs.md), which are mapped with a one-line note. A hand-written example config is in
[usage.md](usage.md).
"""

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _comments(line: str) -> list[str]:
    """The text of the `#` comments on one source line (strings containing `#` are not comments)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
    except (tokenize.TokenError, IndentationError):
        return []
    return [tok.string.lstrip("#").strip() for tok in tokens if tok.type == tokenize.COMMENT]


def _is_comment_line(line: str) -> bool:
    return line.strip().startswith("#")


def _field_sources(cls: type[Section]) -> dict[str, tuple[str, str]]:
    """Field name -> (its annotation as written, its comment text), from the source of the class defining it."""
    found: dict[str, tuple[str, str]] = {}
    for klass in reversed([k for k in cls.__mro__ if isinstance(k, type) and issubclass(k, Section)]):
        lines, _ = inspect.getsourcelines(klass)
        body = ast.parse(textwrap.dedent("".join(lines))).body[0]
        assert isinstance(body, ast.ClassDef)
        for node in body.body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
            above: list[int] = []
            row = first - 1
            while row >= 0 and _is_comment_line(lines[row]):
                above.insert(0, row)
                row -= 1
            # A comment line right under a field whose own comment ends with "->" continues that comment.
            if above and row >= 0 and "".join(_comments(lines[row])).endswith("->"):
                above = above[1:]
            text = [c for r in above for c in _comments(lines[r])]
            text += [c for r in range(first, last + 1) for c in _comments(lines[r])]
            below = last + 1
            if text and text[-1].endswith("->") and below < len(lines) and _is_comment_line(lines[below]):
                text += _comments(lines[below])
            found[node.target.id] = (ast.unparse(node.annotation), " ".join(text))
    return found


def _type(annotation: str, field: FieldInfo) -> str:
    bounds = [f"{_BOUNDS[name]} {getattr(item, name)}" for item in field.metadata
              for name in _BOUNDS if getattr(item, name, None) is not None]
    return f"`{annotation}`" + (f" ({', '.join(bounds)})" if bounds else "")


def _default(field: FieldInfo) -> Any:
    return field.get_default(call_default_factory=True)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _description(cls: type[Section]) -> str:
    """The class docstring; a bare "[name]" docstring borrows its parent's text (barrdistortion, pincdistortion)."""
    own = inspect.cleandoc(cls.__doc__ or "")
    parent = next((k for k in cls.__mro__[1:] if issubclass(k, Section) and k is not Section), None)
    if parent is not None and own == f"[{cls.section_name()}]":
        return f"{own}: {inspect.cleandoc(parent.__doc__ or '')}"
    return own


def section_markdown(name: str, cls: type[Section]) -> str:
    """One section: its heading, docstring and a table of key, type, default and meaning."""
    out = [f"## [{name}]", "", " ".join(_description(cls).split()), ""]
    if cls.model_config.get("extra") == "allow":
        out += ["Any key is accepted here (the schema allows extra keys).", ""]
    if not cls.model_fields:
        out += ["No keys of its own.", ""]
        return "\n".join(out)
    sources = _field_sources(cls)
    out += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, field in cls.model_fields.items():
        annotation, comment = sources[key]
        out.append(f"| `{key}` | {_cell(_type(annotation, field))} | `{_cell(repr(_default(field)))}` "
                   f"| {_cell(comment)} |")
    return "\n".join(out + [""])


def sections() -> dict[str, type[Section]]:
    """Section name -> its schema class, in the order of the Config model."""
    found: dict[str, type[Section]] = {}
    for name, field in Config.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            found[name] = field.annotation
    return found


def markdown() -> str:
    """The whole of docs/config.md."""
    return "\n".join([HEADER] + [section_markdown(name, cls) for name, cls in sections().items()]).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
