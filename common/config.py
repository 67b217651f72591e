"""Config dataclasses loaded from YAML and overridden from the command line (``key=value``).

Every stage has one dataclass; nested dataclasses are addressed with dots (``data.fps=25``). Values on the
command line are parsed as YAML scalars, so ``lr=3e-4``, ``causal=false`` and ``ratios=[0.8,0.1,0.1]`` work.
Unknown keys are errors (a typo must not silently train the wrong model).
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly nested) dict, refusing unknown keys."""
    values = dict(values or {})
    types = _field_types(cls)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)} for {cls.__name__}; "
                          f"known: {', '.join(sorted(types))}")
    kwargs = {}
    for name, tp in types.items():
        if name not in values:
            continue
        value = values[name]
        if _is_dataclass_type(tp):
            if isinstance(value, tp):
                kwargs[name] = value
            elif isinstance(value, dict):
                kwargs[name] = from_dict(tp, value, where=f"{where}{name}.")
            else:
                raise ConfigError(f"config key {where}{name} must be a mapping, got {value!r}")
        else:
            kwargs[name] = _coerce(value, tp, f"{where}{name}")
    return cls(**kwargs)


def _coerce(value, tp, key):
    origin = typing.get_origin(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (tuple,) and isinstance(value, list):
        return tuple(value)
    if tp is str and value is not None and not isinstance(value, str):
        return str(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"config key {key} must be true/false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"config key {key} must be an integer, got {value!r}")
    return value


def to_dict(cfg) -> dict[str, Any]:
    """Plain, YAML/JSON-safe dict of a config (tuples become lists)."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return clean(dataclasses.asdict(cfg))


def apply_overrides(values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    values = dict(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        parsed = yaml.safe_load(raw) if raw != "" else ""
        node = values
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = parsed
    return values


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls`` <- YAML file ``path`` <- ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        values = loaded
    values = apply_overrides(values, overrides)
    return from_dict(cls, values)


def split_cli_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` overrides from ordinary ``--flags`` of an argparse command line."""
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    rest = [a for a in argv if a not in overrides]
    return rest, overrides
