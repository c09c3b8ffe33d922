"""The configuration of every stage: frozen dataclasses whose defaults are the paper's.

Each field says what it means beside its default. Two kinds of metadata ride on fields:
`runtime()` marks what changes how fast a stage runs, not what it produces (devices,
workers): kept out of fingerprints. `bounded()` gives a value's range: every instance
checks its bounds when made (`__post_init__`), so a bad value is refused in one line
wherever it came from (a flag, `--set`, a recipe, a saved file, Python), and `merge`
names that source in the message.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from alexcli.errors import ConfigError

RUNTIME = "runtime"
BOUNDS = "bounds"


def runtime(default: Any) -> Any:
    """A field that does not change a stage's results (kept out of fingerprints)."""
    return field(default=default, metadata={RUNTIME: True})


def bounded(
    default: Any,
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    is_runtime: bool = False,
) -> Any:
    """A field whose value (unless None: "use the default") must lie in [at_least, at_most]."""
    metadata: dict[str, Any] = {BOUNDS: (at_least, at_most)}
    if is_runtime:
        metadata[RUNTIME] = True
    return field(default=default, metadata=metadata)


SEED_MAX = 2**63 - 1  # what numpy's and torch's generators take


class BoundError(ConfigError):
    """A value outside its field's bounds; `merge` rewrites it to name where it came from."""

    def __init__(self, name: str, value: object, requirement: str) -> None:
        super().__init__(f"{name} is {value}: must be {requirement}")
        self.name, self.value, self.requirement = name, value, requirement


def requirement(at_least: float | None, at_most: float | None) -> str:
    if at_least is not None and at_most is not None:
        return f"in [{at_least:g}, {at_most:g}]"
    if at_least is not None:
        return f"at least {at_least:g}" if at_least >= 1 else f"≥ {at_least:g}"
    return f"at most {at_most:g}"


# Off while a saved configuration is read back (`layering.from_dict`): a run written
# before a bound existed must still load; bounds are for what users ask now.
CHECKING: contextvars.ContextVar[bool] = contextvars.ContextVar("bounds", default=True)


class Checked:
    """Checks every `bounded` field when an instance is made (including by `replace`)."""

    def __post_init__(self) -> None:
        if not CHECKING.get():
            return
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            bounds = f.metadata.get(BOUNDS)
            value = getattr(self, f.name)
            numbers = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise BoundError(f.name, value, "a finite number")  # NaN passes every < and >
            if bounds is None or value is None:
                continue
            lo, hi = bounds
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise BoundError(f.name, value, requirement(lo, hi))


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class PrepareConfig(Checked):
    """`alexcli prepare` (docs/paper.md "Data"): subset, resize, shard."""

    size: int = bounded(256, at_least=1)  # shorter side to `size`, then the central crop
    classes: int | None = bounded(None, at_least=1)  # a seeded choice of N; None: all
    wnids: tuple[str, ...] = ()  # an explicit class list (wins over `classes`)
    train_per_class: int | None = bounded(None, at_least=1)
    val_per_class: int | None = bounded(None, at_least=1)
    seed: int = bounded(0, at_least=0, at_most=SEED_MAX)
    shard_size: int = bounded(1024, at_least=1)  # images per HDF5 shard (~200 MB at 256 px)
    # The antialiased filter of the resize (PIL's, its support scaled on reduction).
    # "bilinear" is torchvision's; "lanczos" is sharper and costs more (docs/prepare.md).
    resample: Literal["bilinear", "bicubic", "lanczos"] = "bilinear"
    # How a shard stores each image: its "raw" pixels, or a "jpeg" record (at `quality`)
    # that every reader decodes: ~1/10 of the bytes, a decode per read (docs/prepare.md).
    encoding: Literal["raw", "jpeg"] = "raw"
    quality: int = bounded(90, at_least=1, at_most=100)  # of the JPEG records
    jobs: int | None = bounded(None, at_least=1, is_runtime=True)  # processes; None: all cores


@dataclass(frozen=True)
class StatsConfig(Checked):
    """`alexcli stats`: the mean image and the RGB PCA of the training split."""

    jobs: int | None = bounded(None, at_least=1, is_runtime=True)


