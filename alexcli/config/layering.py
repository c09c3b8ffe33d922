"""How a configuration is resolved: each layer overrides the one before it.

    defaults  <  preset  <  recipe (TOML)  <  --set key=value  <  named flags

`merge()` applies one layer: it type-checks every value against the dataclass
annotations, rejects unknown keys, and reports a value out of its bounds, each naming
the key and where it came from ("--set", a file, a flag as typed). The result is one
frozen dataclass, never mutated afterwards, saved beside every output (`to_dict`);
`fingerprint_view` is the part of it that changes a stage's results.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from alexcli.config.schema import CHECKING, RUNTIME, BoundError, TrainConfig, preset
from alexcli.errors import ConfigError
from alexcli.jsonable import jsonable

T = TypeVar("T")

FLAGS = "flags"  # `where` for values from command-line flags


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error is one line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except UnicodeDecodeError:  # a JPEG given as the recipe, say
        raise ConfigError(f"{path}: not a TOML file (not UTF-8 text)") from None


def parse_sets(sets: Sequence[str]) -> dict[str, Any]:
    """`["train.lr=0.02", "model.towers=1"]` → nested dict. Values are read as TOML
    literals (numbers, booleans, `[1, 2]`), else taken as plain strings."""
    out: dict[str, Any] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is set twice")
        node[parts[-1]] = value
    return out


def merge(cfg: T, data: Mapping[str, Any], where: str, _prefix: str = "") -> T:
    """A copy of dataclass `cfg` with the fields in `data` replaced, type-checked and
    bounds-checked. Nested dataclass fields take nested mappings. `where` names the
    source of `data` (a file, "--set", `FLAGS`) in error messages."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"merge() needs a dataclass instance, got {type(cfg)}")
    data = _resolve_aliases(type(cfg), data)
    hints = typing.get_type_hints(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        path = f"{_prefix}{key}"
        if name not in fields:
            raise ConfigError(
                f"{where}: unknown key {path!r}",
                hint=f"known keys here: {', '.join(sorted(fields))}",
            )
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {path!r} must be a table of keys")
            changes[name] = merge(current, value, where, f"{path}.")
        else:
            changes[name] = _coerce(value, hints[name], path, where)
    try:
        return dataclasses.replace(cfg, **changes)
    except BoundError as e:  # the value as it was given, not as coerced
        given = data.get(e.name, data.get(e.name.replace("_", "-"), e.value))
        raise _bad(where, f"{_prefix}{e.name}", given, e.requirement) from None


def _resolve_aliases(cls: type, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{"crop": 64}` → `{"model": {"crop": 64}}` for a class whose ALIASES say so."""
    aliases: dict[str, tuple[str, str]] = getattr(cls, "ALIASES", {})
    if not any(k in aliases for k in data):
        return data
    out = {k: v for k, v in data.items() if k not in aliases}
    for key, (table, name) in aliases.items():
        if key in data:
            nested = out.get(table, {})
            nested = dict(nested) if isinstance(nested, Mapping) else nested
            if isinstance(nested, dict):
                nested.setdefault(name, data[key])
            out[table] = nested
    return out


def with_values(cfg: T, where: str = FLAGS, **values: Any) -> T:
    """`merge` for keyword arguments, skipping the ones that are None (not given)."""
    return merge(cfg, {k: v for k, v in values.items() if v is not None}, where)


def train_config(
    *,
    preset_name: str | None = None,
    config_file: Path | None = None,
    sets: Sequence[str] = (),
    base: TrainConfig | None = None,
    world: int = 1,
    **flags: Any,
) -> TrainConfig:
    """preset (or `base`, a resumed run's configuration) < TOML file < --set < flags,
    then the batch rule (`follow_batch`) for a job of `world` processes.

    The TOML file holds TrainConfig keys at its top level, or a recipe's `[train]`
    table; `--set` takes `lr=0.02`, `model.towers=1` (a leading `train.` is allowed).
    Flags left at None are not given.
    """
    data = load_toml(config_file) if config_file is not None else {}
    if isinstance(data.get("train"), dict):
        data = data["train"]
    overrides = parse_sets(sets)
    if set(overrides) == {"train"} and isinstance(overrides["train"], dict):
        overrides = overrides["train"]
    name = preset_name or overrides.get("preset") or data.get("preset")
    if base is None or name is not None:
        base = preset(str(name or "paper"))
    cfg = base
    if config_file is not None:
        cfg = merge(cfg, data, str(config_file))
    cfg = merge(cfg, overrides, "--set")
    cfg = with_values(cfg, **flags)
    given = layers_given(data, overrides, {k: v for k, v in flags.items() if v is not None})
    return follow_batch(cfg, base, given=given, world=world)


def layers_given(*layers: Mapping[str, Any]) -> dict[str, int]:
    """Each top-level key some layer sets (spelt as a field: `batch-size` → `batch_size`),
    and the highest layer that sets it (0 the lowest given)."""
    return {k.replace("-", "_"): i for i, layer in enumerate(layers) for k in layer}


# The linear rule's warm-up, when it raises the lr: Goyal et al.'s 5 epochs of a 90-epoch
# run, the same share (1/18) of a shorter one.
WARMUP_EPOCHS, WARMUP_SHARE = 5.0, 1 / 18


def follow_batch(
    cfg: TrainConfig, base: TrainConfig, *, given: Mapping[str, int], world: int = 1
) -> TrainConfig:
    """`cfg` with its global batch and lr resolved: `batch_per_device` × `world` processes
    is the global batch; under `lr_scaling = "linear"`, a global batch other than
    `base`'s (the preset's, or a resumed run's) with no lr given scales the lr linearly
    from `base`'s (Goyal et al. 2017, "Accurate, Large Minibatch SGD"), and when that
    raises it, warms up over min(5, epochs/18) epochs unless a warm-up is given or `base`
    has one. `given`: the keys the layers set, each with its highest layer
    (`layers_given`): of `batch_size` and `batch_per_device`, the higher layer's wins."""
    if cfg.batch_per_device is not None:
        batch = cfg.batch_per_device * world
        per_device, whole = given.get("batch_per_device", -1), given.get("batch_size", -1)
        if whole > per_device:  # a global batch given over a per-device one
            cfg = dataclasses.replace(cfg, batch_per_device=None)
        elif whole == per_device and cfg.batch_size != batch:
            raise ConfigError(
                f"batch_size {cfg.batch_size} and batch_per_device {cfg.batch_per_device} × "
                f"{world} process(es) = {batch} disagree",
                hint="give one: --batch-size is the global batch, --batch-per-device each "
                "process's",
            )
        else:
            cfg = dataclasses.replace(cfg, batch_size=batch)
    lr0, batch0 = base.lr_scaled_from or (base.lr, base.batch_size)
    if "lr" in given or cfg.lr_scaling != "linear":  # the lr as the layers left it
        kept = base.lr_scaled_from if cfg.lr == base.lr else None
        return dataclasses.replace(cfg, lr_scaled_from=kept)
    if cfg.batch_size == batch0:
        return dataclasses.replace(cfg, lr=lr0, lr_scaled_from=None)
    factor = cfg.batch_size / batch0
    warmup = cfg.warmup_epochs
    if factor > 1 and "warmup_epochs" not in given and base.warmup_epochs == 0:
        warmup = min(WARMUP_EPOCHS, cfg.epochs * WARMUP_SHARE)
    return dataclasses.replace(
        cfg, lr=lr0 * factor, lr_scaled_from=(lr0, batch0), warmup_epochs=warmup
    )


def describe_bound(cfg: TrainConfig) -> str | None:
    """One line when `max_step_norm` binds at the run's lr (printed at the start), else
    None: the gradients it clips to, below `clip_grad_norm`."""
    bound, clip = cfg.max_step_norm, cfg.clip_grad_norm
    if bound is None or cfg.lr <= 0 or (clip is not None and cfg.lr * clip <= bound):
        return None
    instead = "" if clip is None else f" instead of {clip:g}"
    return (
        f"lr {cfg.lr:g} × gradient norm bounded at {bound:g} (max_step_norm): gradients "
        f"clipped to {bound / cfg.lr:.3g}{instead} while the lr is {cfg.lr:g}"
    )


def describe_batch_rule(cfg: TrainConfig, world: int = 1) -> str:
    """One line on how the run's batch and lr were chosen (printed at the start)."""
    split = ""
    if cfg.batch_per_device is not None:
        split = f" ({cfg.batch_per_device} per device × {world})"
    elif world > 1:
        split = f" ({cfg.batch_size // world} per device × {world})"
    batch = f"batch {cfg.batch_size}{split}"
    if cfg.lr_scaled_from is None:
        return f"{batch}, lr {cfg.lr:g}"
    lr0, batch0 = cfg.lr_scaled_from
    warm = f", warmed up over {cfg.warmup_epochs:.3g} epochs" if cfg.warmup_epochs else ""
    return (
        f"{batch}, lr {cfg.lr:g}: the linear rule (Goyal et al. 2017) from lr {lr0:g} at "
        f"batch {batch0}{warm}; --lr sets it yourself, --set lr_scaling=none keeps {lr0:g}"
    )


def _bad(where: str, path: str, value: object, expected: str) -> ConfigError:
    if where == FLAGS:  # as the user typed it: --views 5
        flag = path.rsplit(".", 1)[-1].replace("_", "-")
        shown = f"{value:g}" if isinstance(value, float) else value
        return ConfigError(
            f"--{flag} {shown}: must be {expected}", hint="see `alexcli COMMAND --help`"
        )
    return ConfigError(f"{where}: {path!r} must be {expected}, got {value!r}")


def _coerce(value: Any, annotation: Any, path: str, where: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return _bad(where, path, value, expected)

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, path, where)
            except ConfigError:
                continue
        raise bad(" or ".join(_describe(a) for a in args))
    if origin is Literal:
        for choice in args:
            try:
                if _coerce(value, type(choice), path, where) == choice:
                    return choice
            except ConfigError:
                continue
        raise bad("one of " + ", ".join(repr(a) for a in args))
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise bad("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], path, where) for v in value)
        if len(value) != len(args):
            raise bad(f"a list of {len(args)}")
        return tuple(_coerce(v, a, path, where) for v, a in zip(value, args, strict=True))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
        raise bad("true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise bad("an integer")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise bad("a number")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    raise TypeError(f"config field {path!r}: unsupported annotation {annotation!r}")


_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def to_dict(cfg: Any) -> dict[str, Any]:
    """The configuration as JSON-able data (tuples become lists)."""
    return jsonable(dataclasses.asdict(cfg))


def fingerprint_view(cfg: Any) -> dict[str, Any]:
    """`to_dict` without the `runtime()` fields: what changes a stage's results."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get(RUNTIME):
            continue
        value = getattr(cfg, f.name)
        out[f.name] = (
            fingerprint_view(value) if dataclasses.is_dataclass(value) else jsonable(value)
        )
    return out


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "saved config") -> T:
    """Rebuild a configuration saved with `to_dict` (a checkpoint's, a manifest's):
    types and keys checked, ranges not (what was saved ran)."""
    token = CHECKING.set(False)
    try:
        return merge(cls(), data, where)
    finally:
        CHECKING.reset(token)
