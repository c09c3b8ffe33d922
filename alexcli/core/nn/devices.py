"""Which devices a command runs on: `--devices auto|cpu|cuda:0|cuda:0,cuda:1`.

docs/paper.md "Architecture" (the two-GPU split): one device holds the whole network;
two devices hold one tower each (model parallel, `AlexNet.place`). More GPUs than
two are used data parallel, one process per device or pair under `torchrun`, not
through this spec.

A device that is named but not there is a `DeviceError` (one line and a hint),
never a CUDA traceback from deep inside the first forward pass.
"""

from __future__ import annotations

import re

import torch

from alexcli.errors import DeviceError

_FORMS = "auto, cpu, cuda, cuda:N, mps, or two of them for the two towers (cuda:0,cuda:1)"
_ONE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def resolve_devices(spec: str) -> list[torch.device]:
    """The devices `spec` names, checked to exist: one (whole network) or two (one per tower).

    `auto` is cuda:0 when CUDA is available, else the CPU. `cuda` means cuda:0. The
    same device may be named twice (`cpu,cpu`): both towers on it, which is the
    one-device computation through the two-device code path.
    """
    text = spec.strip().lower()
    if text == "auto":
        text = "cuda:0" if torch.cuda.is_available() else "cpu"
    parts = [p.strip() for p in text.split(",")]
    if not text or any(not p for p in parts):
        raise DeviceError(f"--devices {spec!r}: empty device name", hint=f"use {_FORMS}")
    if len(parts) > 2:
        raise DeviceError(
            f"--devices {spec!r}: {len(parts)} devices, but the network has two towers",
            hint="name one or two devices; for more GPUs run under torchrun (data parallel)",
        )
    devices = [_one_device(p, spec) for p in parts]
    if any(d.type == "cuda" for d in devices):
        # A run's layer shapes are fixed, so cuDNN may time each convolution's algorithms
        # once and keep the fastest (pytorch/examples' imagenet does the same); without
        # it cuDNN picks by heuristics. Each new batch size is timed once more.
        torch.backends.cudnn.benchmark = True
    return devices


def _one_device(name: str, spec: str) -> torch.device:
    """One device name, parsed and checked to be present on this machine."""
    match = _ONE.match(name)
    if match is None:
        raise DeviceError(f"--devices {spec!r}: unknown device {name!r}", hint=f"use {_FORMS}")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise DeviceError(f"--devices {spec!r}: there is one CPU device", hint="use cpu")
        return torch.device("cpu")
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {name!r} is not available here", hint="use cpu or auto")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {name!r} is not available: this machine (or this torch build) has no CUDA",
            hint="use --devices cpu (or auto)",
        )
    i = int(index or 0)
    count = torch.cuda.device_count()
    if i >= count:
        raise DeviceError(
            f"device {name!r} is not available: this machine has {count} CUDA device(s)",
            hint=f"name one of cuda:0…cuda:{count - 1}, or use auto",
        )
    return torch.device("cuda", i)


def send(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`: the copies of the two-device step (the crops to the second tower's
    GPU, the towers' exchanges). Between CUDA devices, or from the host to one, the host
    does not wait for the copy (the receiving device's work is ordered after it); a copy
    to the host waits, since the host may read it next."""
    return t.to(device, non_blocking=device.type == "cuda")


def check_amp(amp: str, device: torch.device) -> None:
    """`--amp fp16` needs CUDA (its GradScaler and kernels); bf16 and off run anywhere."""
    if amp == "fp16" and device.type != "cuda":
        raise DeviceError("--amp fp16 needs a CUDA device", hint="use --amp bf16 on a CPU")
