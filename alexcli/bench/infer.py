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

`measure` runs all this in a child process with OpenMP's wait policy as eval, predict
and neighbors set it (`machine.sleeping_openmp_threads`: OpenMP reads it when torch
loads, so a process that has imported torch cannot change it), and with its own heap
and thread settings, so nothing the bench ran before changes the figures.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexcli.bench.report import Figure
from alexcli.config import EvalConfig, TrainConfig, preset
from alexcli.core.data.transforms import center_offset
from alexcli.core.machine import OPENMP_POLICY, cpu_cores
from alexcli.core.nn.checkpoint import Checkpoint
from alexcli.core.nn.loops import Amp, view_probabilities
from alexcli.core.nn.model import build_model
from alexcli.errors import AlexcliError, ConfigError
from alexcli.stages.classifier import Classifier

CAUSE = (
    "the convolutions are most of a forward pass in both and run near this CPU's peak "
    '(docs/performance.md "Inference")'
)
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
    onnxruntime: str = ""  # its version, or why it was not measured
    chosen: str = ""  # how alexcli chose its threads
    openmp: str = ""  # OMP_WAIT_POLICY as it ran
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
    generator = torch.Generator().manual_seed(1)
    shape = (batch_size, size, size, 3)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).numpy()
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
            sides[f"alexcli_{amp}"] = functools.partial(other.classify, images, 1)
        reference = _reference(ckpt, images)
        sides["reference"] = reference
        with tempfile.TemporaryDirectory(prefix="alexcli-bench-onnx-") as tmp:
            ort = _add_onnxruntime(sides, ckpt, Path(tmp), images, count)
            with net.running():  # as eval and predict keep the heap across batches
                times = _interleaved(sides, rounds, count)
        difference = float((net.classify(images, 1) - reference()).abs().max())
    finally:
        torch.set_num_threads(before)
    rates = {k: batch_size / statistics.median(v) for k, v in times.items()}
    policy = os.environ.get(OPENMP_POLICY[0], "(OpenMP's default)")
    return InferenceRates(count, rates, rounds, batch_size, difference, ort, chosen, policy, times)


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
    normalize = Normalizer.create(
        ckpt.mean,
        ckpt.eigval,
        ckpt.eigvec,
        torch.device("cpu"),
        input_scale=ckpt.config.input_scale,
    )
    x = torch.from_numpy(images)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return view_probabilities(model, x, normalize, ckpt.config.crop, 1, channels_last=False)

    return run


def _add_onnxruntime(
    sides: dict[str, Callable[[], object]],
    ckpt: Checkpoint,
    tmp: Path,
    images: np.ndarray,
    threads: int,
) -> str:
    """onnxruntime on the exported graph, on `threads` intra-op threads and on its own
    default (every core), as sides; its version, or why it is missing."""
    try:
        import onnxruntime

        from alexcli.core.nn import export

        path = tmp / "net.onnx"
        export.write(ckpt, path, "onnx")
    except (ImportError, ConfigError):  # ConfigError: export's own "needs the onnx package"
        return ONNX_MISSING
    crop = ckpt.config.crop
    c = center_offset(ckpt.size, crop)
    crops = np.ascontiguousarray(images[:, c : c + crop, c : c + crop].transpose(0, 3, 1, 2))
    counts = {"onnxruntime": threads}
    if threads != cpu_cores():
        counts["onnxruntime_default"] = 0  # 0: onnxruntime's own choice
    for name, count in counts.items():
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = count
        if count:
            options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        sides[name] = functools.partial(session.run, None, {"images": crops})
    return f"onnxruntime {onnxruntime.__version__}"


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


# --------------------------------------------------------------------------- the figures


def figures(got: InferenceRates, preset_name: str) -> tuple[list[Figure], dict[str, Any]]:
    """`alexcli bench`'s inference figures and details: alexcli against onnxruntime on the
    same threads (target 1) and on its own, at other precisions too, and against the
    reference; without onnxruntime, the reference alone and the details say why."""
    rate, t = got.rates, f"{got.threads} thread{'' if got.threads == 1 else 's'}"
    details = {
        "preset": preset_name,
        "batch_size": got.batch_size,
        "views": 1,
        "device": "cpu",
        "threads": got.threads,
        "threads_chosen": got.chosen,
        "rounds": got.rounds,
        "images_per_s": {k: round(v, 2) for k, v in rate.items()},
        "max_difference": got.max_difference,
        "openmp_wait_policy": got.openmp,
        "onnxruntime": got.onnxruntime,
    }
    ours, value = f"alexcli, {t}", rate["alexcli"]
    found: list[Figure] = []
    if "onnxruntime" in rate:
        ort = rate["onnxruntime"]
        found.append(
            Figure(
                "inference",
                name=ours,
                value=value,
                limit=f"onnxruntime, {t}",
                limit_value=ort,
                target=1.0,
                cause=CAUSE,
            )
        )
        if "onnxruntime_default" in rate:
            own = rate["onnxruntime_default"]
            found.append(
                Figure(
                    "inference",
                    name=ours,
                    value=value,
                    limit="onnxruntime, its own threads",
                    limit_value=own,
                )
            )
        for key in (k for k in rate if k.startswith("alexcli_")):
            found.append(
                Figure(
                    "inference",
                    name=f"alexcli --amp {key.removeprefix('alexcli_')}, {t}",
                    value=rate[key],
                    limit=f"onnxruntime, {t}",
                    limit_value=ort,
                )
            )
    found.append(
        Figure(
            "inference",
            name=ours,
            value=value,
            limit="the training network's forward",
            limit_value=rate["reference"],
        )
    )
    return found, details


# --------------------------------------------------------------------------- the child


def measure(
    preset_name: str,
    *,
    batch_size: int,
    rounds: int,
    threads: int | None = None,
    amps: tuple[Amp, ...] = (),
    timeout: float = 1800.0,
) -> InferenceRates:
    """`inference_rates` in a child process whose OpenMP waits as eval's does."""
    args = {
        "preset": preset_name,
        "batch_size": batch_size,
        "rounds": rounds,
        "threads": threads,
        "amps": list(amps),
    }
    env = dict(os.environ)
    env.setdefault(*OPENMP_POLICY)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "alexcli.bench.infer", json.dumps(args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AlexcliError(f"the inference measurement ran past {timeout:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AlexcliError(f"the inference measurement failed: {last}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return InferenceRates(**got)


def _main(argv: list[str]) -> None:
    import logging
    import warnings

    args = json.loads(argv[0])
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"
    warnings.simplefilter("ignore")  # the exporters' deprecation notes
    got = inference_rates(
        preset(args["preset"]),
        batch_size=args["batch_size"],
        rounds=args["rounds"],
        threads=args["threads"],
        amps=tuple(args["amps"]),
    )
    print(json.dumps(dataclasses.asdict(got)))


if __name__ == "__main__":
    _main(sys.argv[1:])
