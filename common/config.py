"""Config dataclasses loaded from YAML and overridden from the command line (``key=value``).

Every stage has one dataclass; nested dataclasses are addressed with dots (``data.fps=25``). Unknown keys are
errors (a typo must not silently train the wrong model), and so is every value that does not fit its field:

- each value is coerced to its field's annotated type or refused with the key, the value and the expected type:
  ``int`` (integral numbers, also written ``1e3``), ``float`` (finite numbers; YAML 1.1 reads ``3e-4`` as a
  string, so numeric strings are parsed), ``bool`` (true / false), ``str``, ``tuple[...]`` / ``list[...]`` (each
  item coerced; a fixed-length tuple needs that many), ``dict``, ``Literal[...]`` (one of fixed choices);
- values on the command line are parsed as YAML scalars for every type but ``str`` (``lr=3e-4``,
  ``causal=false``, ``ratios=[0.8,0.1,0.1]``); a ``str`` field takes the text as typed, so
  ``train.mixed_precision=no`` stays ``"no"`` (YAML 1.1 would read it as false);
- ranges (``train.max_steps >= 1``, ...) are each config's ``validate()``, which :func:`load_config` calls.

A command line's ``key=value`` overrides are what argparse did not take, and only words whose key looks like a
dotted identifier (``train.lr``): a path holding ``=`` given to a flag is never taken for an override
(:func:`parse_args_and_overrides`).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, TypeVar

import yaml

T = TypeVar("T")

# key=value with a dotted-identifier key (train.lr=3e-4); the value is everything after the first '='
_OVERRIDE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(.*)", re.DOTALL)


class ConfigError(ValueError):
    pass


class CliValue(str):
    """The text of a ``key=value`` override, parsed once its field's type is known."""


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly nested) dict, refusing unknown keys and values that do not fit
    their field's type (:func:`coerce`)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config {where.rstrip('.') or cls.__name__} must be a mapping, got {_show(values)}")
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_), key=str)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + str(k) for k in unknown)} for {cls.__name__}; "
                          f"known: {', '.join(sorted(types_))}")
    kwargs = {}
    for name, tp in types_.items():
        if name not in values:
            continue
        value = values[name]
        if _is_dataclass_type(tp):
            if isinstance(value, tp):
                kwargs[name] = value
            else:
                if isinstance(value, CliValue):
                    value = _parse_yaml(value, f"{where}{name}")
                kwargs[name] = from_dict(tp, value, where=f"{where}{name}.")
        else:
            kwargs[name] = coerce(value, tp, f"{where}{name}")
    return cls(**kwargs)


def _show(value) -> str:
    text = repr(value)
    return (text if len(text) <= 80 else text[:77] + "...") + f" ({type(value).__name__})"


def _refuse(key: str, value, expected: str, hint: str = "") -> ConfigError:
    return ConfigError(f"config key {key}: expected {expected}, got {_show(value)}{hint}")


def _parse_yaml(raw: str, key: str):
    if raw == "":
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"config key {key}: {raw!r} is not a YAML value ({str(e).splitlines()[0]})") from None


def _cli_value(raw: CliValue, tp, key: str):
    """A command-line value: for a string field the text as typed (a quoted one unquoted), else parsed as YAML."""
    if tp is str or (typing.get_origin(tp) is Literal and all(isinstance(c, str) for c in typing.get_args(tp))):
        text = str(raw)
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                return text
            return parsed if isinstance(parsed, str) else text
        return text
    return _parse_yaml(str(raw), key)


