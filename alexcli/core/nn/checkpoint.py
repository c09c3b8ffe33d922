"""Checkpoints: everything to resume training exactly, and what eval, predict and viz need.

docs/paper.md "Learning" (the state of SGD with momentum and the lr schedule) and
"Data" (the mean image and the RGB eigen data that the test-time pipeline must reuse).

`Checkpoint` is the one typed description of a checkpoint: the trainer fills one and
`save_checkpoint` writes its `to_payload()`; `load_checkpoint` reads the file back into
one through `from_payload`, so the writer and the reader are the same code. The file is
a `torch.save`d dict of plain data and tensors only, read with
`torch.load(weights_only=True)` always, so a crafted file cannot run code: RNG states are
stored as tensors and ints, never as numpy objects or pickled Python state. The dict
carries `format` and `version`; a foreign, truncated, pickled or older file is a
one-line `FormatError` naming the command that rebuilds it. Keys: docs/formats.md
"Checkpoints".
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from alexcli.config import TrainConfig, from_dict, to_dict
from alexcli.core.atomic import atomic_path
from alexcli.core.rundir import RunDir
from alexcli.errors import AlexcliError, ConfigError, FormatError, UserError, first_line
from alexcli.version import __version__

if TYPE_CHECKING:
    from alexcli.core.nn.lrn import Lrn
    from alexcli.core.nn.model import AlexNet

FORMAT = "alexcli-checkpoint"
VERSION = 1
_FIX = "rerun `alexcli train DATA_DIR RUN_DIR --force` to rebuild it"
_REQUIRED = ("config", "classes", "size", "mean", "eigval", "eigvec", "model", "epoch", "step")


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A run at one moment: its configuration and data, its weights, and (for resuming)
    the optimizer, schedule, scaler, running totals and RNG states of every rank."""

    config: TrainConfig
    classes: list[dict[str, str]]  # label i is classes[i]: name (wnid) and words
    size: int  # the stored images' side
    mean: np.ndarray  # float32 (size, size, 3), the training set's mean image, 0–255
    eigval: np.ndarray  # float32 (3,), RGB covariance eigenvalues, 0–255² units
    eigvec: np.ndarray  # float32 (3, 3), column i ↔ eigval[i]
    weights: dict[str, torch.Tensor]  # the network's state dict (key "model" in the file)
    epoch: int  # epochs completed (a mid-epoch checkpoint: the epoch under way)
    step: int = 0  # steps done inside `epoch` (0 at an epoch boundary)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    epoch_progress: dict[str, Any] = field(default_factory=dict)  # `EpochProgress` totals
    rank_rng: list[dict[str, Any]] = field(default_factory=list)  # `rng_state()` per rank
    best_top1: float | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl so far
    upstream: dict[str, str] = field(default_factory=dict)  # prepare and stats identities
    threads: int | None = None  # CPU compute threads it trained with (resume keeps them)
    path: Path | None = None  # where it was read from; not written

    @property
    def source(self) -> Path:
        """The file it was read from (`load_checkpoint` always sets it)."""
        assert self.path is not None, "a checkpoint made in memory has no file"
        return self.path

    @property
    def world(self) -> int:
        """DDP processes of the run that saved it."""
        return max(len(self.rank_rng), 1)

    def to_payload(self) -> dict[str, Any]:
        """The dict `torch.save` writes (plain data and tensors, stamped with the format)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": to_dict(self.config),
            "classes": [dict(c) for c in self.classes],
            "size": self.size,
            "mean": torch.as_tensor(np.asarray(self.mean, np.float32)),
            "eigval": torch.as_tensor(np.asarray(self.eigval, np.float32)),
            "eigvec": torch.as_tensor(np.asarray(self.eigvec, np.float32)),
            "model": {k: v.detach().cpu() for k, v in self.weights.items()},
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "epoch": self.epoch,
            "step": self.step,
            "sampler": {
                "epoch": self.epoch,
                "position": self.step * self.config.batch_size,
                "seed": self.config.seed,
            },
            "epoch_progress": dict(self.epoch_progress),
            "rng": self.rank_rng[0] if self.rank_rng else None,
            "rank_rng": list(self.rank_rng),
            "world": self.world,
            "best_top1": self.best_top1,
            "metrics": list(self.metrics),
            "upstream": dict(self.upstream),
            "threads": self.threads,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any], path: Path) -> Checkpoint:
        """Check a loaded payload and type it; a one-line FormatError names what is wrong."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise FormatError(f"{path}: not an alexcli checkpoint", hint=_FIX)
        version = data.get("version")
        if version != VERSION:
            raise FormatError(
                f"{path}: checkpoint version {version}, this alexcli reads {VERSION}", hint=_FIX
            )
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise FormatError(f"{path}: checkpoint lacks {', '.join(missing)}", hint=_FIX)
        try:
            config = from_dict(TrainConfig, data["config"], where=str(path))
        except ConfigError as e:
            raise FormatError(f"{path}: saved configuration unreadable ({e})", hint=_FIX) from None
        rank_rng = data.get("rank_rng") or ([data["rng"]] if data.get("rng") else [])
        best = data.get("best_top1")
        return cls(
            config=config,
            classes=[dict(c) for c in data["classes"]],
            size=int(data["size"]),
            mean=_array(data["mean"]),
            eigval=_array(data["eigval"]),
            eigvec=_array(data["eigvec"]),
            weights=dict(data["model"]),
            epoch=int(data["epoch"]),
            step=int(data["step"]),
            optimizer=data.get("optimizer"),
            scheduler=data.get("scheduler"),
            scaler=data.get("scaler"),
            epoch_progress=dict(data.get("epoch_progress") or {"step": int(data["step"])}),
            rank_rng=list(rank_rng),
            best_top1=None if best is None else float(best),
            metrics=[dict(m) for m in data.get("metrics", [])],
            upstream=dict(data.get("upstream") or {}),
            threads=None if data.get("threads") is None else int(data["threads"]),
            path=path,
        )

    def build_model(
        self, devices: list[torch.device] | None = None, *, lrn: Lrn | None = None
    ) -> AlexNet:
        """The network with these weights, placed on `devices`, in eval mode (`lrn`:
        another implementation of the normalisation, as `build_model` takes)."""
        from alexcli.core.nn.lrn import local_response_norm
        from alexcli.core.nn.model import build_model

        model = build_model(self.config.model, devices, lrn=lrn or local_response_norm)
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as e:  # "Error(s) in loading state_dict…:", then one line each
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            reason = " ".join(lines[1:2] or lines[:1])[:200]
            raise FormatError(
                f"{self.path}: weights do not fit the network ({reason})", hint=_FIX
            ) from None
        return model.eval()


