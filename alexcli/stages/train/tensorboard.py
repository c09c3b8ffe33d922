"""`train --tensorboard`: the run as TensorBoard event files under RUN_DIR/tensorboard.

tensorboardX writes them (`pip install 'alexcli[tensorboard]'`): it needs neither
TensorFlow nor the `tensorboard` package, which now requires plain pillow and would
replace pillow-simd. metrics.jsonl stays the record; the events are a view of it:

- `train/loss`, `train/lr`: every step (the batch's loss, all ranks' mean; the lr it
  trained at), at the global step;
- `val/top1_error`, `val/top5_error`, `val/loss`, `train/epoch_loss`,
  `train/images_per_s`: every epoch, at the step that ended it;
- `conv1/kernels`: conv1's kernels as Figure 3 draws them (core/figures/kernel_grid.py),
  every epoch.

A resumed run opens the directory with `purge_step` at the first step it will log (one
past the checkpoint's), so the steps an interrupted run logged after its last checkpoint
are replaced, not doubled, and those before it stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from alexcli.errors import ConfigError

if TYPE_CHECKING:
    import torch

DIRECTORY = "tensorboard"
SCALARS = {
    "val_top1_error": "val/top1_error",
    "val_top5_error": "val/top5_error",
    "val_loss": "val/loss",
    "train_loss": "train/epoch_loss",
    "images_per_s": "train/images_per_s",
}


def check_tensorboard() -> None:
    """Refuse `--tensorboard` before training when tensorboardX is not installed."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboardX package",
            hint="pip install 'alexcli[tensorboard]'",
        ) from None


class TensorBoard:
    """`core.nn.trainer.TrainEvents` written as event files (the module docstring)."""

    def __init__(self, run_dir: Path, towers: int) -> None:
        check_tensorboard()
        self.directory = Path(run_dir) / DIRECTORY
        self.towers = towers
        self._writer: Any = None

    def start(self, step: int) -> None:
        from tensorboardX import SummaryWriter

        # purge_step: TensorBoard hides earlier files' events at or after it. Steps
        # 1…`step` are in the checkpoint (and logged); `step` + 1 is the first to come.
        # (the suffix: two starts in one second would otherwise share a file name)
        purge = step + 1 if step > 0 else None
        self._writer = SummaryWriter(
            str(self.directory), purge_step=purge, flush_secs=30, filename_suffix=f".{step}"
        )

    def step(self, step: int, loss: float, lr: float) -> None:
        self._writer.add_scalar("train/loss", loss, step)
        self._writer.add_scalar("train/lr", lr, step)

    def epoch(self, step: int, line: dict[str, Any], conv1: torch.Tensor) -> None:
        from alexcli.core.figures.kernel_grid import kernel_grid

        for key, tag in SCALARS.items():
            value = line.get(key)
            if value is not None:
                self._writer.add_scalar(tag, float(value), step)
        image, _ = kernel_grid(conv1.float().numpy(), self.towers)
        self._writer.add_image("conv1/kernels", image, step, dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
