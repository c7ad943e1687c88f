"""Typed configuration from environment variables (docs/design.md, "Configuration").

    @dataclass
    class LearnerConfig:
        expert_ratio: float = setting("EXPERT_RATIO", 0.9, type=float, min=0.0, max=1.0,
                                      help="probability the expert acts (start of the schedule)")
        device: str = setting("DEVICE", "auto", type=str, choices=("auto", "cpu", "cuda"))

    cfg = load_config(LearnerConfig)   # raises ConfigError naming the variable and the allowed range

Parsing rules (why: compose files and shells make these the common mistakes):
  * bool: 1/0/true/false/yes/no/on/off, case-insensitive.
  * int: also accepts "1_000_000" and integral floats such as "1e6" (frame counts are large).
  * float: finite values only (nan would slip through every range check).
  * An empty value ("VAR=", what compose passes for an unset ${VAR}) means "use the default"
    for non-str settings; for str settings "" is a value.
Environment variables that no setting names are ignored.  A field declared without `setting`,
or with env=None, is not configurable from the environment and keeps its default.
"""
from __future__ import annotations

import builtins
import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

_TYPES = (int, float, str, bool)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


def setting(env: str | None, default: Any, *, type: type | None = None, min: Any = None,
            max: Any = None, choices: tuple | list | None = None, help: str = ""):
    """A dataclass field read from env var `env` (None: not configurable) with validation.
    `type` defaults to the type of `default` (give it explicitly when the default is None)."""
    if type is None:
        type = builtins.type(default)
    if type not in _TYPES:
        raise TypeError(f"setting {env}: type must be one of int, float, str, bool")
    if type in (str, bool) and (min is not None or max is not None):
        raise TypeError(f"setting {env}: min/max only apply to int and float")
    meta = {"env": env, "type": type, "min": min, "max": max,
            "choices": tuple(choices) if choices is not None else None, "help": help}
    return dataclasses.field(default=default, metadata={"setting": meta})


def _settings(cls_or_obj) -> list[tuple[dataclasses.Field, dict | None]]:
    return [(f, f.metadata.get("setting")) for f in dataclasses.fields(cls_or_obj)]


def _label(f: dataclasses.Field, meta: dict | None) -> str:
    return (meta and meta["env"]) or f.name


def allowed(meta: dict) -> str:
    """Human-readable allowed values: '0.0 <= value <= 1.0', 'one of: a, b', or ''."""
    if meta["choices"] is not None:
        return "one of: " + ", ".join(str(c) for c in meta["choices"])
    lo, hi = meta["min"], meta["max"]
    if lo is not None and hi is not None:
        return f"{lo!r} <= value <= {hi!r}"
    if lo is not None:
        return f"value >= {lo!r}"
    if hi is not None:
        return f"value <= {hi!r}"
    return ""


def parse(meta: dict, raw: str, name: str) -> Any:
    """Env string -> typed value (not yet range-checked)."""
    t, s = meta["type"], raw.strip()
    if t is str:
        return raw
    if t is bool:
        if s.lower() not in _TRUE + _FALSE:
            raise ConfigError(f"{name}={raw} is not a valid bool: allowed 1/0/true/false/yes/no")
        return s.lower() in _TRUE
    try:
        x = float(s)
    except ValueError:
        x = math.nan
    if t is float:
        if not math.isfinite(x):
            raise ConfigError(f"{name}={raw} is not a valid (finite) float")
        return x
    try:
        return int(s)  # exact, even beyond float precision
    except ValueError:
        if math.isfinite(x) and x.is_integer():
            return int(x)
    raise ConfigError(f"{name}={raw} is not a valid int")


def check(meta: dict, value: Any, name: str, shown: str | None = None) -> Any:
    """Type- and range-check one value; returns it (ints widened to float for float settings).
    `shown` is how the value appears in the message (the raw env string when loading)."""
    if value is None:  # a default of None means "unset" (e.g. an optional seed)
        return None
    shown = str(value) if shown is None else shown
    t = meta["type"]
    # a float setting takes ints too; bools are ints to Python, so only a bool setting takes one
    if not isinstance(value, (int, float) if t is float else t) or (t is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name}={shown} has the wrong type: expected {t.__name__}, got {type(value).__name__}")
    if t is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{name}={shown} is not a finite float")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{name}={shown} is not one of the allowed choices: "
                          + ", ".join(str(c) for c in meta["choices"]))
    if (meta["min"] is not None and value < meta["min"]) or (meta["max"] is not None and value > meta["max"]):
        raise ConfigError(f"{name}={shown} is out of range: allowed {allowed(meta)}")
    return value


def load_config(cls, environ: Mapping[str, str] | None = None):
    """Build `cls` (a dataclass of `setting` fields) from the environment; ConfigError on a bad
    value.  Defaults are validated too, so a bad default fails at start, not mid-run."""
    environ = os.environ if environ is None else environ
    kwargs = {}
    for f, meta in _settings(cls):
        if meta is None:
            continue  # plain field: dataclass default
        name = _label(f, meta)
        raw = environ.get(meta["env"]) if meta["env"] else None
        if raw is None or (raw.strip() == "" and meta["type"] is not str):
            kwargs[f.name] = check(meta, f.default, name)
        else:
            kwargs[f.name] = check(meta, parse(meta, raw, name), name, shown=raw)
    return cls(**kwargs)


def validate(instance) -> None:
    """Re-check every setting of an instance (after a live change via dataclasses.replace or
    setattr); ConfigError with the same messages as load_config."""
    for f, meta in _settings(instance):
        if meta is not None:
            check(meta, getattr(instance, f.name), _label(f, meta))


def describe(cls) -> list[tuple[str, str, Any, str, str]]:
    """[(env var, type name, default, allowed range, help)] of the configurable settings, for
    READMEs and --help output."""
    return [(meta["env"], meta["type"].__name__, f.default, allowed(meta), meta["help"])
            for f, meta in _settings(cls) if meta is not None and meta["env"]]