def save_checkpoint(path: Path | str, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` atomically to `path`. A write that fails (a full disk) leaves
    the file that was there and is one error naming `path`: the system's OSError when
    torch's writer saw one, else an `AlexcliError` saying so."""
    payload = checkpoint.to_payload()
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:  # a file of ours: its write errors keep their errno
                torch.save(payload, f)
        except RuntimeError as e:  # torch's zip writer, after the write under it failed
            raise _write_failed(e, Path(path)) from e


def _write_failed(e: RuntimeError, path: Path) -> Exception:
    """The error that says a checkpoint's write failed: the OSError in `e`'s chain."""
    cause: BaseException | None = e
    for _ in range(8):  # a chain is short; never follow a cycle for ever
        if isinstance(cause, OSError) and cause.errno:
            return OSError(cause.errno, os.strerror(cause.errno), str(path))
        cause = cause and (cause.__cause__ or cause.__context__)
    return AlexcliError(
        f"{path}: writing the checkpoint failed, likely a full disk ({first_line(e)})",
        hint="free some space and rerun: the checkpoint that was there is kept",
    )


def resolve_checkpoint(path_or_run_dir: Path | str) -> Path:
    """A checkpoint file as given, or RUN_DIR's checkpoints/best.pt, else last.pt."""
    path = Path(path_or_run_dir)
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (RunDir(path).best, RunDir(path).last):
            if candidate.is_file():
                return candidate
        raise UserError(
            f"{path}: no checkpoints/best.pt or checkpoints/last.pt in this run directory",
            hint="train first: `alexcli train DATA_DIR RUN_DIR`",
        )
    raise UserError(f"{path}: no such run directory or checkpoint file")


def load_checkpoint(path_or_run_dir: Path | str, *, content: bytes | None = None) -> Checkpoint:
    """Read and check a checkpoint (weights only: never runs code from the file), or the
    .safetensors file `alexcli export` writes (weights and configuration, no resuming).
    `content`: the checkpoint's bytes, received rather than read (another node's file)."""
    path = Path(path_or_run_dir) if content is not None else resolve_checkpoint(path_or_run_dir)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        source = io.BytesIO(content) if content is not None else path
        data = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign bytes, a pickle that would run code
        if isinstance(e, pickle.UnpicklingError) and "GLOBAL" in str(e):
            reason = "holds pickled Python objects, which alexcli never loads"
        else:
            reason = "not a checkpoint (truncated or foreign)"
        raise FormatError(f"{path}: {reason}", hint=_FIX) from None
    return Checkpoint.from_payload(data, path)


def _array(value: Any) -> np.ndarray:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return tensor.numpy().astype(np.float32)


# --------------------------------------------------------------------------- RNG states


def rng_state(cuda: bool | None = None) -> dict[str, Any]:
    """torch (CPU, CUDA), numpy and Python RNG states as tensors and plain values.

    `cuda`: whether the run uses CUDA, so its generators' states belong in it; None:
    whenever CUDA is initialised in this process. A CPU run says False: what it saves then
    does not depend on whether something else in the process touched CUDA before."""
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
    if cuda is None:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
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


def seed_everything(seed: int) -> None:
    """Model init and dropout (torch), and numpy / random for anything else."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# --------------------------------------------------------------------------- safetensors
# The weights file `alexcli export` writes and `alexcli.load` reads: a checkpoint's weights,
# mean image and eigen data as tensors, its configuration and classes as metadata (nothing
# to resume). Written and read here, beside the checkpoint it serialises.

WEIGHTS_FORMAT = "alexcli-weights"
WEIGHTS_VERSION = 1
_EXPORT_AGAIN = "export it again: `alexcli export RUN_DIR OUT.safetensors`"


def file_metadata(ckpt: Checkpoint, layout: str = "nchw") -> dict[str, str]:
    """What a user of an exported file needs beside its weights or graph: the class names,
    the input it takes (`layout` nchw or nhwc), where it came from. Strings (safetensors'
    and ONNX's metadata are)."""
    crop, size = ckpt.config.crop, ckpt.size
    shape = f"(n, {crop}, {crop}, 3)" if layout == "nhwc" else f"(n, 3, {crop}, {crop})"
    return {
        "format": WEIGHTS_FORMAT,
        "version": str(WEIGHTS_VERSION),
        "alexcli": __version__,
        "classes": json.dumps(ckpt.classes),
        "input": f"uint8 {shape} RGB crops",
        "preprocess": f"shorter side to {size}, central {size}×{size}, centre {crop}×{crop}",
        "output": f"float32 (n, {len(ckpt.classes)}) class probabilities",
        "source": str(ckpt.path or ""),
        "epoch": str(ckpt.epoch),
    }


def safetensors_bytes(ckpt: Checkpoint) -> bytes:
    """The weights (`model.` + state dict key), `mean`, `eigval`, `eigvec`, and the
    configuration and classes as metadata: all `alexcli.load` needs, nothing to resume.
    (Bytes, then written by the caller: safetensors' save_file makes the file 0600.)"""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt.weights.items()}
    for name in ("mean", "eigval", "eigvec"):
        tensors[name] = torch.from_numpy(np.ascontiguousarray(getattr(ckpt, name), np.float32))
    meta = file_metadata(ckpt, "nchw")
    meta |= {"config": json.dumps(to_dict(ckpt.config)), "size": str(ckpt.size)}
    return save(tensors, metadata=meta)


def read_safetensors(path: Path) -> Checkpoint:
    """A `safetensors_bytes` file as a Checkpoint (weights only: nothing to resume)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path}: not a safetensors file ({e})", hint=_EXPORT_AGAIN) from None
    if meta.get("format") != WEIGHTS_FORMAT:
        raise FormatError(
            f"{path}: a safetensors file, but not alexcli's (no alexcli metadata)",
            hint="alexcli reads the .safetensors files `alexcli export` writes",
        )
    if meta.get("version") != str(WEIGHTS_VERSION):
        raise FormatError(
            f"{path}: weights version {meta.get('version')}, this alexcli reads {WEIGHTS_VERSION}",
            hint=_EXPORT_AGAIN,
        )
    missing = [k for k in ("mean", "eigval", "eigvec") if k not in tensors]
    missing += [k for k in ("config", "classes", "size") if k not in meta]
    if missing:
        raise FormatError(f"{path}: lacks {', '.join(missing)}", hint=_EXPORT_AGAIN)
    try:
        config = from_dict(TrainConfig, json.loads(meta["config"]), where=str(path))
        classes = [dict(c) for c in json.loads(meta["classes"])]
        size, epoch = int(meta["size"]), int(meta.get("epoch", 0))
    except (ConfigError, ValueError, TypeError) as e:
        raise FormatError(f"{path}: metadata unreadable ({e})", hint=_EXPORT_AGAIN) from None
    return Checkpoint(
        config=config,
        classes=classes,
        size=size,
        mean=tensors["mean"].numpy(),
        eigval=tensors["eigval"].numpy(),
        eigvec=tensors["eigvec"].numpy(),
        weights={k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        epoch=epoch,
        path=path,
    )
