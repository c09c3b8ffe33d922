"""The networks `alexcli ablate` trains (docs/ablations.md "The claims and their networks").

A registry, as timm names its models: each variant is one named definition made from
the study's baseline configuration, and each switches one of the paper's choices off
against its `reference` — the baseline, or a reference network where the baseline
would differ in more than the choice:

- `fig1-relu` / `fig1-tanh`: Figure 1's protocol ("no regularization of any kind"; the
  learning rate "chosen independently to make training as fast as possible"): no
  dropout, no weight decay, no crops, reflections or colour noise, a constant lr; the
  stage picks each activation's lr from a small grid (`workflows/ablate`).
- `pool-3x3` / `pool-2x2`: both at the largest crop up to the baseline's at which
  overlapping 3/2 and 2/2 pooling give every map the same side (`pooling_crop`), so fc6
  reads inputs of one size, as at the paper's 224 (55 → 27 → 13 → 6 either way).
- `no-conv3` / `no-conv4`: a layer of the 3×3 stack left out; fc6's input is unchanged.

`parameters` counts each network from its layers (core.nn.model.layer_table).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alexcli.config import ModelConfig, TrainConfig
from alexcli.errors import ConfigError


def _model(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes))


def _one_tower(cfg: TrainConfig) -> TrainConfig:
    """The paper's one-GPU net (section 3.2's footnote): half the kernels of every conv
    layer but the last, whose kernels and the FC layers stay whole."""
    c = cfg.model.conv_channels
    return _model(cfg, towers=1, conv_channels=(*(w // 2 for w in c[:4]), c[4]))


def figure1(cfg: TrainConfig, activation: str) -> TrainConfig:
    """Figure 1's protocol for `activation`: nothing that regularises — no dropout, no
    weight decay, no crops, reflections or colour noise — and a constant lr (the stage
    sets it per activation), the gradients and steps unclipped as the paper's were (clipping would
    slow the activation with the larger gradients)."""
    protocol = dataclasses.replace(
        cfg,
        weight_decay=0.0,
        clip_grad_norm=None,
        max_step_norm=None,
        random_crop=False,
        flip=False,
        lighting_std=0.0,
        schedule="step",
        lr_steps=(),
    )
    return _model(protocol, activation=activation, dropout=0.0)


def pooling_crop(model: ModelConfig) -> int:
    """The largest crop up to `model.crop` at which `model`'s pooling and 2/2 pooling give
    every pooled map the same side, so that fc6 reads as many inputs either way."""
    for crop in range(model.crop, 0, -1):
        ours = pooled_sides(dataclasses.replace(model, crop=crop))
        two = pooled_sides(dataclasses.replace(model, crop=crop, pool_kernel=2, pool_stride=2))
        if ours is not None and ours == two:
            return crop
    raise ConfigError(
        f"no crop up to {model.crop} gives {model.pool_kernel}/{model.pool_stride} and 2/2 "
        "pooling maps of one size",
        hint="leave the overlapping-pooling claim out with --only",
    )


def _pooling(cfg: TrainConfig, kernel: int | None = None) -> TrainConfig:
    crop = pooling_crop(cfg.model)
    if kernel is None:
        return _model(cfg, crop=crop)
    return _model(cfg, crop=crop, pool_kernel=kernel, pool_stride=2)


@dataclass(frozen=True)
class Variant:
    name: str
    what: str  # what it is, in words (claims.md's table)
    build: Callable[[TrainConfig], TrainConfig]
    reference: str | None = "baseline"  # what it is compared with; None: a reference


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("baseline", "the preset", lambda c: c, None),
        Variant(
            "fig1-relu", "Figure 1's protocol, ReLU, its own lr", lambda c: figure1(c, "relu"), None
        ),
        Variant(
            "fig1-tanh",
            "Figure 1's protocol, tanh, its own lr",
            lambda c: figure1(c, "tanh"),
            "fig1-relu",
        ),
        Variant("no-lrn", "no LRN after conv1, conv2", lambda c: _model(c, lrn=False)),
        Variant(
            "pool-3x3",
            "the preset's pooling at the crop where 2/2 gives the same maps",
            _pooling,
            None,
        ),
        Variant(
            "pool-2x2",
            "z = 2, s = 2 pooling at that crop",
            lambda c: _pooling(c, kernel=2),
            "pool-3x3",
        ),
        Variant(
            "one-tower", "one tower: half the kernels of conv1–conv4 (the footnote)", _one_tower
        ),
        Variant(
            "no-pca", "no PCA colour noise", lambda c: dataclasses.replace(c, lighting_std=0.0)
        ),
        Variant(
            "no-crop-flip",
            "the centre crop, never reflected",
            lambda c: dataclasses.replace(c, random_crop=False, flip=False),
        ),
        Variant("no-dropout", "no dropout", lambda c: _model(c, dropout=0.0)),
        Variant(
            "no-weight-decay", "no weight decay", lambda c: dataclasses.replace(c, weight_decay=0.0)
        ),
        Variant(
            "no-conv3",
            "without conv3 (conv4 reads conv2, its own tower's)",
            lambda c: _model(c, omit="conv3"),
        ),
        Variant("no-conv4", "without conv4 (conv5 reads conv3)", lambda c: _model(c, omit="conv4")),
    )
}

FIGURE1 = {"fig1-relu": "relu", "fig1-tanh": "tanh"}  # variant → its activation


def variant_config(
    base: TrainConfig,
    variant: str,
    seed: int,
    lrs: Mapping[str, float] | None = None,
    figure1_epochs: int | None = None,
) -> TrainConfig:
    """The configuration of `variant` at `seed`. Figure 1's variants train at the lr
    `lrs` names for their activation (default the base's) for `figure1_epochs` (default
    the base's). A one-tower net on two named devices runs on the first."""
    cfg = dataclasses.replace(VARIANTS[variant].build(base), seed=seed)
    if variant in FIGURE1:
        lr = (lrs or {}).get(FIGURE1[variant], cfg.lr)
        cfg = dataclasses.replace(cfg, lr=lr, epochs=figure1_epochs or cfg.epochs)
    if cfg.model.towers == 1 and "," in cfg.devices:
        cfg = dataclasses.replace(cfg, devices=cfg.devices.split(",")[0].strip())
    return cfg


def check_variants(base: TrainConfig, variants: set[str]) -> None:
    """Refuse a study whose baseline already has a variant's choice off: the variant
    would train its reference again and its claim would compare it with itself."""
    from alexcli.stages.train import fingerprint_params

    for name in sorted(variants):
        ref = VARIANTS[name].reference
        if ref is None:
            continue
        again = base.model.towers == 1 and name == "one-tower"  # would halve it once more
        if again or fingerprint_params(variant_config(base, name, 0)) == fingerprint_params(
            variant_config(base, ref, 0)
        ):
            raise ConfigError(
                f"variant {name!r} changes nothing: the baseline already has that choice off",
                hint="ablate a baseline with the paper's choices on (drop the --set that "
                "turns it off), or leave its claim out with --only",
            )


def same_as_baseline(base: TrainConfig, variant: str) -> bool:
    """A reference network that is the baseline itself (`pool-3x3` when the baseline's
    crop already gives both poolings the same maps, as the paper's 224 does)."""
    from alexcli.stages.train import fingerprint_params

    cfg = variant_config(base, variant, 0)
    return variant != "baseline" and fingerprint_params(cfg) == fingerprint_params(
        variant_config(base, "baseline", 0)
    )


# --------------------------------------------------------------------------- sizes


def pooled_sides(model: ModelConfig) -> tuple[int, int, int] | None:
    """The sides after the pools behind conv1, conv2 and the last conv layer (fc6's
    input side), or None when the crop is too small for the network."""
    from alexcli.core.nn.model import layer_table

    try:
        rows = layer_table(model)
    except ConfigError:
        return None
    last = [r for r in rows if r.name.startswith("conv") and r.tower == 1][-1]
    first = {r.name: r for r in rows if r.tower == 1}
    return first["conv1"].after_shape[1], first["conv2"].after_shape[1], last.after_shape[1]


@dataclass(frozen=True)
class Network:
    """What claims.md's table says of each network: its size and its input."""

    parameters: int
    crop: int
    fc6_inputs: int

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def network(model: ModelConfig) -> Network:
    """`model`'s learned parameters and fc6's inputs, counted from its layers."""
    from alexcli.core.nn.model import layer_table

    rows = layer_table(model)
    fc6 = [r for r in rows if r.name == "fc6"]
    fan_in = fc6[0].parameters // fc6[0].output_shape[0] - 1  # (inputs + bias) × outputs
    return Network(sum(r.parameters for r in rows), model.crop, fan_in)
