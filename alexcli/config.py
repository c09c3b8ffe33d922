"""Configuration: frozen dataclasses whose defaults are the paper's values.

One configuration per stage, resolved once and never mutated (STYLE habit 3):

    defaults  <  preset  <  recipe (TOML)  <  --set key=value  <  named flags

`merge()` applies each layer; it type-checks every value against the dataclass
annotations and rejects unknown keys with a message naming the key and where it
came from. Fields marked `runtime()` (devices, workers, paths) change how fast a
stage runs, not what it produces, so they stay out of fingerprints.

This module is a leaf: it imports nothing from alexcli but `errors`, and never torch.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from alexcli.errors import ConfigError

T = TypeVar("T")

_RUNTIME = "runtime"


def runtime(default: Any) -> Any:
    """A field that does not change a stage's results (kept out of fingerprints)."""
    return field(default=default, metadata={_RUNTIME: True})


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class PrepareConfig:
    """`alexcli prepare` (PAPER.md "Data"): subset, resize, shard."""

    size: int = 256  # shorter side to `size`, then the central size×size crop
    classes: int | None = None  # a seeded choice of N classes; None: all of them
    wnids: tuple[str, ...] = ()  # an explicit class list (wins over `classes`)
    train_per_class: int | None = None
    val_per_class: int | None = None
    seed: int = 0
    shard_size: int = 1024  # images per HDF5 shard (~200 MB at 256 px)
    # The antialiased filter of the resize (PIL's, its support scaled on reduction).
    # "bilinear" is torchvision's; "lanczos" is sharper and costs 2× (docs/prepare.md).
    resample: Literal["bilinear", "bicubic", "lanczos"] = "bilinear"
    jobs: int | None = runtime(None)  # worker processes; None: all cores


@dataclass(frozen=True)
class StatsConfig:
    """`alexcli stats`: the mean image and the RGB PCA of the training split."""

    jobs: int | None = runtime(None)


@dataclass(frozen=True)
class ModelConfig:
    """The network of PAPER.md "Architecture"; defaults are the paper's."""

    num_classes: int = 1000
    conv_channels: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
    fc_features: tuple[int, int] = (4096, 4096)
    towers: Literal[1, 2] = 2  # 1: the one-tower ablation (no grouping)
    conv1_kernel: int = 11
    conv1_stride: int = 4
    conv1_padding: int = 2  # 224 + 2·2 gives conv1 its 55×55 maps (Caffe crops 227 instead)
    lrn: bool = True
    lrn_size: int = 5
    lrn_k: float = 2.0
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    # "paper": b = a / (k + α Σ a²)^β.  "torch": α/n, as PyTorch's and Caffe's layers.
    lrn_convention: Literal["paper", "torch"] = "paper"
    pool_kernel: int = 3  # overlapping pooling, z=3 s=2; the ablation is 2/2
    pool_stride: int = 2
    activation: Literal["relu", "tanh"] = "relu"
    dropout: float = 0.5
    # "paper": N(0, 0.01²), biases 1 in conv2/4/5, fc6/7.  "caffe": biases 0.1 and
    # std 0.005 on fc6/7 (bvlc_alexnet).  "torch": PyTorch's default init.
    # "kaiming": He et al. 2015, N(0, 2/fan_in), biases 0 (docs/model.md).
    init: Literal["paper", "caffe", "torch", "kaiming"] = "paper"