@dataclass(frozen=True)
class ModelConfig(Checked):
    """The network of docs/paper.md "Architecture"; defaults are the paper's."""

    num_classes: int = bounded(1000, at_least=2)
    # The input side. It sets conv1's maps and so fc6's width: a network is built for one
    # crop, and training, validation and the test views all cut this size.
    crop: int = bounded(224, at_least=1)
    conv_channels: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
    fc_features: tuple[int, int] = (4096, 4096)
    towers: Literal[1, 2] = 2  # 1: the one-tower ablation (no grouping)
    conv1_kernel: int = bounded(11, at_least=1)
    conv1_stride: int = bounded(4, at_least=1)
    conv1_padding: int = bounded(2, at_least=0)  # 224 + 2·2 gives 55×55 maps (Caffe: 227)
    lrn: bool = True
    lrn_size: int = bounded(5, at_least=1)
    lrn_k: float = 2.0
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    # "paper": b = a / (k + α Σ a²)^β.  "torch": α/n, as PyTorch's and Caffe's layers.
    lrn_convention: Literal["paper", "torch"] = "paper"
    # "tower": each tower normalises its own maps, as each GPU did in the paper.
    # "all": the window runs across both towers' maps, as Caffe's bvlc_alexnet (its
    # norm layers see all 96 conv1 and 256 conv2 maps); an import of it needs this.
    lrn_span: Literal["tower", "all"] = "tower"
    pool_kernel: int = bounded(3, at_least=1)  # overlapping pooling, z=3 s=2; ablation: 2/2
    pool_stride: int = bounded(2, at_least=1)
    activation: Literal["relu", "tanh"] = "relu"
    # A middle conv layer left out (the depth ablation): the next layer takes its
    # inputs and its place, conv3's view of both towers included (docs/ablations.md).
    omit: Literal["none", "conv3", "conv4", "conv5"] = "none"
    dropout: float = bounded(0.5, at_least=0, at_most=1)
    # "paper": N(0, 0.01²), biases 1 in conv2/4/5, fc6/7.  "caffe": biases 0.1 and
    # std 0.005 on fc6/7 (bvlc_alexnet).  "torch": PyTorch's default init.
    # "kaiming": He et al. 2015, N(0, 2/fan_in), biases 0 (docs/model.md).
    init: Literal["paper", "caffe", "torch", "kaiming"] = "paper"
    # fc8's weights N(0, fc8_std²) whatever `init` gives the rest (None: `init`'s own).
    # `small` sets 0.01, the paper's: He's gain assumes a ReLU after the layer, and fc8
    # has the softmax, so under "kaiming" a fresh network's loss was ~2× ln C, not ln C.
    fc8_std: float | None = bounded(None, at_least=0)


