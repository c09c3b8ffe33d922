"""Inference as eval, predict and neighbors run it, beside onnxruntime on the same cores.

Each round times, in turn, on one made-up batch of stored-size images (the weights
made up too: the speed does not depend on them):
- **alexcli**: `Classifier.classify(views=1)`, what `predict --views 1` runs per batch
  and eval per view (the view cut and normalised, the forward pass, the softmax), on the
  compute threads it chooses itself (core/nn/inference.py);
- **onnxruntime** running the graph `alexcli export --format onnx` writes for the same
  weights (uint8 crops in, the mean image and softmax inside), on as many threads, and
  on its own default (every core);
- **reference**: the training network's forward pass (NCHW, the training LRN, `no_grad`),
  how eval ran before it had an inference path, on the same threads.
Rates are medians over the rounds; a first untimed call of each warms it up.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alexcli.config import EvalConfig, TrainConfig
from alexcli.core.data.transforms import center_offset
from alexcli.core.machine import cpu_cores
from alexcli.core.nn.checkpoint import Checkpoint
from alexcli.core.nn.loops import Amp, view_probabilities
from alexcli.core.nn.model import build_model
from alexcli.stages.trained import Classifier

ONNX_MISSING = "onnxruntime, onnx or onnxscript is not installed: pip install 'alexcli[onnx]'"


@dataclass(frozen=True)
class InferenceRates:
    """Median images/s of each side, the threads they ran on, and how far alexcli's
    probabilities were from the reference path's on the timed batch."""

    threads: int
    rates: dict[str, float]  # "alexcli", "reference", "onnxruntime", "onnxruntime_default", …
    rounds: int
    batch_size: int
    max_difference: float
    onnx_missing: str | None = None
    chosen: str = ""  # how alexcli chose its threads
    times: dict[str, list[float]] = field(default_factory=dict)  # seconds, each round


def made_up_checkpoint(cfg: TrainConfig, size: int, seed: int = 0) -> Checkpoint:
    """A checkpoint of `cfg`'s network with fresh weights and a made-up mean image."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        weights = build_model(cfg.model).state_dict()
    rng = np.random.default_rng(seed)
    return Checkpoint(
        config=cfg,
        classes=[{"name": f"class {i}", "words": ""} for i in range(cfg.model.num_classes)],
        size=size,
        mean=rng.uniform(90, 150, (size, size, 3)).astype(np.float32),
        eigval=np.ones(3, np.float32),
        eigvec=np.eye(3, dtype=np.float32),
        weights=weights,
        epoch=0,
    )


def inference_rates(
    cfg: TrainConfig,
    *,
    batch_size: int,
    rounds: int,
    threads: int | None = None,
    amps: tuple[Amp, ...] = (),
) -> InferenceRates:
    """Time alexcli's inference, onnxruntime's and the reference path in `rounds`
    interleaved rounds on the CPU (`threads`: fixed for every side; None: alexcli
    chooses, and the others get as many). `amps`: alexcli also at these precisions."""
    size = cfg.crop + cfg.crop // 7  # 256 for the paper's 224
    ckpt = made_up_checkpoint(cfg, size)
    images = torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1)).numpy()  # fmt: skip
    c = center_offset(size, cfg.crop)
    crops = np.ascontiguousarray(
        images[:, c : c + cfg.crop, c : c + cfg.crop].transpose(0, 3, 1, 2)
    )
    before = torch.get_num_threads()
    try:
        net = _classifier(ckpt, "off", threads)
        for _ in range(_tuning_passes(net)):  # alexcli's own choice of threads, made here
            net.classify(images, views=1)
        count = threads or (net.threads.chosen if net.threads else before)
        chosen = "set" if threads else (net.threads.describe() if net.threads else "as set")
        torch.set_num_threads(count)
        sides: dict[str, Callable[[], object]] = {"alexcli": lambda: net.classify(images, 1)}
        for amp in amps:
            other = _classifier(ckpt, amp, count)
            sides[f"alexcli_{amp}"] = lambda other=other: other.classify(images, 1)
        sides["reference"] = _reference(ckpt, images)
        missing = None
        with tempfile.TemporaryDirectory(prefix="alexcli-bench-onnx-") as tmp:
            try:
                sides["onnxruntime"] = _onnxruntime(ckpt, Path(tmp), crops, count)
                if count != cpu_cores():
                    sides["onnxruntime_default"] = _onnxruntime(ckpt, Path(tmp), crops, None)
            except ImportError:
                missing = ONNX_MISSING
            with net.running():  # as eval and predict keep the heap across batches
                times = _interleaved(sides, rounds, count)
        difference = float(
            (net.classify(images, 1) - torch.as_tensor(sides["reference"]())).abs().max()
        )
    finally:
        torch.set_num_threads(before)
    rates = {k: batch_size / statistics.median(v) for k, v in times.items()}
    return InferenceRates(count, rates, rounds, batch_size, difference, missing, chosen, times)


def _classifier(ckpt: Checkpoint, amp: Amp, threads: int | None) -> Classifier:
    net = Classifier.of(ckpt, EvalConfig(devices="cpu", amp=amp))
    if threads is not None:
        net.threads = None  # the count set around it stays
    return net


def _tuning_passes(net: Classifier) -> int:
    if net.threads is None:
        return 1
    return 1 + net.threads.rounds * len(net.threads.counts)


def _reference(ckpt: Checkpoint, images: np.ndarray) -> Callable[[], torch.Tensor]:
    """The training network's forward on the centre view, as eval ran it before."""
    from alexcli.core.data.transforms import Normalizer

    model = ckpt.build_model()
    normalize = Normalizer.create(ckpt.mean, ckpt.eigval, ckpt.eigvec, torch.device("cpu"),
                                  input_scale=ckpt.config.input_scale)  # fmt: skip
    x = torch.from_numpy(images)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return view_probabilities(model, x, normalize, ckpt.config.crop, 1,
                                      channels_last=False)  # fmt: skip

    return run


def _onnxruntime(
    ckpt: Checkpoint, tmp: Path, crops: np.ndarray, threads: int | None
) -> Callable[[], object]:
    """A session on the exported graph: intra-op `threads` (None: onnxruntime's default)."""
    import onnxruntime

    from alexcli.core.nn import export

    path = tmp / "net.onnx"
    if not path.exists():
        export.write(ckpt, path, "onnx")
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"images": crops})[0]


def _interleaved(
    sides: dict[str, Callable[[], object]], rounds: int, threads: int
) -> dict[str, list[float]]:
    """Seconds of each side's call, `rounds` times, the sides taking turns in each round."""
    for run in sides.values():
        run()  # untimed: first-call allocation and kernel choice
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            torch.set_num_threads(threads)  # as alexcli's tuner may have left it
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times