@dataclass(frozen=True)
class TrainConfig:
    """`alexcli train` (PAPER.md "Reducing overfitting", "Learning")."""

    preset: str = "paper"
    epochs: int = 90
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # "plateau": ÷10 when validation error stops improving (the paper), at most
    # `lr_drops` times. "step": ÷10 at each epoch of `lr_steps`.
    schedule: Literal["plateau", "step"] = "plateau"
    lr_drops: int = 3
    plateau_patience: int = 5
    lr_steps: tuple[int, ...] = (30, 60, 80)
    warmup_epochs: float = 0.0
    crop: int = 224
    flip: bool = True
    lighting_std: float = 0.1  # αᵢ ~ N(0, 0.1)
    # "sqrt": Σ pᵢ αᵢ √λᵢ in 0–255 units (cuda-convnet2); "eigval": Σ pᵢ αᵢ λᵢ with λ
    # on a 0–1 scale (fb.resnet.torch). docs/training.md compares them.
    lighting_scale: Literal["sqrt", "eigval"] = "sqrt"
    input_scale: float = 1.0  # multiplies the mean-subtracted 0–255 pixels
    seed: int = 0
    model: ModelConfig = ModelConfig()
    devices: str = runtime("auto")
    amp: Literal["off", "bf16", "fp16"] = runtime("off")
    # NHWC activations: with the channels-last LRN, 1.1× (fp32) to 1.2× (bf16) faster
    # steps on the CPU (docs/performance.md); the same values to rounding.
    channels_last: bool = runtime(True)
    workers: int | None = runtime(None)
    checkpoint_minutes: float = runtime(30.0)


@dataclass(frozen=True)
class EvalConfig:
    """`alexcli eval`: the paper's test, 1 or 10 views."""

    views: Literal[1, 10] = 10
    split: str = "val"
    batch_size: int = runtime(128)
    devices: str = runtime("auto")
    amp: Literal["off", "bf16", "fp16"] = runtime("off")
    workers: int | None = runtime(None)  # shard-reading processes; None: cores − 1


@dataclass(frozen=True)
class BenchConfig:
    """`alexcli bench`: what to measure, on what, for how long (nothing is cached)."""

    preset: str | None = None  # the network and batch of the train step; None: paper
    batch_size: int | None = None  # None: the preset's
    amp: Literal["off", "bf16", "fp16"] = "bf16"  # the tuned step's precision
    devices: str = "auto"  # the training device(s): the step, the loader's device side
    threads: int | None = None  # compute threads; None: what `train` would use
    workers: int | None = None  # loader processes; None: what `train` would use
    jobs: int = 2  # prepare's and stats' processes
    seconds: float = 5.0  # each rate is timed for at least this long
    only: tuple[str, ...] = ()  # "prepare", "stats", "loader", "train"; empty: all
    source: str = ""  # prepare's image tree; "": a generated one
    source_images: int = 480  # the generated tree's training images
    quick: bool = False  # tiny data and short timings: checks the report, not the machine


# Presets: named TrainConfigs. `paper` is the paper, exactly. `small` keeps every
# structural feature at reduced width for a 2-core CPU (docs/presets.md says why
# its recipe differs: FINDINGS.md shows the paper's does not learn at this scale).
PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    "small": TrainConfig(
        preset="small",
        # The recipe (docs/presets.md has the experiments): He init and unit-variance
        # input (÷ ~58.8, ImageNet's per-channel std in 0–255 units) instead of the
        # paper's N(0, 0.01²) on raw pixels, which stays at chance at this scale.
        # 30 epochs: the paper's conv1 makes a step ~3× cheaper than the 7×7/2 one it
        # replaced; 30 of its epochs beat 15 of the old (0.088 vs 0.148 mean top-1
        # error over 3 seeds of the demo's data) in 60 % of the time (docs/presets.md).
        epochs=30,
        batch_size=32,
        lr=0.005,
        crop=112,
        schedule="step",
        lr_steps=(20, 26),
        warmup_epochs=0.0,
        input_scale=0.017,
        model=ModelConfig(
            init="kaiming",
            # Structure: a third of the paper's widths and the paper's conv1, 11×11 stride
            # 4 (Figure 3's kernel shape): 112 crops give 27 → 13 → 6 → 2 maps, so crops
            # must be ≥ 63 (docs/presets.md "conv1" has the measurements).
            conv_channels=(32, 64, 96, 96, 64),
            fc_features=(256, 256),
            conv1_kernel=11,
            conv1_stride=4,
            conv1_padding=2,
        ),
    ),
}


