"""Experiment config validation: one clear message, naming the key, before any job starts.

The JSON schema (workflow/schemas/config.schema.yaml) is the contract; this module fills its
defaults, turns jsonschema's errors into sentences a user can act on, and adds the checks a
schema cannot express (a rewind epoch past the end of training). It imports no torch, so the
Snakefile can call it at start-up for free.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """The config is invalid; the message names the key, the value found and what is allowed."""


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f)


def deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``new`` into ``base`` recursively (dicts merge, everything else replaces)."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def load_config_files(paths: list[str | Path], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config made of exactly these files (later ones win) and ``--config`` overrides.

    Snakemake merges ``--configfile`` on top of the Snakefile's default config.yaml, so a preset
    that leaves a key out would silently inherit the digits default; a preset must stand alone.
    """
    cfg: dict[str, Any] = {}
    for path in paths:
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, found {type(loaded).__name__}")
        deep_update(cfg, loaded)
    return deep_update(cfg, _typed(overrides or {}))


def _typed(value: Any) -> Any:
    """``--config`` values arrive as strings below the top level ('0.02'); read them as YAML."""
    if isinstance(value, Mapping):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, str):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``config`` with defaults filled in, or raise :class:`ConfigError`."""
    cfg = copy.deepcopy(dict(config))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        raise ConfigError(_describe(errors[0], schema))
    _fill_defaults(cfg, schema, schema)
    _check_semantics(cfg)
    cfg["rewind_epochs_by_width"] = _rewinds_by_width(cfg)
    return cfg


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(err: jsonschema.ValidationError, schema: Mapping[str, Any]) -> str:
    key = _key(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        where = f"under {key!r}" if err.absolute_path else "at the top level"
        full = [f"{key}.{u}" if err.absolute_path else u for u in unknown]
        return f"config: unknown key {', '.join(repr(u) for u in full)} {where}; allowed keys: {', '.join(allowed)}"
    if v == "required":
        return f"config: {key!r} is missing a required key: {err.message.split(' is a required')[0]}"
    if v == "enum":
        return f"config: {key!r} is {err.instance!r}; allowed values: {', '.join(map(str, err.validator_value))}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        rng = _range(err.schema)
        return f"config: {key!r} is {err.instance!r}; allowed values: {rng}"
    if v == "type":
        return f"config: {key!r} is {err.instance!r}; expected type: {err.validator_value}"
    return f"config: {key!r}: {err.message}"


def _range(s: Mapping[str, Any]) -> str:
    lo = f"> {s['exclusiveMinimum']}" if "exclusiveMinimum" in s else (f">= {s['minimum']}" if "minimum" in s else "")
    hi = f"< {s['exclusiveMaximum']}" if "exclusiveMaximum" in s else (f"<= {s['maximum']}" if "maximum" in s else "")
    return " and ".join(x for x in (lo, hi) if x)


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if ref and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _fill_defaults(obj: dict[str, Any], node: Mapping[str, Any], root: Mapping[str, Any]) -> None:
    node = _resolve(node, root)
    for name, sub in node.get("properties", {}).items():
        sub = _resolve(sub, root)
        if name not in obj and "default" in sub:
            obj[name] = copy.deepcopy(sub["default"])
        if isinstance(obj.get(name), dict):
            _fill_defaults(obj[name], sub, root)


def _check_semantics(cfg: Mapping[str, Any]) -> None:
    dense_epochs = cfg["dense"]["epochs"]
    sparse_epochs = cfg["sparse"]["train"]["epochs"]
    limit = min(dense_epochs, sparse_epochs)
    for i, k in enumerate(cfg["rewind_epochs"]):
        if k >= limit:
            raise ConfigError(
                f"config: 'rewind_epochs[{i}]' is {k}; allowed values: 0 <= k < {limit} "
                f"(dense.epochs = {dense_epochs}, sparse.train.epochs = {sparse_epochs})"
            )
    for key, ks in cfg.get("rewind_epochs_by_width", {}).items():
        for i, k in enumerate(ks):
            if k >= limit:
                raise ConfigError(
                    f"config: 'rewind_epochs_by_width.{key}[{i}]' is {k}; allowed values: 0 <= k < {limit} "
                    f"(dense.epochs = {dense_epochs}, sparse.train.epochs = {sparse_epochs})"
                )
    imp = cfg["imp"]
    if imp["mode"] == "rewind" and not imp["rewind_epoch"] < dense_epochs:
        raise ConfigError(
            f"config: 'imp.rewind_epoch' is {imp['rewind_epoch']}; "
            f"allowed values: 0 <= k < {dense_epochs} (dense.epochs)"
        )
    for i, pair in enumerate(cfg["seed_pairs"]):
        if pair[0] == pair[1]:
            raise ConfigError(f"config: 'seed_pairs[{i}]' is {pair}; seeds of A and B must differ")
    for key, block in (("dense", cfg["dense"]), ("imp.train", cfg["imp"]["train"])):
        if block["warmup_epochs"] > block["epochs"]:
            raise ConfigError(
                f"config: '{key}.warmup_epochs' is {block['warmup_epochs']}; allowed values: <= {block['epochs']} "
                f"({key}.epochs)"
            )
    ks = list(cfg["rewind_epochs"]) + [k for ks in cfg.get("rewind_epochs_by_width", {}).values() for k in ks]
    shortest = cfg["sparse"]["train"]["epochs"] - max(ks)  # a run from k trains epochs - k
    if cfg["sparse"]["train"]["warmup_epochs"] > shortest:
        raise ConfigError(
            f"config: 'sparse.train.warmup_epochs' is {cfg['sparse']['train']['warmup_epochs']}; allowed values: "
            f"<= {shortest} (the shortest sparse run, from the largest rewind epoch)"
        )


def _rewinds_by_width(cfg: Mapping[str, Any]) -> dict[str, list[int]]:
    """``rewind_epochs_by_width`` keyed by the width as paths spell it (``4`` -> ``"4"``).

    YAML reads ``4:`` as an int and ``"4":`` as a string; both name model width 4.
    """
    widths = {f"{float(w):g}" for w in cfg["model"]["widths"]}
    out: dict[str, list[int]] = {}
    for key, ks in cfg.get("rewind_epochs_by_width", {}).items():
        try:
            width = f"{float(key):g}"
        except (TypeError, ValueError):
            width = None
        if width not in widths or width in out:
            problem = "names a width twice" if width in out else "is not one of model.widths"
            raise ConfigError(
                f"config: 'rewind_epochs_by_width' key {key!r} {problem}; allowed keys: {', '.join(sorted(widths))}"
            )
        out[width] = list(ks)
    return out
