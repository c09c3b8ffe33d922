"""A trained run as `eval`, `predict`, `neighbors` and Python callers use it
(`alexcli.load`): its network on the chosen devices with the test-time input pipeline it
was trained with — prepare's decode and resize, the mean image at each view, the views.

The run is read through `core.nn.checkpoint.load_checkpoint` (weights only: a crafted
file never runs code), and the input pipeline is rebuilt from what the checkpoint
carries (mean image, crop, input scale), so no DATA_DIR/stats.h5 is needed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from alexcli.config import EvalConfig, TrainConfig
from alexcli.errors import UserError
from alexcli.stages.datadir import DataDir
from alexcli.stages.results import Result
from alexcli.stages.runner import owner

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

    from alexcli.core.data.loader import BatchLoader
    from alexcli.core.data.shards import ShardSet
    from alexcli.core.data.transforms import Normalizer
    from alexcli.core.nn.checkpoint import Checkpoint
    from alexcli.core.nn.inference import ThreadTuner
    from alexcli.core.nn.loops import Amp
    from alexcli.core.nn.model import AlexNet


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Guess(Result):
    """One of an image's top-5 classes."""

    index: int
    name: str
    words: str
    probability: float


# What `preprocess` takes: an image file, its bytes, or a picture already in memory.
Picture: TypeAlias = "str | Path | bytes | np.ndarray | Image.Image"


