"""docs/config.md is what flexunet/config/reference.py generates from the schema now, and names every key."""
from __future__ import annotations

from pathlib import Path

from flexunet.config import reference
from flexunet.config.schema import Config

ROOT = Path(__file__).resolve().parents[2]


def test_config_reference_is_what_the_generator_writes_now() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == reference.markdown(), (
        "docs/config.md is stale: run `python -m flexunet.config.reference > docs/config.md`")


def test_every_key_of_every_section_is_in_the_config_reference() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    parts = {part.split("]", 1)[0]: part for part in text.split("\n## [")[1:]}
    missing = []
    for name, field in Config.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, reference.Section)):
            continue
        if name not in parts:
            missing.append(f"[{name}]")
            continue
        missing += [f"[{name}] {key}" for key in section.model_fields if f"\n| `{key}` |" not in parts[name]]
    assert missing == []
    assert len(parts) >= 20
