"""The markdown pages the docs tests read: README.md and docs/*.md, their links and their runnable code blocks.

A fenced code block is runnable when the line before its fence is `<!-- runnable -->` (it runs in an empty temporary
folder) or `<!-- runnable: demo data -->` (the folder holds a small demo dataset at `flexunet-demo/data`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^\s*<!-- runnable(?:: (?P<setup>demo data))? -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    setup: str | None  # None: an empty folder; "demo data": flexunet-demo/data is there
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced code block of the page with the marker line before it."""
    lines = page.read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        marker = MARKER.match(lines[i - 1]) if i else None
        fence = FENCE.match(line)
        if not (marker and fence):
            continue
        indent = len(fence["indent"])
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        code = "\n".join(text[indent:] for text in lines[i + 1:end])
        found.append(Block(page, i + 1, marker["setup"], code + "\n"))
    return found


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a `#` comment there is no heading, a `[x](y)` no link)."""
    kept, inside = [], False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            kept.append(line)
    return "\n".join(kept)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page), re.M):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


def relative_links(page: Path) -> list[str]:
    return [m["target"] for m in LINK.finditer(prose(page))
            if not re.match(r"^[a-z]+:", m["target"])]
