"""alexcli: Krizhevsky, Sutskever & Hinton (2012), "ImageNet Classification with Deep
Convolutional Neural Networks", as a command-line toolkit and a small Python API.

    import alexcli
    net = alexcli.load("runs/paper")          # a RUN_DIR or one of its checkpoints
    net.predict(["cat.jpg"], views=10)        # each image's top-5 classes
    net.model                                 # the torch.nn.Module

Importing the package is cheap: torch, h5py and PIL load only when a stage runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from alexcli.errors import AlexcliError, UserError
from alexcli.version import __version__

if TYPE_CHECKING:
    from alexcli.stages.classifier import Classifier

__all__ = ["AlexcliError", "UserError", "__version__", "load"]


def load(
    run: str | Path,
    *,
    devices: str = "auto",
    amp: Literal["off", "bf16", "fp16"] = "off",
    batch_size: int = 128,
) -> Classifier:
    """A trained run as a `Classifier` (`.model`, `.classes`, `.preprocess`,
    `.probabilities`, `.predict`): its RUN_DIR (checkpoints/best.pt, else last.pt) or a
    checkpoint file.

    `devices` as `alexcli eval --devices` takes them ("auto", "cpu", "cuda:0,cuda:1");
    `amp` is "off", "bf16" or "fp16" (CUDA only). Anything alexcli refuses — a path that
    holds no run, a damaged checkpoint, a device that is not there — raises an
    `alexcli.AlexcliError` (bad input: its subclass `alexcli.UserError`) whose message is
    one line, with a `.hint`.
    """
    from alexcli.config import EvalConfig
    from alexcli.stages.classifier import Classifier

    cfg = EvalConfig(devices=devices, amp=amp, batch_size=batch_size)
    return Classifier.load(Path(run), cfg)