@dataclass
class Classifier:
    """A run's network on its devices, with the test-time input pipeline it was trained
    with. `alexcli.load(RUN_DIR or checkpoint)` makes one; `alexcli predict` uses it.

    The network is set up for inference (core/nn/inference.py: channels-last; on a CPU
    an LRN without autograd's bookkeeping, fc6…fc8 through oneDNN and the compute
    threads chosen by timing): the training network's values, to float rounding."""

    ckpt: Checkpoint
    cfg: TrainConfig
    model: AlexNet  # an nn.Module, in eval mode
    normalize: Normalizer
    devices: list[torch.device]
    amp: Amp = "off"
    batch_size: int = 128
    threads: ThreadTuner | None = None  # a CPU's compute threads, chosen by timing
    forward: nn.Module | None = None  # `model` as its forward runs: compiled (--compile)

    @classmethod
    def load(cls, run: Path, cfg: EvalConfig) -> Classifier:
        """A RUN_DIR (checkpoints/best.pt, else last.pt), a checkpoint or an exported
        .safetensors file."""
        check_run(run)
        from alexcli.core.nn.checkpoint import load_checkpoint

        return cls.of(load_checkpoint(run), cfg)

    @classmethod
    def of(cls, ckpt: Checkpoint, cfg: EvalConfig) -> Classifier:
        """`ckpt`'s network on `cfg.devices`, with its test-time input pipeline."""
        from alexcli.core.data.loader import default_workers
        from alexcli.core.data.transforms import Normalizer
        from alexcli.core.nn.devices import check_amp, resolve_devices
        from alexcli.core.nn.inference import for_inference, inference_threads, lrn_for
        from alexcli.core.nn.loops import compiled

        devices = resolve_devices(cfg.devices)
        check_amp(cfg.amp, devices[0])
        train_cfg = ckpt.config
        normalize = Normalizer.create(
            ckpt.mean,
            ckpt.eigval,
            ckpt.eigvec,
            devices[0],
            lighting_scale=train_cfg.lighting_scale,
            input_scale=train_cfg.input_scale,
        )
        model = for_inference(ckpt.build_model(devices, lrn=lrn_for(devices[0])))
        workers = cfg.workers if cfg.workers is not None else default_workers()
        threads = inference_threads(devices[0], workers)
        log.debug("%s: epoch %d on %s", ckpt.path, ckpt.epoch, ", ".join(map(str, devices)))
        forward = compiled(model) if cfg.compile else model
        return cls(
            ckpt, train_cfg, model, normalize, devices, cfg.amp, cfg.batch_size, threads, forward
        )

    @property
    def network(self) -> nn.Module:
        """What runs the forward pass: `model`, or it compiled."""
        return self.forward if self.forward is not None else self.model

    @property
    def crop(self) -> int:
        """The network's input side (the views are cut at it)."""
        return self.cfg.crop

    @property
    def size(self) -> int:
        """The stored images' side: pictures are resized to it first, as prepare does."""
        return self.ckpt.size

    @property
    def classes(self) -> list[dict[str, str]]:
        """Label i is `classes[i]`: its `name` (a wnid for ImageNet) and `words`."""
        return self.ckpt.classes

    def preprocess(self, picture: Picture) -> np.ndarray:
        """A picture as the run's data were stored: upright, RGB, shorter side to `size`,
        the central square, uint8 (size, size, 3). A file that holds no image raises
        `core.data.decode.Unreadable`."""
        from alexcli.core.data import decode

        if isinstance(picture, str | Path | bytes):
            return decode.load_image(picture, self.size)
        return decode.picture_to_input(picture, self.size)

    def probabilities(self, pictures: Sequence[Picture], views: int = 10) -> torch.Tensor:
        """Class probabilities (n, classes) on the CPU: each picture preprocessed, then
        the softmax of each of `views` patches (1: the centre; 10: the paper's test)
        averaged."""
        import torch

        if isinstance(pictures, str | Path | bytes | np.ndarray):
            raise TypeError(
                "pictures is a list (one path, bytes, image or array each): "
                f"probabilities([picture]), not probabilities({type(pictures).__name__})"
            )
        out = []
        with self.running():
            for lo in range(0, len(pictures), self.batch_size):  # decode a batch at a time
                chunk = pictures[lo : lo + self.batch_size]
                images = [self._named(p, lo + i) for i, p in enumerate(chunk)]
                out.append(self.classify(np.stack(images), views))
        return torch.cat(out) if out else torch.zeros((0, len(self.classes)))

    def _named(self, picture: Picture, index: int) -> np.ndarray:
        """`preprocess`, its `Unreadable` naming the file (or the list's index)."""
        from alexcli.core.data import decode

        try:
            return self.preprocess(picture)
        except decode.Unreadable as e:
            name = str(picture) if isinstance(picture, str | Path) else f"picture {index}"
            named = decode.Unreadable(e.reason, e.detail)
            named.args = (f"{name}: {e}",)
            raise named from None

    def classify(self, images: np.ndarray, views: int = 10) -> torch.Tensor:
        """Probabilities (n, classes) on the CPU of preprocessed images, uint8
        (n, size, size, 3) as `preprocess` returns them."""
        import torch

        from alexcli.core.nn.loops import view_probabilities

        self._check(images)
        if views not in (1, 10):
            raise ValueError(f"views is 1 (the centre) or 10 (the paper's test), not {views}")
        with self.running():
            probs = view_probabilities(
                self.network,
                torch.from_numpy(images),
                self.normalize,
                self.crop,
                views,
                self.amp,
                threads=self.threads,
            )
        return probs.float().cpu()

    def features(self, images: np.ndarray) -> torch.Tensor:
        """fc7's activations (n, fc7 width), float32 on the first tower's device, of the
        centre patch of preprocessed images, uint8 (n, size, size, 3): the vectors
        `neighbors` compares (Figure 4)."""
        import torch

        from alexcli.core.nn.loops import centre_features

        self._check(images)
        with self.running():
            return centre_features(
                self.model,
                torch.from_numpy(images),
                self.normalize,
                self.crop,
                self.amp,
                threads=self.threads,
            )

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Inside, forward passes run with no autograd, the threads as tuned and, on a
        CPU, freed memory kept for the next batch (core/nn/inference.py): `classify` and
        `features` each do so on their own; a caller with many batches wraps its loop,
        so the next batch reuses the last one's pages."""
        from alexcli.core.nn.inference import inference

        with inference(self.devices[0]), self.threads or contextlib.nullcontext():
            yield

    def _check(self, images: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.shape[1:] != (self.size, self.size, 3):
            raise ValueError(
                f"expected uint8 (n, {self.size}, {self.size}, 3), "
                f"got {images.dtype} {images.shape}"
            )

    def predict(
        self, pictures: Sequence[Picture], views: int = 10, topk: int = 5
    ) -> list[list[Guess]]:
        """Each picture's `topk` classes, most probable first (`probabilities`, ranked)."""
        return self.guesses(self.probabilities(pictures, views), topk)

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
        from alexcli.core.data.batches import CropDataset, EpochSampler
        from alexcli.core.data.loader import default_workers, make_loader

        size = self.ckpt.size
        sampler = EpochSampler(len(shards), cfg.batch_size, size=size, crop=size, train=False)
        workers = cfg.workers if cfg.workers is not None else default_workers()
        pin = self.devices[0].type == "cuda"
        return make_loader(CropDataset(shards, size), sampler, workers=workers, pin_memory=pin)

    def guesses(self, probs: torch.Tensor, topk: int = 5) -> list[list[Guess]]:
        """Each row's `topk` classes with their names and words."""
        from alexcli.core.nn.loops import top_classes

        classes = self.ckpt.classes
        return [
            [Guess(i, classes[i]["name"], classes[i].get("words", ""), p) for i, p in row]
            for row in top_classes(probs, topk)
        ]


def check_run(run: Path) -> None:
    """A DATA_DIR given where a run belongs is named as such (not "no checkpoints here")."""
    if Path(run).is_dir() and owner(Path(run)) == "prepare":
        raise UserError(
            f"{run} is a DATA_DIR (`alexcli prepare` wrote it), not a training run",
            hint="give the RUN_DIR `alexcli train` wrote, or one of its checkpoints (.pt)",
        )


def check_order(run: Path, data_dir: Path, command: str) -> None:
    """`eval DATA_DIR RUN_DIR` (or neighbors'): say the two look swapped."""
    if owner(Path(run)) == "prepare" and owner(Path(data_dir)) == "train":
        raise UserError(
            f"the arguments look swapped: {run} is a DATA_DIR and {data_dir} a RUN_DIR",
            hint=f"the run comes first: `alexcli {command} RUN_DIR DATA_DIR`",
        )