def _number(value) -> float | None:
    """``value`` as a float when it is a number or a numeric string (never a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _coerce_int(value, key):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    x = _number(value)
    if x is None or not math.isfinite(x) or x != int(x):
        raise _refuse(key, value, "an integer")
    return int(x)


def _coerce_float(value, key):
    x = _number(value)
    if x is None:
        raise _refuse(key, value, "a number (float)")
    if not math.isfinite(x):
        raise _refuse(key, value, "a finite number (float)")
    return x


def _coerce_str(value, key):
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise _refuse(key, value, "a string", hint="; YAML reads yes/no/on/off/true/false as booleans: quote it")
    if isinstance(value, (int, float)):
        return str(value)
    raise _refuse(key, value, "a string")


def _coerce_sequence(value, tp, key, origin):
    if not isinstance(value, (list, tuple)):
        raise _refuse(key, value, f"a list ({_type_name(tp)})")
    args = typing.get_args(tp)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _refuse(key, value, f"{len(args)} items ({_type_name(tp)})")
        items = [coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
    else:
        item_type = args[0] if args else Any
        items = [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _type_name(tp) -> str:
    if typing.get_args(tp) or not hasattr(tp, "__name__"):
        return str(tp).replace("typing.", "")
    return tp.__name__


def coerce(value, tp, key: str):
    """``value`` as field type ``tp`` (the module docstring's rules), or :class:`ConfigError` naming ``key``, the
    value and the expected type."""
    if isinstance(value, CliValue):
        value = _cli_value(value, tp, key)
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) or value not in choices:
            raise _refuse(key, value, "one of " + ", ".join(map(repr, choices)))
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return coerce(value, rest[0], key) if len(rest) == 1 else value
    if tp is bool:
        if not isinstance(value, bool):
            raise _refuse(key, value, "true or false")
        return value
    if tp is int:
        return _coerce_int(value, key)
    if tp is float:
        return _coerce_float(value, key)
    if tp is str:
        return _coerce_str(value, key)
    if origin in (tuple, list):
        return _coerce_sequence(value, tp, key, origin)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _refuse(key, value, "a mapping")
        return value
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


def flat_dict(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"train.lr": 3e-4, ...}``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(mine: dict, theirs: dict, ignore: Iterable[str] = (), same=None) -> list[str]:
    """``key: theirs -> mine`` for every dotted key whose value differs between two config dicts (tuples and
    lists compare equal), except the keys in ``ignore``; ``same(key, a, b)`` may declare more values equal."""
    a, b = flat_dict(to_plain(mine)), flat_dict(to_plain(theirs))
    skip = set(ignore)
    missing = "(unset)"
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k, missing), b.get(k, missing)
        if k in skip or x == y or (same is not None and same(k, x, y)):
            continue
        out.append(f"{k}: {y!r} -> {x!r}")
    return out


def with_added_keys(values: dict, added: Mapping[str, Any], section: str = "") -> tuple[dict, list[str]]:
    """``values``, a config dict an older version wrote, with each dotted key of ``added`` it lacks set to the value
    that reproduces that version (the key's former behaviour, not always today's default: a stage config's
    ``ADDED_KEYS``, common/train/config.py); returns the new dict and the keys filled. ``section`` (``"model."``)
    takes only the entries under it, for a dict that holds that section alone. A key whose section is missing is
    left missing (the comparison then names it); a ``values`` that is no dict is returned as it is (the reader's
    own checks refuse it)."""
    if not isinstance(values, dict):
        return values, []
    out, filled = copy.deepcopy(values), []
    for key, value in added.items():
        if not key.startswith(section):
            continue
        *parents, leaf = key[len(section):].split(".")
        node = out
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = copy.deepcopy(value)
            filled.append(key)
    return out, filled


def to_plain(d):
    """Tuples as lists, recursively (a config dict and its JSON copy compare equal)."""
    if isinstance(d, dict):
        return {k: to_plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [to_plain(v) for v in d]
    return d


def apply_overrides(values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``values`` with every ``key=value`` of ``overrides`` set (dotted keys address nested sections); each value
    stays text (:class:`CliValue`) until :func:`from_dict` knows its field's type."""
    values = dict(values)
    for item in overrides:
        m = _OVERRIDE.fullmatch(item.strip()) if isinstance(item, str) else None
        if m is None:
            raise ConfigError(f"override {item!r} is not key=value with a dotted key (e.g. train.lr=3e-4)")
        key, raw = m.groups()
        node = values
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = CliValue(raw)
    return values


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls`` <- YAML file ``path`` <- ``key=value`` overrides, then ``validate()`` when the
    class has one."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            with open(path) as f:
                loaded = yaml.safe_load(f) or {}
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
            raise ConfigError(f"config file {path} is not readable YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        values = loaded
    values = apply_overrides(values, overrides)
    cfg = from_dict(cls, values)
    return cfg.validate() if hasattr(cfg, "validate") else cfg


def is_override(word: str) -> bool:
    """``key=value`` with a dotted-identifier key (``train.lr=3e-4``); a path such as ``runs/a=b`` is not one."""
    return _OVERRIDE.fullmatch(word) is not None


def parse_args_and_overrides(ap: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """argparse's flags, then ``key=value`` overrides from what is left; anything else left is an error.

    Flags take their values first, so ``--out runs/a=b`` is the folder ``runs/a=b``, never an override."""
    args, rest = ap.parse_known_args(argv)
    bad = [w for w in rest if not is_override(w)]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)} (overrides are key=value with a dotted key, "
                 "e.g. train.lr=3e-4)")
    return args, rest


# --- argparse types: flags refused when out of range, with the flag and the value named by argparse ------------
def int_arg(minimum: int | None = None, maximum: int | None = None):
    """An argparse ``type`` for integers in ``[minimum, maximum]``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        _check_range(value, minimum, maximum, text)
        return value
    return parse


def float_arg(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None):
    """An argparse ``type`` for finite floats in ``[minimum, maximum]`` (and ``> above``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, got {text}")
        _check_range(value, minimum, maximum, text)
        return value
    return parse


def device_arg(text: str):
    """An argparse ``type`` for a torch device that exists here (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device ({str(e).splitlines()[0][:120]})") from None
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= n:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {n} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: only cpu, cuda and mps devices are supported")
    return str(device)


def _check_range(value, minimum, maximum, text: str) -> None:
    if minimum is not None and value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {text}")


# --- ranges: what each config's validate() uses ---------------------------------------------------------------
def check_range(cfg, key: str, minimum=None, maximum=None, *, above=None, prefix: str = "") -> None:
    """Refuse ``cfg.<key>`` outside ``[minimum, maximum]`` (or not ``> above``) with the key and the value."""
    value = getattr(cfg, key)
    ok = ((minimum is None or value >= minimum) and (maximum is None or value <= maximum)
          and (above is None or value > above))
    if not ok:
        bounds = [f">= {minimum}" if minimum is not None else "", f"> {above}" if above is not None else "",
                  f"<= {maximum}" if maximum is not None else ""]
        raise ConfigError(f"config key {prefix}{key} must be {' and '.join(b for b in bounds if b)}, got {value!r}")


def check_choice(cfg, key: str, choices, prefix: str = "") -> None:
    value = getattr(cfg, key)
    if value not in choices:
        raise ConfigError(f"config key {prefix}{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")