@dataclass(frozen=True)
class TrainConfig(Checked):
    """`alexcli train` (docs/paper.md "Reducing overfitting", "Learning")."""

    preset: str = "paper"
    epochs: int = bounded(90, at_least=1)
    batch_size: int = bounded(128, at_least=1)  # global: all processes together
    # Each process's batch under torchrun: the global batch is it times the processes
    # (None: `batch_size` is given whole). It decides only how the work is split.
    batch_per_device: int | None = bounded(None, at_least=1, is_runtime=True)
    lr: float = bounded(0.01, at_least=0)
    # How the lr follows a batch other than the preset's when no lr is given: a named
    # departure from the paper, which trained at 128 (docs/training.md
    # "Batch size and learning rate"). "linear" (Goyal et al. 2017): lr × batch ÷ the
    # preset's batch, and when that raises it a linear warm-up over min(5, epochs/18)
    # epochs unless one is set. "none": the preset's lr at any batch. `lr` is the result.
    lr_scaling: Literal["linear", "none"] = runtime("linear")
    # Recorded by the linear rule: the (lr, batch) it scaled from; None when it did not.
    lr_scaled_from: tuple[float, int] | None = runtime(None)
    momentum: float = bounded(0.9, at_least=0)
    weight_decay: float = bounded(5e-4, at_least=0)
    # "plateau": ÷10 when validation error stops improving (the paper), at most
    # `lr_drops` times, the last ones forced if the run would end without them. "step":
    # ÷10 at each of `lr_steps`: an epoch (its first step), or below 1 a fraction of the
    # run's steps.
    schedule: Literal["plateau", "step"] = "plateau"
    lr_drops: int = bounded(3, at_least=0)
    plateau_patience: int = bounded(5, at_least=0)
    lr_steps: tuple[float, ...] = (30, 60, 80)
    warmup_epochs: float = bounded(0.0, at_least=0)
    # Each step's gradients scaled down to this global L2 norm where above it (None: never,
    # as the paper). `small` clips at 2 (docs/presets.md). Above 0: at 0 every gradient
    # would be zeroed and the net would only decay.
    clip_grad_norm: float | None = bounded(None, at_least=1e-6)
    # lr × each step's gradient norm at most this: the gradients clipped to max_step_norm
    # ÷ lr where that is below clip_grad_norm (None: no bound, as the paper); momentum and
    # weight decay come after, as with any clip. `small` bounds it at 0.08, twice its own
    # lr × clip (docs/presets.md).
    max_step_norm: float | None = bounded(None, at_least=1e-6)
    flip: bool = True
    # Random crops anywhere in the image (the paper); False: the centre crop every time
    # (the "crops and reflections" ablation, with flip=False).
    random_crop: bool = True
    lighting_std: float = bounded(0.1, at_least=0)  # αᵢ ~ N(0, 0.1)
    # "sqrt": Σ pᵢ αᵢ √λᵢ in 0–255 units (cuda-convnet2); "eigval": Σ pᵢ αᵢ λᵢ with λ
    # on a 0–1 scale (fb.resnet.torch). docs/training.md compares them.
    lighting_scale: Literal["sqrt", "eigval"] = "sqrt"
    input_scale: float = 1.0  # multiplies the mean-subtracted 0–255 pixels
    seed: int = bounded(0, at_least=0, at_most=SEED_MAX)
    model: ModelConfig = ModelConfig()
    devices: str = runtime("auto")
    amp: Literal["off", "bf16", "fp16"] = runtime("off")
    # NHWC activations: faster steps with the channels-last LRN (docs/performance.md);
    # the same values to rounding.
    channels_last: bool = runtime(True)
    # The network through torch.compile (inductor): fused kernels for the forward and
    # backward pass, after a compile of a minute or so at the start (docs/performance.md).
    compile: bool = runtime(False)
    workers: int | None = bounded(None, at_least=0, is_runtime=True)
    # Compute threads on a CPU. None: the faster of (cores − workers) and all cores,
    # timed at the start (core/nn/threads.py), or the count a resumed run recorded.
    threads: int | None = bounded(None, at_least=1, is_runtime=True)
    checkpoint_minutes: float = bounded(30.0, at_least=0, is_runtime=True)
    # last.pt also every N global steps (0: off), so a restarted job (torchrun
    # --max-restarts, a requeued batch job) loses at most N steps: 5,000 steps of the
    # paper's batch are ~2–4 minutes on a fast GPU, ~640,000 images (docs/cluster.md).
    checkpoint_every: int = bounded(5000, at_least=0, is_runtime=True)
    # Under torchrun: how long a collective waits for the other ranks before the job ends
    # in one line naming the rank (PyTorch's default: 30 minutes on gloo, 10 on NCCL).
    # Above the longest legitimate wait: rank 0 saving a checkpoint, sending last.pt,
    # the ranks' torch.compile (docs/cluster.md).
    collective_minutes: float = bounded(5.0, at_least=0.01, is_runtime=True)
    # Stop, after the epoch's checkpoint, at an epoch that learned nothing (`flat`).
    stop_if_flat: bool = runtime(False)
    # TensorBoard event files under RUN_DIR/tensorboard (tensorboardX, an optional extra)
    tensorboard: bool = runtime(False)

    # Keys read as another key's: `crop` belongs to the network (`model.crop`), but
    # `--crop`, `--set crop=…` and a recipe's `crop = …` name it here.
    ALIASES: ClassVar[dict[str, tuple[str, str]]] = {"crop": ("model", "crop")}

    @property
    def crop(self) -> int:
        """The network's input side (`model.crop`): the training crop and test views."""
        return self.model.crop


@dataclass(frozen=True)
class EvalConfig(Checked):
    """`alexcli eval`: the paper's test, 1 or 10 views."""

    views: Literal[1, 10] = 10
    split: str = "val"
    batch_size: int = bounded(128, at_least=1, is_runtime=True)
    devices: str = runtime("auto")
    amp: Literal["off", "bf16", "fp16"] = runtime("off")
    workers: int | None = bounded(None, at_least=0, is_runtime=True)  # None: cores − 1
    compile: bool = runtime(False)  # the network's forward through torch.compile


@dataclass(frozen=True)
class AblateConfig(Checked):
    """`alexcli ablate`: which of the paper's claims, over how many seeds (docs/ablations.md)."""

    only: tuple[str, ...] = ()  # claim names (workflows/ablate/claims.py); empty: all
    seeds: int = bounded(3, at_least=1)  # seeds first_seed…first_seed+N−1, each paired
    first_seed: int = bounded(0, at_least=0, at_most=999_999)  # another seed set: 3, 6, …
    threshold: float = bounded(0.25, at_least=0, at_most=1)  # Figure 1's training error
    # Figure 1's protocol (the relu claim): each activation's constant lr is the fastest
    # to the threshold of these multiples of the baseline's lr, on a seed of its own;
    # its runs train `figure1_epochs` (None: the baseline's epochs). Down to 1/16: the
    # protocol trains unclipped, and `small`'s lr (0.02) is one that needs its clipping.
    figure1_lrs: tuple[float, ...] = (0.0625, 0.125, 0.25, 0.5, 1.0)
    figure1_epochs: int | None = bounded(None, at_least=1)
    batch_size: int = bounded(128, at_least=1, is_runtime=True)  # the measuring evals'


