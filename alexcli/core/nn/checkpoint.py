"""Checkpoints: everything to resume training exactly, and what eval, predict and viz need.

PAPER.md "Learning" (the state of SGD with momentum and the lr schedule) and "Data"
(the mean image, the RGB eigen data the test-time pipeline must reuse).

A checkpoint is a `torch.save`d dict of plain data and tensors only, read back with
`torch.load(weights_only=True)` always, so a crafted file cannot run code: RNG states
are stored as tensors and ints, never as numpy objects or pickled Python state. The
dict carries `format` and `version` (STYLE habit 4); a foreign, truncated, pickled or
older file is a one-line `FormatError` naming the command that rebuilds it.
Keys: docs/formats.md "Checkpoints".
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from alexcli.config import TrainConfig, from_dict
from alexcli.core.atomic import atomic_path
from alexcli.errors import ConfigError, FormatError, UserError

if TYPE_CHECKING:
    from alexcli.core.nn.model import AlexNet

FORMAT = "alexcli-checkpoint"
VERSION = 1
_FIX = "rerun `alexcli train DATA_DIR RUN_DIR --force` to rebuild it"
_REQUIRED = ("config", "classes", "size", "mean", "eigval", "eigvec", "model", "epoch", "step")


def save_checkpoint(path: Path | str, payload: Mapping[str, Any]) -> None:
    """Write `payload` (stamped with format and version) atomically to `path`."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def resolve_checkpoint(path_or_run_dir: Path | str) -> Path:
    """A checkpoint file as given, or RUN_DIR's checkpoints/best.pt, else last.pt."""
    path = Path(path_or_run_dir)
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise UserError(
            f"{path}: no checkpoints/best.pt or checkpoints/last.pt in this run directory",
            hint="train first: `alexcli train DATA_DIR RUN_DIR`",
        )
    raise UserError(f"{path}: no such run directory or checkpoint file")


def load_checkpoint(path_or_run_dir: Path | str) -> Checkpoint:
    """Read and check a checkpoint (weights only: never runs code from the file)."""
    path = resolve_checkpoint(path_or_run_dir)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign bytes, a pickle that would run code
        if isinstance(e, pickle.UnpicklingError) and "GLOBAL" in str(e):
            reason = "holds pickled Python objects, which alexcli never loads"
        else:
            reason = "not a checkpoint (truncated or foreign)"
        raise FormatError(f"{path}: {reason}", hint=_FIX) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FormatError(f"{path}: not an alexcli checkpoint", hint=_FIX)
    version = data.get("version")
    if version != VERSION:
        raise FormatError(
            f"{path}: checkpoint version {version}, this alexcli reads {VERSION}", hint=_FIX
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise FormatError(f"{path}: checkpoint lacks {', '.join(missing)}", hint=_FIX)
    return Checkpoint(path, data)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint; `payload` holds every key, the properties the common ones."""

    path: Path
    payload: dict[str, Any]

    @property
    def config(self) -> TrainConfig:
        try:
            return from_dict(TrainConfig, self.payload["config"], where=str(self.path))
        except ConfigError as e:
            raise FormatError(
                f"{self.path}: saved configuration unreadable ({e})", hint=_FIX
            ) from None

    @property
    def classes(self) -> list[dict[str, str]]:
        return [dict(c) for c in self.payload["classes"]]

    @property
    def size(self) -> int:
        return int(self.payload["size"])

    @property
    def mean(self) -> np.ndarray:
        """The training set's mean image, (size, size, 3) float32 in 0–255 units."""
        return _tensor(self.payload["mean"]).numpy().astype(np.float32)

    @property
    def eigval(self) -> np.ndarray:
        return _tensor(self.payload["eigval"]).numpy().astype(np.float32)

    @property
    def eigvec(self) -> np.ndarray:
        return _tensor(self.payload["eigvec"]).numpy().astype(np.float32)

    @property
    def model_state(self) -> dict[str, torch.Tensor]:
        return dict(self.payload["model"])

    @property
    def epoch(self) -> int:
        """Epochs completed (a mid-epoch checkpoint: the epoch under way)."""
        return int(self.payload["epoch"])

    @property
    def step(self) -> int:
        """Steps done inside `epoch` (0 at an epoch boundary)."""
        return int(self.payload["step"])

    @property
    def best_top1(self) -> float | None:
        value = self.payload.get("best_top1")
        return None if value is None else float(value)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self.payload.get("metrics", [])]

    def build_model(self, devices: list[torch.device] | None = None) -> AlexNet:
        """The network with these weights, placed on `devices`, in eval mode."""
        from alexcli.core.nn.model import build_model

        cfg = self.config
        model = build_model(cfg.model, devices)
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as e:  # "Error(s) in loading state_dict…:", then one line each
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            reason = " ".join(lines[1:2] or lines[:1])[:200]
            raise FormatError(
                f"{self.path}: weights do not fit the network ({reason})", hint=_FIX
            ) from None
        return model.eval()


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


# --------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """torch (CPU, CUDA), numpy and Python RNG states as tensors and plain values."""
    np_name, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU the saving process saw. Restore those this machine has too:
        # a run resumed where more or fewer GPUs show (CUDA_VISIBLE_DEVICES) keeps
        # cuda:0's dropout stream rather than dropping every device's.
        for i, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, i)
