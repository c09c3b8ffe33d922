"""A trained run as `eval`, `predict` and `neighbors` use it: its network on the chosen
devices with the test-time input pipeline it was trained with.

The run is read through `core.nn.checkpoint.load_checkpoint` (weights only: a crafted
file never runs code), and the input pipeline is rebuilt from what the checkpoint
carries (mean image, crop, input scale), so no DATA_DIR/stats.h5 is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alexcli.config import EvalConfig, TrainConfig
from alexcli.errors import UserError
from alexcli.stages.datadir import DataDir
from alexcli.stages.results import Result
from alexcli.stages.runner import owner

if TYPE_CHECKING:
    import torch

    from alexcli.core.data.loader import BatchLoader
    from alexcli.core.data.shards import ShardSet
    from alexcli.core.data.transforms import Normalizer
    from alexcli.core.nn.checkpoint import Checkpoint
    from alexcli.core.nn.model import AlexNet


@dataclass(frozen=True)
class Guess(Result):
    """One of an image's top-5 classes."""

    index: int
    name: str
    words: str
    probability: float


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
        check_run(run)
        from alexcli.core.data.transforms import Normalizer
        from alexcli.core.nn.checkpoint import load_checkpoint
        from alexcli.core.nn.devices import check_amp, resolve_devices

        devices = resolve_devices(cfg.devices)
        check_amp(cfg.amp, devices[0])
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
        from alexcli.core.data.batches import CropDataset, EpochSampler
        from alexcli.core.data.loader import default_workers, make_loader

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
