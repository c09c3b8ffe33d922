"""`eval` and `predict`: what a trained run does on images it has not seen.

- `evaluate`: the paper's test on a split of a DATA_DIR (core/evaluate.py): top-1 and
  top-5 error, 1 or 10 views, per-class top-1, and the paper's 40.7 % / 18.2 % beside
  them when the run is the paper's network on the 1000 ImageNet classes.
- `predict`: any image files, through prepare's own decode and resize
  (`core.images.load_image`), then the same views: the top-5 classes of each.

`neighbors` (stages/neighbors.py) shares `RunNetwork` with them.
All three read the run through `core.checkpoint.load_checkpoint` (weights only: a
crafted file never runs code) and rebuild the input pipeline from what the checkpoint
carries (mean image, crop, input scale), so no DATA_DIR/stats.h5 is needed. None keeps
a manifest: their outputs are reports, and rerunning is the way to refresh them.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alexcli.config import PRESETS, EvalConfig, TrainConfig
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import DeviceError, UserError
from alexcli.stages.datadir import DataDir, open_data_dir

if TYPE_CHECKING:
    import torch

    from alexcli.core.data.loader import BatchLoader
    from alexcli.core.data.shards import ShardSet
    from alexcli.core.data.transforms import Normalizer
    from alexcli.core.nn.checkpoint import Checkpoint
    from alexcli.core.nn.model import AlexNet

# PAPER.md "Results to reproduce": 1 CNN, ILSVRC-2012 validation set, 10 views.
PAPER_VAL = {"top1_error": 0.407, "top5_error": 0.182}
_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class Guess:
    """One of an image's top-5 classes."""

    index: int
    name: str
    words: str
    probability: float


@dataclass(frozen=True)
class ClassError:
    """Top-1 error of one class (None when the split has no image of it)."""

    index: int
    name: str
    words: str
    images: int
    top1_error: float | None


@dataclass(frozen=True)
class EvalReport:
    checkpoint: Path
    epoch: int
    split: str
    views: int
    images: int
    top1_error: float
    top5_error: float
    per_class_top1: list[ClassError]
    paper: dict[str, float] | None  # the paper's errors, when this run is comparable
    devices: list[str]
    amp: str
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["checkpoint"] = str(self.checkpoint)
        data["images_per_s"] = self.images_per_s
        return data


@dataclass(frozen=True)
class Prediction:
    """One image's answer; `error` (and no guesses) when it could not be read."""

    path: Path
    top5: list[Guess]
    error: str | None = None


@dataclass(frozen=True)
class PredictReport:
    checkpoint: Path
    views: int
    predictions: list[Prediction]

    @property
    def failed(self) -> list[Prediction]:
        return [p for p in self.predictions if p.error is not None]


# --------------------------------------------------------------------------- eval


