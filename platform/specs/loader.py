"""YAML -> frozen dataclasses, checked once up front, with errors that name the file and the key."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from nerlab.platform.errors import SpecError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: a folder, not a spec file")
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        text = path.read_text(encoding="utf-8")
        _refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), str(path))  # nodes only: runs nothing
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise SpecError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8") from None
    if data is None:
        raise SpecError(f"{path}: empty spec (expected a mapping of keys such as name, data, train)")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def _refuse_duplicate_keys(node, source: str, path: str = "") -> None:
    """YAML keeps the last of two equal keys silently; a spec that sets ``train.lr`` twice is an error."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                raise SpecError(f"{source}:{key_node.start_mark.line + 1}: {path}{key}: duplicate key")
            seen.add(key)
            _refuse_duplicate_keys(value, source, f"{path}{key}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _refuse_duplicate_keys(value, source, f"{path.rstrip('.')}[{i}].")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(tp, value: Any, key: str, source: str):
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key, source)
            except SpecError as e:
                errors.append(str(e))
        raise SpecError(errors[0] if len(errors) == 1 else
                        f"{source}: {key}: expected one of {', '.join(_type_name(a) for a in args)}, "
                        f"got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SpecError(f"{source}: {key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, source, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise SpecError(f"{source}: {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return tuple(_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{source}: {key}: expected a mapping, got {value!r}")
        k_tp, v_tp = typing.get_args(tp)
        return {_convert(k_tp, k, key, source): _convert(v_tp, v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and not isinstance(value, bool):
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):  # YAML reads 2e-5 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise SpecError(f"{source}: {key}: expected a finite number, got {value!r}")
            return number
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise SpecError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict, source: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types name ``source`` and the key."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise SpecError(f"{source}: {prefix}{unknown[0]}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], prefix + name, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(f"{source}: {prefix}{name}: required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise SpecError(_keyed(str(e), source, prefix, fields)) from None


def _keyed(msg: str, source: str, prefix: str, fields) -> str:
    """``source: key...: msg`` naming the full key once, whatever form a dataclass's check took."""
    if msg.startswith(source):
        return msg
    section = prefix.rstrip(".")
    if section and re.match(rf"{re.escape(section)}[:. \[]", msg):  # names its key already (search.plm: ...)
        return f"{source}: {msg}"
    first = re.match(r"[A-Za-z_]\w*", msg)
    if first and first.group(0) in fields:  # "lr must be > 0": the field of this section
        return f"{source}: {prefix}{msg}"
    return f"{source}: {section or 'spec'}: {msg}"


def to_dict(obj) -> Any:
    """A dataclass back to plain YAML/JSON-able data (tuples as lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
