"""The README stays a short tutorial, its five-minute block is marked runnable, and every link of the docs leads somewhere."""
from __future__ import annotations

from docs_blocks import ROOT, anchors, blocks, pages, relative_links


def test_readme_is_a_short_tutorial() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert [n for n, line in enumerate(lines, 1) if len(line) > 120] == []


def test_every_relative_link_points_to_an_existing_file_and_heading() -> None:
    broken = []
    for page in pages():
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_five_minute_block_is_runnable() -> None:
    readme = ROOT / "README.md"
    section = readme.read_text().split("## Your data in five minutes", 1)[1].split("\n## ", 1)[0]
    runnable = [block for block in blocks(readme) if block.code in section]
    assert runnable and all(block.setup == "demo data" for block in runnable)
    assert "flexunet init" in runnable[0].code and "flexunet train" in runnable[0].code