@dataclass(frozen=True)
class BenchConfig(Checked):
    """`alexcli bench`: what to measure, on what, for how long (nothing is cached)."""

    preset: str | None = None  # the network and batch of the train step; None: paper
    batch_size: int | None = bounded(None, at_least=1)  # None: the preset's
    amp: Literal["off", "bf16", "fp16"] = "bf16"  # the tuned step's precision
    devices: str = "auto"  # the training device(s): the step, the loader's device side
    threads: int | None = bounded(None, at_least=1)  # None: what `train` would use
    workers: int | None = bounded(None, at_least=0)  # loader processes; None: as `train`
    jobs: int = bounded(2, at_least=1)  # prepare's and stats' processes
    seconds: float = bounded(5.0, at_least=0.01)  # each rate is timed at least this long
    only: tuple[str, ...] = ()  # "prepare", "stats", "loader", "train", "inference"; empty: all
    source: str = ""  # prepare's image tree; "": a generated one
    source_images: int = bounded(480, at_least=1)  # the generated tree's training images
    quick: bool = False  # tiny data and short timings: checks the report, not the machine
    compile: bool = False  # also the tuned step through torch.compile (`train --compile`)


@dataclass(frozen=True)
class SyntheticConfig(Checked):
    """`source = "synthetic"`: the embedded ILSVRC-shaped tree (core/data/synthetic.py),
    with Kaggle-style validation labels and a few of ImageNet's awkward files."""

    classes: int = bounded(10, at_least=2)
    train_per_class: int = bounded(100, at_least=1)
    val_per_class: int = bounded(30, at_least=1)
    seed: int = bounded(0, at_least=0, at_most=SEED_MAX)
    traps: bool = True
    # The tree packed as ILSVRC-2012 is downloaded (a train tar of per-class tars, the
    # val tar, Kaggle's labels), which prepare then reads in place.
    archives: bool = False


# Presets: named TrainConfigs. `paper` is the paper's recipe (docs/paper.md lists the
# departures). `small` keeps every structural feature at reduced width for a 2-core CPU;
# docs/presets.md says why its recipe differs (the paper's does not learn at this
# scale) and has the experiments, on the generated images and on real photographs.
PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    "small": TrainConfig(
        preset="small",
        # He init and unit-variance input (÷ ~58.8, ImageNet's per-channel std in 0–255
        # units) instead of the paper's N(0, 0.01²) on raw pixels, which stays at chance
        # at this scale. 30 epochs with ÷10 at 20 and 26 (20.1 and 26.1 since the
        # fractions are of steps): the best of the schedules compared over 3 seeds
        # (docs/presets.md); written as fractions of the run's steps, so a shorter or
        # longer one drops at the same points of it. lr 0.02 with each step's gradients
        # clipped to norm 2: unclipped (lr 0.005 then) batch 256 at the linear rule's lr
        # did not learn in 4 epochs on MNIST and trailed on Fashion-MNIST; clipped, it
        # learns on both, and batch 16 and 32 train as well as before (docs/presets.md
        # "Robust over batch, lr and run length"). lr × gradient norm at most 0.08 (twice
        # lr × clip at batch 32): unbounded, batch 256 at ×4 of the rule's lr died on both
        # sets and ×2 died or stalled; at 0.32 they trained, and at 0.08 all but one of
        # the runs it binds on trained better (binds above lr 0.04 only: batch 32 at ×4,
        # batch 256 from its rule's lr up).
        epochs=30,
        batch_size=32,
        lr=0.02,
        clip_grad_norm=2.0,
        max_step_norm=0.08,
        schedule="step",
        lr_steps=(0.67, 0.87),
        warmup_epochs=0.0,
        input_scale=0.017,
        model=ModelConfig(
            init="kaiming",
            fc8_std=0.01,  # the paper's: a fresh network's loss is ln C, not ~2× ln C
            # Half the paper's rate: dropout "roughly doubles the number of iterations
            # required to converge" (section 4.2), and `small`'s runs are short. At 0.5
            # they trailed a plain CNN on MNIST by 1.7–2.0 points at 1,000–2,000 steps,
            # at 0.25 by 0.5–1.3 (docs/presets.md "Dropout 0.25 for short runs").
            dropout=0.25,
            # The paper's widths divided (conv1 by 3, conv2–5 and fc6/fc7 by 4; fc at
            # 1/16 trained 0.8 points worse on Fashion-MNIST's photographs, 3 seeds) and
            # the paper's conv1, 11×11 stride 4 (Figure 3's kernel shape): 112 crops give
            # 27 → 13 → 6 → 2 maps, so crops must be ≥ 63 (docs/presets.md "conv1").
            crop=112,
            conv_channels=(32, 64, 96, 96, 64),
            fc_features=(1024, 1024),
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