def evaluate(
    run: Path, data_dir: Path, cfg: EvalConfig = EvalConfig(), progress: Progress = SILENT
) -> EvalReport:
    """Top-1 / top-5 error of `run` on DATA_DIR's `cfg.split`, with `cfg.views` views."""
    from alexcli.core.nn.loops import evaluate_views

    data = open_data_dir(data_dir)
    net = RunNetwork.load(run, cfg)
    net.check_data(data)
    shards = data.shard_set(cfg.split)
    if len(shards) == 0:
        raise UserError(f"{data.root}: the {cfg.split!r} split has no images")
    progress.log(
        f"evaluating {net.ckpt.source} (epoch {net.ckpt.epoch}) on {len(shards)} "
        f"{cfg.split} images, {cfg.views} view(s)"
    )
    task = progress.task(f"eval, {cfg.views} view(s)", total=len(shards), unit="images")
    start = time.perf_counter()
    tally = evaluate_views(
        net.model, net.loader(shards, cfg), net.normalize, crop=net.crop, views=cfg.views,
        num_classes=len(data.classes), amp=cfg.amp, task=task,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    task.close()
    errors = tally.class_top1_error()
    per_class = [
        ClassError(i, c["name"], c.get("words", ""), int(tally.class_images[i]),
                   None if np.isnan(errors[i]) else float(errors[i]))
        for i, c in enumerate(data.classes)
    ]  # fmt: skip
    return EvalReport(
        checkpoint=net.ckpt.source, epoch=net.ckpt.epoch, split=cfg.split, views=cfg.views,
        images=tally.images, top1_error=tally.top1_error, top5_error=tally.top5_error,
        per_class_top1=per_class, paper=paper_reference(net.cfg, data.classes),
        devices=[str(d) for d in net.devices], amp=cfg.amp, seconds=seconds,
    )  # fmt: skip


def paper_reference(cfg: TrainConfig, classes: Sequence[dict[str, str]]) -> dict[str, float] | None:
    """The paper's errors when `cfg` is the paper's network and recipe on 1000 ImageNet
    classes (wnids); None otherwise, since nothing else is comparable."""
    paper = PRESETS["paper"]
    same_net = cfg.preset == "paper" and cfg.model == paper.model and cfg.crop == paper.crop
    imagenet = len(classes) == 1000 and all(_WNID.fullmatch(c["name"]) for c in classes)
    return dict(PAPER_VAL) if same_net and imagenet else None


# --------------------------------------------------------------------------- predict


def predict(
    run: Path,
    paths: Sequence[Path],
    cfg: EvalConfig = EvalConfig(),
    progress: Progress = SILENT,
) -> PredictReport:
    """The top-5 classes of each image file (prepare's resize, then `cfg.views` views).

    A file that cannot be read gets an `error` instead; the others are still answered.
    """
    import torch

    from alexcli.core.data.decode import Unreadable, load_image
    from alexcli.core.nn.loops import view_probabilities

    net = RunNetwork.load(run, cfg)
    answers: list[Prediction] = []
    task = progress.task("predict", total=len(paths), unit="images")
    for lo in range(0, len(paths), cfg.batch_size):  # decode a batch at a time: memory bound
        chunk = [Path(p) for p in paths[lo : lo + cfg.batch_size]]
        decoded: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for i, path in enumerate(chunk):
            try:
                decoded[i] = load_image(path, net.ckpt.size)
            except Unreadable as e:
                errors[i] = str(e)
        guesses: dict[int, list[Guess]] = {}
        if decoded:
            images = torch.from_numpy(np.stack(list(decoded.values())))
            probs = view_probabilities(
                net.model, images, net.normalize, net.crop, cfg.views, cfg.amp
            )
            guesses = dict(zip(decoded, net.guesses(probs), strict=True))
        answers += [Prediction(p, guesses.get(i, []), errors.get(i)) for i, p in enumerate(chunk)]
        task.advance(len(chunk))
    task.close()
    return PredictReport(net.ckpt.source, cfg.views, answers)


# --------------------------------------------------------------------------- shared


@dataclass
class RunNetwork:
    """A run's network on its devices, with the test-time input pipeline it was trained with."""

    ckpt: Checkpoint
    cfg: TrainConfig
    model: AlexNet
    normalize: Normalizer
    devices: list[torch.device]

    @classmethod
    def load(cls, run: Path, cfg: EvalConfig) -> RunNetwork:
        from alexcli.core.data.transforms import Normalizer
        from alexcli.core.nn.checkpoint import load_checkpoint
        from alexcli.core.nn.devices import resolve_devices

        devices = resolve_devices(cfg.devices)
        if cfg.amp == "fp16" and devices[0].type != "cuda":
            raise DeviceError("--amp fp16 needs a CUDA device", hint="use --amp bf16 on a CPU")
        ckpt = load_checkpoint(run)
        train_cfg = ckpt.config
        normalize = Normalizer.create(
            ckpt.mean, ckpt.eigval, ckpt.eigvec, devices[0],
            lighting_scale=train_cfg.lighting_scale, input_scale=train_cfg.input_scale,
        )  # fmt: skip
        return cls(ckpt, train_cfg, ckpt.build_model(devices), normalize, devices)

    @property
    def crop(self) -> int:
        return self.cfg.crop

    def check_data(self, data: DataDir) -> None:
        """Refuse, in one line, a DATA_DIR that is not the kind the run was trained on."""
        data.check_classes(self.ckpt.classes)
        if data.size != self.ckpt.size:
            raise UserError(
                f"{data.root}: images are {data.size}×{data.size}, the run was trained on "
                f"{self.ckpt.size}×{self.ckpt.size}",
                hint=f"prepare the data with --size {self.ckpt.size}",
            )

    def loader(self, shards: ShardSet, cfg: EvalConfig) -> BatchLoader:
        """Whole stored images of `shards` in index order (the training loader with
        crop = image size, so its worker processes read while the network runs)."""
        from alexcli.core.data.loader import CropDataset, EpochSampler, default_workers, make_loader

        size = self.ckpt.size
        sampler = EpochSampler(len(shards), cfg.batch_size, size=size, crop=size, train=False)
        workers = cfg.workers if cfg.workers is not None else default_workers()
        pin = self.devices[0].type == "cuda"
        return make_loader(CropDataset(shards, size), sampler, workers=workers, pin_memory=pin)

    def guesses(self, probs: torch.Tensor) -> list[list[Guess]]:
        """Each row's top-5 classes with their names and words."""
        from alexcli.core.nn.loops import top_classes

        classes = self.ckpt.classes
        return [
            [Guess(i, classes[i]["name"], classes[i].get("words", ""), p) for i, p in row]
            for row in top_classes(probs)
        ]
