"""Read a seed-format INI config into a validated, frozen `Config`. The only module that sees raw strings."""
from __future__ import annotations

import ast
import configparser
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from flexunet.config.aliases import (
    EVAL_DATA_KEYS,
    KEY_ALIASES,
    NOTE_ONLY_KEYS,
)
from flexunet.config.checks import Location, cross_problems, suggest, unread_model_keys
from flexunet.config.resolve import resolve
from flexunet.config.schema import SECTIONS, Config
from flexunet.config.section import PATH_KEYS, Section, looks_like_file
from flexunet.errors import ConfigError

ORIGIN_FILE = "file"


ORIGIN_CLI = "command line"


def parse_value(raw: str, where: Location) -> object:
    """A Python literal (number, string, bool, None, tuple, list, dict), never code: `ast.literal_eval` only.

    A trailing `; comment` or `# comment` is dropped (the seed silently fell back to the default there).
    """
    text = raw.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    for marker in (" ;", "\t;", " #", "\t#"):
        if marker in text:
            try:
                return ast.literal_eval(text.split(marker, 1)[0].strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    raise ConfigError(f"{where} = {text}: not a Python literal (quote strings: \"./models\")")


def read_ini(path: Path) -> dict[str, dict[str, str]]:
    """Sections and raw values of an INI file. Duplicate keys and unreadable files are errors, not silence."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    return parse_ini_text(text, path.name)


def parse_ini_text(text: str, label: str) -> dict[str, dict[str, str]]:
    """Sections and raw values of INI text (`label` names it in errors)."""
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        parser.read_string(text, source=label)
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(f"{label} [{exc.section}] {exc.option}: key given twice (line {exc.lineno})") from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(f"{label} [{exc.section}]: section given twice (line {exc.lineno})") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{label}: not an INI file: {first}") from None
    return {name: dict(parser.items(name, raw=True)) for name in parser.sections()}


def _accepts_str(section: type[Section], key: str) -> bool:
    annotation = section.model_fields[key].annotation
    return annotation is str or str in typing.get_args(annotation)


def _is_text_field(section: type[Section], key: str) -> bool:
    """A field holding a string (a path, a name) and nothing else: str or Optional[str]."""
    if key not in section.model_fields:
        return False
    annotation = section.model_fields[key].annotation
    args = set(typing.get_args(annotation))
    return annotation is str or (str in args and args <= {str, type(None)})


def _holds_nul(value: object) -> bool:
    """True when a parsed value has a NUL character in a string anywhere inside it (keys of dicts included)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return any(_holds_nul(v) for v in value)
    return False


class _Collector:
    """Gathers raw entries section by section, mapping seed spellings, and records every problem."""

    def __init__(self, file_label: str, base_dir: Path) -> None:
        self.file_label = file_label
        self.base_dir = base_dir
        self.values: dict[str, dict[str, object]] = {}
        self.origins: dict[str, str] = {}
        self.given_as: dict[str, Location] = {}  # "section.key" -> where the value was written (before any alias)
        self.problems: list[str] = []
        self.notes: list[str] = []

    def add(self, section: str, key: str, raw: str, origin: str, base_dir: Path) -> None:
        section, key = section.strip().lower(), key.strip().lower()
        where = written = Location(self.file_label, section, key)
        moved = section == "eval" and key in EVAL_DATA_KEYS
        if moved:
            section = "valid"  # seed [eval] data is the validation set
        alias = KEY_ALIASES.get((section, key)) or KEY_ALIASES.get(("*", key))
        if moved or alias:
            key = alias or key
            self.notes.append(f"{where}: seed-era key, read as [{section}] {key}")
            where = Location(self.file_label, section, key)
        if section not in SECTIONS:
            place = Location(self.file_label, section)
            self.problems.append(f"{place}: unknown section{suggest(section, list(SECTIONS))}")
            return
        if (section, key) in NOTE_ONLY_KEYS:
            self.notes.append(f"{where}: accepted, no effect here: {NOTE_ONLY_KEYS[(section, key)]}")
            return
        schema = SECTIONS[section]
        if key not in schema.model_fields and schema.model_config.get("extra") != "allow":
            self.problems.append(f"{where}: unknown key{suggest(key, list(schema.model_fields))}")
            return
        try:
            value = parse_value(raw, where)
        except ConfigError as exc:
            if origin == ORIGIN_CLI or (key in schema.model_fields and _accepts_str(schema, key) and raw.strip()):
                value = raw.strip()  # an unquoted path or name: take it as the string it obviously is
                if origin == ORIGIN_FILE:
                    self.notes.append(f"{where} = {value}: not quoted; read as the string '{value}'")
            else:
                self.problems.append(str(exc))
                return
        if _holds_nul(value):  # `"a\x00b"` in the file or `--images $'a\0b'`: os calls raise ValueError on it
            self.problems.append(f"{where} = {value!r}: contains a NUL byte (\\x00), which no file name or setting "
                                 "may hold")
            return
        if origin == ORIGIN_CLI and _is_text_field(schema, key) and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            value = raw.strip()  # `--set infer.output_dir=2024` names a folder, not the number 2024
        if key == "encoder_weights" and isinstance(value, str) and looks_like_file(value):
            key_is_path = True  # a local file, resolved like any path; otherwise a tag such as "imagenet"
        else:
            key_is_path = key in PATH_KEYS
        if key_is_path and isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            value = os.path.normpath(base_dir / os.path.expanduser(value))
        elif key_is_path and isinstance(value, str):
            value = os.path.expanduser(value)
        name = f"{section}.{key}"
        earlier = self.given_as.get(name)
        if earlier not in (None, written) and self.origins[name] == origin and self.values[section][key] != value:
            # e.g. a seed [eval] image_datapath beside a different [valid] images_dir: neither may silently win
            self.problems.append(f"{written} = {value!r}: conflicts with {earlier} = {self.values[section][key]!r}; "
                                 f"both set [{section}] {key}, keep one")
            return
        self.values.setdefault(section, {})[key] = value
        self.origins[name], self.given_as[name] = origin, written


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Parse, map seed-era keys, resolve paths against the config's folder, validate; report all problems at once.

    `overrides` are `section.key=value` strings from the command line; their relative paths are taken from the
    current directory.
    """
    path = Path(path)
    return _load_sections(read_ini(path), path.name, path.resolve().parent, overrides, source=str(path))


def config_from_text(text: str, label: str, base_dir: str | Path = ".", overrides: Sequence[str] = ()) -> Config:
    """A Config from INI text, e.g. the resolved config stored inside a checkpoint."""
    return _load_sections(parse_ini_text(text, label), label, Path(base_dir), overrides, source=label)


def _load_sections(
    raw: Mapping[str, Mapping[str, str]], label: str, base_dir: Path, overrides: Sequence[str], source: str
) -> Config:
    collector = _Collector(label, base_dir)
    for section, entries in raw.items():
        for key, value in entries.items():
            collector.add(section, key, value, ORIGIN_FILE, base_dir)
    for item in overrides:
        section_key, sep, value = item.partition("=")
        section, dot, key = section_key.partition(".")
        if not sep or not dot or not key:
            collector.problems.append(f"--set {item}: expected section.key=value, e.g. train.epochs=5")
            continue
        collector.add(section, key, value, ORIGIN_CLI, Path.cwd())
    return _validate(collector, source=source)


def config_from_dict(
    sections: Mapping[str, Mapping[str, object]], base_dir: str | Path = ".", source: str | None = None
) -> Config:
    """Build a Config from Python values (notebooks, tests, the demo), with the same checks as a file."""
    collector = _Collector(source or "<dict>", Path(base_dir).resolve())
    for section, entries in sections.items():
        for key, value in entries.items():
            collector.add(section, key, repr(value), ORIGIN_FILE, Path(base_dir).resolve())
    return _validate(collector, source=source)


def _validate(collector: _Collector, source: str | None) -> Config:
    built: dict[str, Section] = {}
    for name, schema in SECTIONS.items():
        values = collector.values.setdefault(name, {})
        for key in PATH_KEYS & set(schema.model_fields):
            default = schema.model_fields[key].default
            if key not in values and isinstance(default, str):  # defaults such as "./models" live beside the config
                values[key] = os.path.normpath(collector.base_dir / default)
        try:
            section = schema(**values)
        except ValidationError as exc:
            reported: set[str] = set()
            for err in exc.errors():
                key = str(err["loc"][0]) if err["loc"] else "?"
                if key in reported:  # a value or dict key (e.g. [postprocess] min_object_px) fails each branch
                    continue
                reported.add(key)
                shown = values.get(key, err.get("input"))
                msg = err["msg"].removeprefix("Value error, ")
                collector.problems.append(f"{Location(collector.file_label, name, key)} = {shown!r}: {msg}")
            continue
        built[name] = section
    if "model" in built:
        collector.notes.extend(unread_model_keys(built["model"], collector.origins, collector.file_label))
    cfg = Config(**built, source=source, notes=tuple(collector.notes), origins=collector.origins)
    cli_keys = tuple(k for k, origin in collector.origins.items() if origin == ORIGIN_CLI)
    cfg = cfg.model_copy(update={"resolved": resolve(cfg, collector.origins, cli_keys)})
    collector.problems.extend(cross_problems(cfg, collector.file_label))
    if collector.problems:
        raise ConfigError(collector.problems)
    for section in (getattr(cfg, name) for name in SECTIONS):
        section._source = collector.file_label
    return cfg


def config_to_ini(cfg: Config) -> str:
    """The resolved config as INI text that `load_config` reads back to an equal Config (paths absolute)."""
    lines = [f"; resolved by flexunet from {cfg.source or 'code'}; every key shown with the value used"]
    for name in SECTIONS:
        section = getattr(cfg, name)
        values = section.model_dump()
        if not values:
            continue
        lines.append(f"\n[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"