def preset(name: str) -> TrainConfig:
    """The TrainConfig of a named preset."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}", hint=f"choose one of: {', '.join(PRESETS)}"
        ) from None


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class SyntheticConfig:
    """`source = "synthetic"`: the embedded ILSVRC-shaped tree (core/synthetic.py), with
    Kaggle-style validation labels and a few of ImageNet's awkward files."""

    classes: int = 10
    train_per_class: int = 100
    val_per_class: int = 30
    seed: int = 0
    traps: bool = True


@dataclass(frozen=True)
class Recipe:
    """A chain of stages (pipelines/*.toml), run by `alexcli run` and `alexcli demo`.

    Paths are relative to the directory the command runs in (`alexcli demo`: WORK_DIR).
    `source = "synthetic"` generates the tree described by `[synthetic]` under
    `source/` there first. The eval stage reports the centre crop and `eval.views`.
    """

    source: str = ""
    data_dir: str = "data"
    run_dir: str = "run"
    stages: tuple[str, ...] = ("prepare", "stats", "train", "eval", "viz-kernels", "viz-curves")
    prepare: PrepareConfig = PrepareConfig()
    stats: StatsConfig = StatsConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    synthetic: SyntheticConfig = SyntheticConfig()


STAGE_NAMES = ("prepare", "stats", "train", "eval", "viz-kernels", "viz-curves")


def load_recipe(path: Path, sets: Sequence[str] = ()) -> Recipe:
    """Read a recipe file, apply `--set key=value` overrides, validate every key."""
    data = load_toml(path)
    where = str(path)
    overrides = parse_sets(sets)
    train = data.get("train", {})
    preset_name = overrides.get("train", {}).get("preset", train.get("preset", "paper"))
    base = Recipe(train=preset(str(preset_name)))
    recipe = merge(merge(base, data, where), overrides, "--set")
    unknown = [s for s in recipe.stages if s not in STAGE_NAMES]
    if unknown:
        raise ConfigError(
            f"{where}: unknown stage {unknown[0]!r} in `stages`",
            hint=f"stages are: {', '.join(STAGE_NAMES)}",
        )
    if not recipe.stages:
        raise ConfigError(
            f"{where}: `stages` is empty", hint=f"list some of {', '.join(STAGE_NAMES)}"
        )
    order = [s for s in STAGE_NAMES if s in recipe.stages]
    if list(recipe.stages) != order:  # they always run in the chain's order
        raise ConfigError(
            f"{where}: `stages` out of order ({', '.join(recipe.stages)})",
            hint=f"list them as they run: {', '.join(order)}",
        )
    return recipe


# --------------------------------------------------------------------------- machinery


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error is one line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


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
    """A copy of dataclass `cfg` with the fields in `data` replaced, type-checked.

    Nested dataclass fields take nested mappings. `where` names the source of
    `data` (a file, "--set") in error messages.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"merge() needs a dataclass instance, got {type(cfg)}")
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
    return dataclasses.replace(cfg, **changes)


FLAGS = "flags"  # `where` for values from command-line flags


def with_values(cfg: T, where: str = FLAGS, **values: Any) -> T:
    """`merge` for keyword arguments, skipping the ones that are None (not given)."""
    return merge(cfg, {k: v for k, v in values.items() if v is not None}, where)


def _coerce(value: Any, annotation: Any, path: str, where: str) -> Any:
    def bad(expected: str) -> ConfigError:
        if where == FLAGS:  # as the user typed it: --views 5
            return ConfigError(f"--{path.replace('_', '-')} {value}: must be {expected}")
        return ConfigError(f"{where}: {path!r} must be {expected}, got {value!r}")

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
    return _jsonable(dataclasses.asdict(cfg))


def fingerprint_view(cfg: Any) -> dict[str, Any]:
    """`to_dict` without the `runtime()` fields: what changes a stage's results."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get(_RUNTIME):
            continue
        value = getattr(cfg, f.name)
        out[f.name] = (
            fingerprint_view(value) if dataclasses.is_dataclass(value) else _jsonable(value)
        )
    return out


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "saved config") -> T:
    """Rebuild a configuration saved with `to_dict` (a checkpoint's, a manifest's)."""
    return merge(cls(), data, where)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
