"""Typed configs from YAML: strict, so a typo fails before any work starts.

Every config in rlvr is a frozen-by-convention dataclass with a docstring under each field.
`from_dict` builds one from plain data (yaml.safe_load output) and raises `ConfigError`
naming the dotted key path for an unknown key, a wrong type or a missing required field.
`apply_overrides` applies `--set a.b=c` strings to plain data before validation.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or config that cannot be used; the message names the key path."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain PyYAML keeps the last
    silently, so a recipe would run with a value its author may not have meant)."""

    def construct_mapping(self, node, deep=False):
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then overriding a merged key is allowed
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in first_line:
                    raise ConfigError(f"duplicate key {key!r} (lines {first_line[key]} and {line})")
                first_line[key] = line
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it below
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings; the value is parsed as YAML (so 3, 1e-4, true, [1,2] work).

    A numeric path part indexes a list (`stages.1.steps=5`).
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[: i + 1]), create=True)
        last = parts[-1]
        if isinstance(node, list):
            idx = _index(node, last, key)
            node[idx] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is not a mapping or list")
    return data


def _index(node: list, part: str, path: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(f"--set {path}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _child(node: Any, part: str, path: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, path)]
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            if not create:
                raise ConfigError(f"unknown key {path}")
            node[part] = {}
        return node[part]
    raise ConfigError(f"--set {path}: parent is not a mapping or list")


def from_dict(cls: type[T], data: Any, path: str = "", defaults: dict[type, dict] | None = None) -> T:
    """Build dataclass `cls` from `data`, validating keys and types recursively.

    `defaults`: plain data per dataclass type that fills the keys `data` leaves out wherever a
    field of that type is built below (a recipe's `sampling:` for every stage's `sampling`); a
    block given on the way down becomes the default of the blocks beneath it. A class's
    `shorthand` maps flat keys to the block field they belong to (`max_new_tokens` ->
    `sampling`), its `renamed` maps old keys to what replaced them, its `scalar_key` names the
    field a plain string stands for (`engine: fast` is `engine: {name: fast}`).
    """
    if isinstance(data, cls):
        return data
    where = path or cls.__name__
    if data is None:
        data = {}
    data = _unfold_scalar(cls, data)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    if defaults and cls in defaults:
        data = {**defaults[cls], **data}  # the given keys win
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _fold_shorthand(cls, data, path)
    _check_keys(cls, data, fields, path)
    hints = typing.get_type_hints(cls)
    defaults = _narrow_defaults(defaults, hints, data)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name), defaults)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {_join(path, name)}")
        elif defaults and f.default_factory is not dataclasses.MISSING:
            kwargs[name] = _with_defaults(f.default_factory(), defaults, _join(path, name))
    return _construct(cls, kwargs, fields, path)


def _unfold_scalar(cls, data: Any) -> Any:
    """A string given for a class with a `scalar_key`, as the mapping it is shorthand for."""
    key = getattr(cls, "scalar_key", None)
    return {key: data} if key and isinstance(data, str) else data


def _fold_shorthand(cls, data: dict, path: str) -> dict:
    """`data` with the class's flat shorthand keys moved into their block (`max_new_tokens: 64`
    -> `sampling: {max_new_tokens: 64}`); the same key given both ways is an error."""
    shorthand = getattr(cls, "shorthand", {})
    flat = [key for key in data if key in shorthand]
    if not flat:
        return data
    data = dict(data)
    for key in flat:
        block = shorthand[key]
        nested = data.get(block) or {}
        if not isinstance(nested, dict):
            raise ConfigError(f"{_join(path, block)}: expected a mapping, got {type(nested).__name__}")
        if key in nested:
            raise ConfigError(f"{_join(path, key)}: given twice (also as {block}.{key}); keep one")
        data[block] = {**nested, key: data.pop(key)}
    return data


def _check_keys(cls, data: dict, fields: dict, path: str) -> None:
    unknown = sorted(set(data) - set(fields))
    renamed = getattr(cls, "renamed", {})
    for key in unknown:
        if key in renamed:
            raise ConfigError(f"{_join(path, key)}: {renamed[key]}")
    if unknown:
        raise ConfigError(
            f"unknown key {_join(path, unknown[0])}; valid keys: {', '.join(sorted(fields))}"
        )


def _narrow_defaults(defaults: dict | None, hints: dict, data: dict) -> dict | None:
    """The defaults for the fields below: a block of a defaulted type given here adds its keys."""
    if not defaults:
        return defaults
    narrowed = dict(defaults)
    for name, tp in hints.items():
        given = _unfold_scalar(tp, data.get(name)) if tp in defaults else None
        if isinstance(given, dict):
            narrowed[tp] = {**defaults[tp], **given}
    return narrowed


def _with_defaults(value: Any, defaults: dict, path: str) -> Any:
    """A field left out (its default instance) with the defaulted blocks inside it filled."""
    if type(value) in defaults:
        return from_dict(type(value), {}, path, defaults)
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    fields = {f.name: f for f in dataclasses.fields(value) if f.init}
    kwargs = {name: _with_defaults(getattr(value, name), defaults, _join(path, name)) for name in fields}
    if all(kwargs[name] is getattr(value, name) for name in fields):
        return value
    return _construct(type(value), kwargs, fields, path)


def _construct(cls, kwargs: dict, fields: dict, path: str):
    """cls(**kwargs); a `__post_init__` ValueError "name: message" becomes "path.name: message"."""
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        if isinstance(e, ConfigError):
            raise
        field_name, sep, rest = str(e).partition(": ")
        # "loss_type: unknown ..." -> "stages.7.loss_type: unknown ..." (also "sampling.temperature: ...")
        if sep and field_name.split(".")[0] in fields:
            raise ConfigError(f"{_join(path, field_name)}: {rest}") from e
        raise ConfigError(f"{path or cls.__name__}: {e}") from e


def check_field(name: str, check: Callable[[], Any]) -> None:
    """Run a config's `__post_init__` check of field `name`; its ValueError is re-raised as
    "name: message", which `from_dict` turns into the dotted key (`stages.4.loss_type: ...`)."""
    try:
        check()
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def to_dict(obj: Any) -> Any:
    """Plain data (for YAML/JSON) from a config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str, defaults: dict | None = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, defaults)
            except ConfigError:
                pass  # the next member may fit; none fitting is reported below
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        item_tp = args[0] if args else Any
        return [_convert(item_tp, v, f"{path}.{i}", defaults) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _convert(vt, v, f"{path}.{k}", defaults) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path, defaults)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 1e-4 (no dot) as a string; accept numeric strings.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a path string, got {value!r}")
        return Path(value)
    return value
