"""Config files and overrides: YAML read safely, `section.key=value` overrides merged, relative paths resolved, and
a pydantic validation error turned into one line naming the key (with "did you mean" for a misspelt one).

Schema-free: `kerasls.config` holds the schema and calls `load_config(path, overrides, schema)` with its classes.
Relative data paths in a config file are resolved against the folder of that file; relative paths given on the
command line against the current folder.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from kerasls.errors import KeraslsError


def read_yaml(path) -> dict:
    """Read a YAML mapping with `yaml.safe_load` (python object tags are refused)."""
    path = Path(path)
    if not path.is_file():
        raise KeraslsError(f"{path}: config file not found; pass an existing file with --config")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise KeraslsError(f"{path}:{where}: invalid YAML ({problem}); fix the syntax at that place") from None
    except UnicodeDecodeError:
        raise KeraslsError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise KeraslsError(f"{path}: the config must be a mapping of keys, got a {type(loaded).__name__}")
    return loaded


def parse_override(text: str) -> tuple[list[str], Any]:
    """`training.epochs=3` -> (["training", "epochs"], 3). The value is parsed as YAML."""
    key, sep, raw_value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise KeraslsError(
            f"override {text!r} is not of the form key=value (e.g. training.epochs=3)"
        )
    try:
        value = yaml.safe_load(raw_value) if raw_value != "" else ""
    except yaml.YAMLError:
        value = raw_value
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    merged = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise KeraslsError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return merged


def _resolve_paths(raw: dict, base: Path) -> None:
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for key in ("train", "val", "test"):
        value = data.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            data[key] = str((base / value).resolve())
    text = data.get("text") if isinstance(data.get("text"), dict) else {}
    for settings in [text, *(text.get("columns") or {}).values()]:
        encoder = settings.get("encoder") if isinstance(settings, dict) else None
        preset = encoder.get("preset") if isinstance(encoder, dict) else None
        if isinstance(preset, str) and not Path(preset).is_absolute() and (base / preset).is_dir():
            encoder["preset"] = str((base / preset).resolve())  # a preset folder beside the config
    soft = (raw.get("targets") or {}).get("soft_labels")
    if isinstance(soft, dict) and isinstance(soft.get("teacher"), str):
        if not Path(soft["teacher"]).is_absolute():
            soft["teacher"] = str((base / soft["teacher"]).resolve())


RENAMED = {"data.text_max_tokens": "data.text.max_tokens"}


def _section(schema: type[BaseModel], loc) -> Optional[type[BaseModel]]:
    """The config section (a pydantic model) that holds the key at `loc`, or None."""
    model = schema
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        model = next(
            (a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
             and issubclass(a, BaseModel)), None) if annotation else None
        if model is None:
            return None
    return model


def _describe_error(error: dict, schema: type[BaseModel], source: str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        model = _section(schema, error["loc"])
        known = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        parent = ".".join(str(part) for part in error["loc"][:-1])
        full = f"{parent}.{close[0]}" if close and parent else (close[0] if close else "")
        hint = f"; did you mean {full!r}?" if close else f"; known keys here: {', '.join(known)}"
        if key in RENAMED:
            hint = f"; it is now {RENAMED[key]!r}"
        return f"{source}: unknown config key {key!r}{hint}"
    if error["type"] == "value_error":  # our own validators: the message names the keys and the value already
        message = error["msg"].removeprefix("Value error, ")
        return f"{source}: config key {key!r}: {message}" if error["loc"] else f"{source}: {message}"
    received = error.get("input")
    hint = ""
    if error["type"] == "list_type" and error["loc"]:  # on the command line a list is written [a,b]
        section = _section(schema, error["loc"])
        field = section.model_fields.get(str(error["loc"][-1])) if section is not None else None
        default = getattr(field, "default", None)
        example = ",".join(str(value) for value in default) if isinstance(default, (list, tuple)) and default else "a,b"
        hint = f"; write a list, e.g. {key}=[{example}]"
    return f"{source}: config key {key!r}: {error['msg']} (received {received!r}){hint}"


def build_config(raw: dict, schema: type[BaseModel], source: str = "config"):
    """`raw` validated by `schema`; the first error as one line naming the key (`source`: where it came from)."""
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        raise KeraslsError(_describe_error(first, schema, source)) from None


def load_config(path, overrides, schema: type[BaseModel]):
    """Read `path` (or only defaults when None), merge `key=value` overrides, validate."""
    raw: dict = {}
    source = "command line"
    if path is not None:
        raw = read_yaml(path)
        _resolve_paths(raw, Path(path).resolve().parent)
        source = str(path)
    override_raw = apply_overrides({}, list(overrides))
    _resolve_paths(override_raw, Path.cwd())
    merged = _deep_merge(raw, override_raw)
    return build_config(merged, schema, source if not overrides else f"{source} + overrides")


def _deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
