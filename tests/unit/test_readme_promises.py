"""The reliability table of docs/data-and-outputs.md names a test for every promise: each named test must exist."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "data-and-outputs.md"
HEADING = "#### What is promised, and the test that proves it"


def named_tests(page: str) -> list[tuple[str, str | None]]:
    """(test file, test name or None for a whole file) for every test cell of the table; `::name` reuses the file
    named before it in the same cell."""
    table = page.split(HEADING, 1)[1].split("\n\n", 2)[1]
    found = []
    for row in table.splitlines()[2:]:
        cell = row.rstrip("|").rsplit("|", 1)[1]
        current = None
        for ref in re.findall(r"`([^`]+)`", cell):
            path, _, name = ref.partition("::")
            current = path or current
            found.append((f"tests/{current}", name or None))
    return found


def test_every_test_the_reliability_table_names_exists() -> None:
    tests = named_tests(PAGE.read_text())
    assert len(tests) >= 30
    missing = [f"{path}::{name}" for path, name in tests
               if not (ROOT / path).is_file()
               or (name and not re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M))]
    assert missing == []
