"""The network of docs/paper.md "Architecture": AlexNet as two towers, one per GPU.

The paper's Figure 2, written so the code reads like it: every conv and FC layer
is split in halves, one `Tower` holding tower 1's half of conv1…fc8 and another
tower 2's. conv2, conv4 and conv5 see only their own tower's maps; conv3 and
fc6…fc8 see both towers' (`AlexNet._exchange` is that exchange, and the only place
activations cross devices). LRN runs over each tower's own maps, as on the
paper's GPUs. fc8 is split like fc6 and fc7 (half of the neurons per tower);
the logits are the towers' halves concatenated, tower 1 first. `AlexNet.forward`
runs the figure from the image up, one line per layer; the ReLU, LRN, pooling and
dropout are layers of the towers too, so `print(model)` shows the whole network.

The same module runs on one device or two (`place`): the weights, their names in
the state dict and the arithmetic do not depend on placement. The input side is the
configuration's `crop`: 224 with conv1 padding 2 gives conv1 its 55×55 maps (Caffe
crops 227 and pads nothing instead); any crop that leaves conv5 a pooled map works,
and fc6's width follows from it. LRN is core/nn/lrn.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from alexcli.config import ModelConfig
from alexcli.core.nn.devices import send
from alexcli.core.nn.lrn import LRN, Lrn, local_response_norm
from alexcli.errors import ConfigError, DeviceError

CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FCS = ("fc6", "fc7", "fc8")
LAYERS = CONVS + FCS

# Biases by init scheme (docs/paper.md "Learning"; bvlc_alexnet for "caffe"); others are 0.
_BIASES = {
    "paper": dict.fromkeys(("conv2", "conv4", "conv5", "fc6", "fc7"), 1.0),
    "caffe": dict.fromkeys(("conv2", "conv4", "conv5", "fc6", "fc7"), 0.1),
}


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class _Plan:
    """Per-tower widths and spatial sizes for one config and crop (validated)."""

    towers: int
    channels: tuple[int, ...]  # per tower, conv1…conv5
    features: tuple[int, int]  # per tower, fc6 and fc7
    classes: tuple[int, ...]  # fc8 outputs of each tower (an odd count: tower 1 has one more)
    maps: tuple[int, ...]  # conv1…conv5 output sides
    pooled: tuple[int, int, int]  # sides after the pools behind conv1, conv2, conv5

    middle: tuple[str, ...]  # conv3…conv5 less the omitted one (`ModelConfig.omit`)

    @property
    def fc6_inputs(self) -> int:
        last = CONVS.index(self.middle[-1])  # the last conv layer feeds fc6
        return self.channels[last] * self.towers * self.pooled[2] ** 2

    def middle_layers(self) -> list[tuple[str, int, int, str]]:
        """(name, in channels, out channels, inputs) of each kept middle conv layer, per
        tower. Each keeps its own connectivity — conv3 sees both towers' maps, conv4 and
        conv5 their own tower's — and reads the layer kept before it: without conv3 the
        towers meet first at fc6."""
        rows: list[tuple[str, int, int, str]] = []
        previous = self.channels[1]  # conv2's maps, per tower
        for name in self.middle:
            inputs = "both" if name == "conv3" else "own"
            out = self.channels[CONVS.index(name)]
            rows.append((name, previous * (self.towers if inputs == "both" else 1), out, inputs))
            previous = out
        return rows


def _side(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _sides(cfg: ModelConfig, crop: int) -> tuple[tuple[int, ...], tuple[int, int, int]]:
    """Output sides of conv1…conv5 and of the three pools (floor rounding, as PyTorch)."""
    k, s = cfg.pool_kernel, cfg.pool_stride
    c1 = _side(crop, cfg.conv1_kernel, cfg.conv1_stride, cfg.conv1_padding)
    p1 = _side(c1, k, s)
    p2 = _side(p1, k, s)  # conv2 (5×5, padding 2) keeps the side
    p5 = _side(p2, k, s)  # so do conv3…conv5 (3×3, padding 1)
    return (c1, p1, p2, p2, p2), (p1, p2, p5)


def _plan(cfg: ModelConfig) -> _Plan:
    """Check `cfg`'s widths and crop fit together and work out every layer's size."""
    t = cfg.towers
    widths = (*cfg.conv_channels, *cfg.fc_features)
    if any(w % t for w in widths) or min(widths) < t:
        raise ConfigError(
            f"model widths {widths} do not split into {t} towers",
            hint="make every conv_channels and fc_features entry divisible by model.towers",
        )
    crop = cfg.crop
    maps, pooled = _sides(cfg, crop)
    if min(pooled) < 1 or min(maps) < cfg.pool_kernel:
        smallest = next(c for c in range(1, 4096) if min(_sides(cfg, c)[1]) >= 1)
        raise ConfigError(
            f"crop {crop} is too small for this network: conv5's maps vanish before fc6",
            hint=f"use a crop of at least {smallest}",
        )
    half = cfg.num_classes // t
    classes = tuple(half + (1 if i < cfg.num_classes % t else 0) for i in range(t))
    return _Plan(
        towers=t,
        channels=tuple(c // t for c in cfg.conv_channels),
        features=(cfg.fc_features[0] // t, cfg.fc_features[1] // t),
        classes=classes,
        maps=maps,
        pooled=pooled,
        middle=tuple(n for n in CONVS[2:] if n != cfg.omit),
    )


@dataclass(frozen=True)
class LayerRow:
    """One learned layer of one tower, as `alexcli summary` shows it.

    `output_shape` is the layer's own output (the sizes in the paper's Figure 2);
    `after_shape` what its ReLU / LRN / pooling hand on. Multiply-adds count the
    weights' multiply-accumulates only (no biases, activations, LRN or pooling).
    """

    name: str
    tower: int  # 1 or 2 (the paper's GPU 1 and GPU 2)
    inputs: str  # "image", "own" or "both"
    output_shape: tuple[int, ...]
    after_shape: tuple[int, ...]
    then: str
    parameters: int
    mult_adds: int


def layer_table(cfg: ModelConfig) -> list[LayerRow]:
    """Every learned layer of every tower at `cfg.crop`, from the config (no weights built)."""
    p = _plan(cfg)
    c, f, t = p.channels, p.features, p.towers
    act = "ReLU" if cfg.activation == "relu" else "tanh"
    pool = f"pool {cfg.pool_kernel}/{cfg.pool_stride}"  # max-pooling, kernel/stride
    lrn = ", LRN" if cfg.lrn else ""
    drop = f", dropout {cfg.dropout:g}" if cfg.dropout else ""
    # name, inputs, fan-in per output (weights), outputs, output side, after side, then
    k1 = 3 * cfg.conv1_kernel**2
    specs = [
        ("conv1", "image", k1, c[0], p.maps[0], p.pooled[0], f"{act}{lrn}, {pool}"),
        ("conv2", "own", c[0] * 25, c[1], p.maps[1], p.pooled[1], f"{act}{lrn}, {pool}"),
    ]
    for name, ins, out, inputs in p.middle_layers():
        last = name == p.middle[-1]
        after, then = (p.pooled[2], f"{act}, {pool}") if last else (p.maps[2], act)
        specs.append((name, inputs, ins * 9, out, p.maps[2], after, then))
    specs += [
        ("fc6", "both", p.fc6_inputs, f[0], 0, 0, f"{act}{drop}"),
        ("fc7", "both", f[0] * t, f[1], 0, 0, f"{act}{drop}"),
        ("fc8", "both", f[1] * t, 0, 0, 0, "softmax"),
    ]
    rows = []
    for name, inputs, fan_in, width, side, after, then in specs:
        for i in range(t):
            n = width or p.classes[i]  # fc8: this tower's share of the classes
            shape = (n, side, side) if side else (n,)
            rows.append(
                LayerRow(
                    name=name,
                    tower=i + 1,
                    inputs=inputs,
                    output_shape=shape,
                    after_shape=(n, after, after) if side else shape,
                    then=then,
                    parameters=(fan_in + 1) * n,
                    mult_adds=fan_in * n * max(side, 1) ** 2,
                )
            )
    return rows


# --------------------------------------------------------------------------- layers


class Tower(nn.Module):
    """One GPU's half of every layer of Figure 2, in the order the data flows: conv1…conv5
    kernels and fc6…fc8 neurons, each followed by what Caffe's bvlc_alexnet names after it
    (act: the ReLU or tanh, norm: LRN, pool: max-pooling, drop: dropout). Only the conv
    and FC layers hold weights. conv3, fc6, fc7 and fc8 take both towers' outputs, so
    their inputs are twice the width of the tower's layer below (`AlexNet.forward`)."""

    # conv3…conv5 are made from the plan: the one `ModelConfig.omit` names is absent,
    # and its activation with it.
    conv3: nn.Conv2d
    conv4: nn.Conv2d
    conv5: nn.Conv2d
    act3: nn.Module
    act4: nn.Module
    act5: nn.Module

    def __init__(self, cfg: ModelConfig, plan: _Plan, index: int, lrn: Lrn) -> None:
        super().__init__()
        c, f, t = plan.channels, plan.features, plan.towers

        def act() -> nn.Module:
            return nn.ReLU() if cfg.activation == "relu" else nn.Tanh()

        def norm() -> nn.Module:  # nothing, when the LRN ablation leaves it out
            if not cfg.lrn:
                return nn.Identity()
            return LRN(
                cfg.lrn_size, cfg.lrn_alpha, cfg.lrn_beta, cfg.lrn_k, cfg.lrn_convention, lrn
            )

        def pool() -> nn.Module:
            return nn.MaxPool2d(cfg.pool_kernel, cfg.pool_stride)

        k1 = cfg.conv1_kernel
        self.conv1 = nn.Conv2d(3, c[0], k1, cfg.conv1_stride, cfg.conv1_padding)
        self.act1, self.norm1, self.pool1 = act(), norm(), pool()
        self.conv2 = nn.Conv2d(c[0], c[1], 5, padding=2)
        self.act2, self.norm2, self.pool2 = act(), norm(), pool()
        for name, ins, out, _ in plan.middle_layers():
            self.add_module(name, nn.Conv2d(ins, out, 3, padding=1))
            self.add_module(f"act{name[-1]}", act())
        self.pool5 = pool()  # behind the last conv layer kept, conv5 unless it is omitted
        self.fc6 = nn.Linear(plan.fc6_inputs, f[0])
        self.act6, self.drop6 = act(), nn.Dropout(cfg.dropout)
        self.fc7 = nn.Linear(f[0] * t, f[1])
        self.act7, self.drop7 = act(), nn.Dropout(cfg.dropout)
        self.fc8 = nn.Linear(f[1] * t, plan.classes[index])

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device


