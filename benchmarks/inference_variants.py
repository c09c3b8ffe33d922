"""Inference, one lever at a time: where docs/performance.md's "Inference" tables come from.

    .venv/bin/python benchmarks/inference_variants.py [--preset paper] [--batch-size 128]
        [--threads 1] [--rounds 5] [--compile] [--json FILE]

Each row adds one change to the row above, from the training network's forward (NCHW,
the training LRN, `no_grad`, glibc's default heap) to what `Classifier` runs
(core/nn/inference.py); beside them onnxruntime on the exported graph and, with
`--compile`, `torch.compile` and `torch.jit.freeze` of the plain network. One call =
the centre view of a batch of stored-size images → probabilities, as
`predict --views 1` runs it. The rows take turns in each round (interleaved, so a
moment of other work on a shared machine lands on every row alike); rates are medians.
The default heap is timed in a first phase (the reference and onnxruntime), the rest in
a second with the heap kept (`keep_freed_memory`, as eval runs), the reference and
onnxruntime again in both so the phases can be put side by side. OpenMP's idle threads
sleep, as in eval (`machine.sleeping_openmp_threads`), unless OMP_WAIT_POLICY is set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from alexcli.core.machine import sleeping_openmp_threads

sleeping_openmp_threads()  # before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from alexcli.bench.infer import made_up_checkpoint  # noqa: E402
from alexcli.config import preset  # noqa: E402
from alexcli.core.data.transforms import Normalizer, center_offset, iter_views  # noqa: E402
from alexcli.core.machine import keep_freed_memory  # noqa: E402
from alexcli.core.nn import inference  # noqa: E402
from alexcli.core.nn.checkpoint import Checkpoint  # noqa: E402
from alexcli.core.nn.loops import view_probabilities  # noqa: E402
from alexcli.core.nn.lrn import torch_lrn  # noqa: E402
from alexcli.core.nn.model import FCS, AlexNet  # noqa: E402

Run = Callable[[], object]


def network(ckpt: Checkpoint, *, lrn=None, cl=False, fc=False, relu=False):
    """The checkpoint's network with the chosen levers of `inference.for_inference`, and
    one it does not take (ReLU in place: measured, not worth a module's hooks seeing a
    layer's output overwritten)."""
    model = ckpt.build_model(lrn=lrn)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    for tower in model.tower_list:
        for name in FCS if fc else ():
            setattr(tower, name, inference.OneDnnLinear.of(getattr(tower, name)))
        if relu:
            tower.act = F.relu_
    return model


def classify(model: AlexNet, normalize: Normalizer, images: torch.Tensor, crop: int, cl: bool):
    def run() -> torch.Tensor:
        with torch.no_grad():
            return view_probabilities(model, images, normalize, crop, 1, channels_last=cl)

    return run


def ladder(ckpt: Checkpoint, images: torch.Tensor) -> dict[str, Run]:
    crop = ckpt.config.crop
    normalize = Normalizer.create(ckpt.mean, ckpt.eigval, ckpt.eigvec, torch.device("cpu"))
    lrn = inference.inference_lrn
    steps = [
        ("the training network's forward (NCHW, training LRN)", {}, False),
        ("+ channels-last", {"cl": True}, True),
        ("+ inference LRN", {"cl": True, "lrn": lrn}, True),
        ("+ fc6-fc8 through oneDNN = alexcli", {"cl": True, "lrn": lrn, "fc": True}, True),
        ("(+ ReLU in place: not taken)", {"cl": True, "lrn": lrn, "fc": True, "relu": True}, True),
    ]
    return {
        label: classify(network(ckpt, **levers), normalize, images, crop, cl)
        for label, levers, cl in steps
    }


def onnxruntime_run(ckpt: Checkpoint, images: torch.Tensor, threads: int, tmp: Path) -> Run:
    import onnxruntime

    from alexcli.core.nn import export

    path = tmp / "net.onnx"
    export.write(ckpt, path, "onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    crop, c = ckpt.config.crop, center_offset(ckpt.size, ckpt.config.crop)
    crops = np.ascontiguousarray(images[:, c : c + crop, c : c + crop].permute(0, 3, 1, 2).numpy())
    return lambda: session.run(None, {"images": crops})


def compiled_runs(ckpt: Checkpoint, images: torch.Tensor) -> tuple[dict[str, Run], dict]:
    """torch.compile (inductor) and torch.jit.freeze + optimize_for_inference of the
    plain network (PyTorch's LRN: plain operators both can see into), channels-last."""
    crop = ckpt.config.crop
    normalize = Normalizer.create(ckpt.mean, ckpt.eigval, ckpt.eigvec, torch.device("cpu"))
    model = network(ckpt, lrn=torch_lrn, cl=True)
    runs, first = {}, {}
    compiled = torch.compile(model)
    runs["torch.compile (inductor), plain network"] = classify(
        compiled, normalize, images, crop, True
    )
    x = next(iter_views(normalize, images, crop, 1, channels_last=True))
    with torch.no_grad():
        start = time.perf_counter()
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))
        first["torch.jit.freeze"] = time.perf_counter() - start
    runs["torch.jit.freeze + optimize_for_inference"] = classify(
        frozen, normalize, images, crop, True
    )
    return runs, first


def interleaved(runs: dict[str, Run], rounds: int) -> dict[str, float]:
    """Median seconds per call of each run, the runs taking turns in each round."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    size = cfg.crop + cfg.crop // 7
    ckpt = made_up_checkpoint(cfg, size)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (args.batch_size, size, size, 3), dtype=torch.uint8, generator=g)
    runs = ladder(ckpt, images)
    reference = next(iter(runs))
    with tempfile.TemporaryDirectory() as tmp:
        ort = onnxruntime_run(ckpt, images, args.threads, Path(tmp))
    first: dict[str, float] = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()
        first[name] = time.perf_counter() - start
    result: dict[str, object] = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
    }
    default_heap = interleaved({reference: runs[reference], "onnxruntime": ort}, args.rounds)
    everything = dict(runs) | {"onnxruntime": ort}
    if args.compile:
        compiled, compile_first = compiled_runs(ckpt, images)
        for name, run in compiled.items():
            start = time.perf_counter()
            run()
            first[name] = time.perf_counter() - start + compile_first.get(name.split(" ")[0], 0)
        everything |= compiled
    with keep_freed_memory():
        for run in everything.values():
            run()  # the heap grows to what a call needs
        kept = interleaved(everything, args.rounds)
    n = args.batch_size
    result["default_heap_images_per_s"] = {k: n / v for k, v in default_heap.items()}
    result["kept_heap_images_per_s"] = {k: n / v for k, v in kept.items()}
    result["first_call_seconds"] = first
    for phase in ("default_heap_images_per_s", "kept_heap_images_per_s"):
        print(phase)
        rates = result[phase]
        assert isinstance(rates, dict)
        for name, rate in rates.items():
            print(f"  {name:55s} {rate:8.1f}   ÷ onnxruntime {rate / rates['onnxruntime']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