# --------------------------------------------------------------------------- network


class AlexNet(nn.Module):
    """The two-tower network (or one tower, the ablation), on one device or two.

    Input: float (N, 3, cfg.crop, cfg.crop) on the first tower's device, or one such
    tensor per tower already on its device (the training step normalises the uint8 crops
    on each GPU rather than send a float batch four times their size); logits come back
    on the first device. `lrn` is the normalisation after conv1 and conv2 (core/nn/lrn.py).
    """

    def __init__(self, cfg: ModelConfig, lrn: Lrn = local_response_norm) -> None:
        super().__init__()
        plan = _plan(cfg)
        self.cfg = cfg
        self.towers = nn.ModuleList(Tower(cfg, plan, i, lrn) for i in range(cfg.towers))
        init_weights(self, cfg.init, cfg.fc8_std)

    @property
    def tower_list(self) -> list[Tower]:
        """The towers, tower 1 first (typed; `towers` is the ModuleList in the state dict)."""
        return cast(list[Tower], list(self.towers))

    @property
    def devices(self) -> list[torch.device]:
        """Each tower's device, tower 1 first (read from the weights, so `.to()` keeps it true)."""
        return [tower.device for tower in self.tower_list]

    def place(self, devices: Sequence[torch.device]) -> AlexNet:
        """One device: everything there. Two: tower 1 on the first, tower 2 on the second."""
        devs = tower_devices(len(self.towers), devices)
        for tower, device in zip(self.tower_list, devs, strict=True):
            tower.to(device)
        return self

    def forward(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        """Logits (N, num_classes), tower 1's classes first, on the first device."""
        h = [t.drop7(a) for t, a in self._each(self._fc7(x))]
        return self._gather([t.fc8(a) for t, a in self._each(self._exchange(h))])  # both

    def features(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        """fc7's activations (N, fc_features[1]), the last hidden layer (Figure 4)."""
        return self._gather(self._fc7(x))

    def conv1_weight(self) -> Tensor:
        """conv1's kernels (conv_channels[0], 3, k, k) on the CPU, tower 1's first (Figure 3)."""
        return torch.cat([t.conv1.weight.detach().cpu() for t in self.tower_list])

    def _fc7(self, x: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """Figure 2 from the image up to fc7: each tower's activations, on its device.
        Each layer's comment says what it sees: the image, its own tower's maps, or both
        towers' (exchanged between the devices, `_exchange`)."""
        # the image to every tower, or one already on each tower's device
        h = [send(x, d) for d in self.devices] if isinstance(x, Tensor) else list(x)
        h = [t.act1(t.conv1(a)) for t, a in self._each(h)]  # the image
        h = [t.pool1(a) for t, a in self._each(self._norm(h, 1))]
        h = [t.act2(t.conv2(a)) for t, a in self._each(h)]  # own
        h = [t.pool2(a) for t, a in self._each(self._norm(h, 2))]
        if self.cfg.omit != "conv3":  # without conv3 the towers meet first at fc6
            h = [t.act3(t.conv3(a)) for t, a in self._each(self._exchange(h))]  # both
        if self.cfg.omit != "conv4":
            h = [t.act4(t.conv4(a)) for t, a in self._each(h)]  # own
        if self.cfg.omit != "conv5":
            h = [t.act5(t.conv5(a)) for t, a in self._each(h)]  # own
        h = [torch.flatten(t.pool5(a), 1) for t, a in self._each(h)]
        h = [t.drop6(t.act6(t.fc6(a))) for t, a in self._each(self._exchange(h))]  # both
        return [t.act7(t.fc7(a)) for t, a in self._each(self._exchange(h))]  # both

    def _each(self, parts: list[Tensor]) -> Iterator[tuple[Tower, Tensor]]:
        """Each tower with its own input (on its device)."""
        return zip(self.tower_list, parts, strict=True)

    def _norm(self, parts: list[Tensor], layer: int) -> list[Tensor]:
        """norm1 or norm2 of each tower: LRN over its own maps, as on the paper's GPUs, or
        with `lrn_span = "all"` over both towers' (Caffe's bvlc_alexnet): each tower then
        normalises all the maps and keeps its own channels."""
        norms = [getattr(t, f"norm{layer}") for t in self.tower_list]
        if self.cfg.lrn_span == "tower" or len(parts) == 1 or not self.cfg.lrn:
            return [norm(a) for norm, a in zip(norms, parts, strict=True)]
        ends = list(itertools.accumulate(a.shape[1] for a in parts))
        owns = [slice(end - a.shape[1], end) for a, end in zip(parts, ends, strict=True)]
        every = self._exchange(parts)
        return [norm(a)[:, own] for norm, a, own in zip(norms, every, owns, strict=True)]

    def _exchange(self, parts: list[Tensor]) -> list[Tensor]:
        """Every tower gets all towers' maps along the channel axis: the GPUs' exchange,
        and the only place activations cross devices. Every copy is issued before any
        concatenation, so that on two GPUs both directions are in flight at once (a
        concatenation between them would queue the second copy behind it)."""
        if len(parts) == 1:
            return parts
        devices = list(dict.fromkeys(self.devices))
        moved = {d: [send(p, d) for p in parts] for d in devices}
        joined = {d: torch.cat(moved[d], 1) for d in devices}
        return [joined[d] for d in self.devices]

    def _gather(self, parts: list[Tensor]) -> Tensor:
        """The towers' outputs side by side, tower 1's first, on the first device."""
        first = self.devices[0]
        return torch.cat([send(p, first) for p in parts], 1) if len(parts) > 1 else parts[0]


def tower_devices(towers: int, devices: Sequence[torch.device]) -> list[torch.device]:
    """Where each tower goes: one device takes all; two devices, one tower each."""
    if len(devices) == 1:
        return list(devices) * towers
    if len(devices) != towers:
        raise DeviceError(
            f"{len(devices)} devices for a network of {towers} tower(s)",
            hint="name one device, or two for the two-tower model (model.towers=2)",
        )
    return list(devices)


def init_weights(model: AlexNet, scheme: str, fc8_std: float | None = None) -> None:
    """Initialise every layer of every tower by `scheme` (docs/paper.md "Learning"),
    then fc8's weights N(0, fc8_std²) where it is given.

    paper: weights N(0, 0.01²); biases 1 in conv2, conv4, conv5, fc6, fc7, 0 elsewhere.
    caffe (bvlc_alexnet): the same, but biases 0.1 and std 0.005 in fc6, fc7.
    torch: PyTorch's defaults, as the layers were made (nothing to do).
    kaiming (He et al. 2015): N(0, gain²/fan_in), biases 0; keeps the activations'
    scale from layer to layer, where the others shrink it (docs/model.md).
    """
    drawn = () if scheme == "torch" else LAYERS  # torch: the layers keep their own init
    for tower in model.tower_list:
        for name in drawn:
            layer = getattr(tower, name, None)
            if layer is None:  # the omitted middle layer
                continue
            if scheme == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity=model.cfg.activation)
                nn.init.zeros_(layer.bias)
                continue
            std = 0.005 if scheme == "caffe" and name in ("fc6", "fc7") else 0.01
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.constant_(layer.bias, _BIASES[scheme].get(name, 0.0))
        if fc8_std is not None:
            nn.init.normal_(tower.fc8.weight, 0.0, fc8_std)


def build_model(
    cfg: ModelConfig,
    devices: Sequence[torch.device] | None = None,
    *,
    lrn: Lrn = local_response_norm,
) -> AlexNet:
    """A freshly initialised network for `cfg.crop`² inputs, placed on `devices`."""
    model = AlexNet(cfg, lrn)
    return model.place(devices) if devices else model
