"""The training step, one lever at a time: where docs/performance.md's table comes from.

    .venv/bin/python benchmarks/step_variants.py [--preset paper] [--batch-size 128]
        [--threads 1] [--seconds 5] [--json FILE]

Each row adds one change to the row above, from plain eager PyTorch (NCHW, PyTorch's
LocalResponseNorm, foreach SGD, glibc's default malloc) to what `alexcli train` now
does; fp32 and bf16 autocast. Then the LRN alone, forward + backward, at the paper's
conv1 and conv2 maps: PyTorch's layer, autograd through the band-matrix formula (our
implementation before issue 10), and ours. Rates are the best step of those timed for
`--seconds` (other work on a shared machine only slows a step down).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from alexcli.bench.step import StepBench, StepSetup
from alexcli.config import preset
from alexcli.core.nn.lrn import local_response_norm

LADDER = [
    ("plain eager (PyTorch LRN, foreach SGD)", StepSetup(plain_lrn=True)),
    ("+ our LRN (written-out backward)", StepSetup()),
    ("+ fused SGD", StepSetup(fused=True)),
    ("+ kept heap (no page faults)", StepSetup(fused=True, keep_heap=True)),
    ("+ channels-last = tuned", StepSetup(fused=True, keep_heap=True, channels_last=True)),
]


def step_ladder(name: str, batch: int, seconds: float) -> list[dict[str, object]]:
    cfg = preset(name)
    rows = []
    for label, setup in LADDER:
        row: dict[str, object] = {"setup": label}
        for amp in ("off", "bf16"):
            if amp == "bf16" and setup.plain_lrn:  # PyTorch's LRN has no bf16 CPU kernel
                setup = StepSetup()  # autocast alone, with our LRN
                row["setup"] = label + " (bf16 row: autocast alone)"
            bench = StepBench(
                cfg.model,
                batch_size=batch,
                devices=[torch.device("cpu")],
                setup=StepSetup(**{**setup.__dict__, "amp": amp}),
                input_scale=cfg.input_scale,
            )
            row["fp32" if amp == "off" else "bf16"] = round(bench.rate(seconds).per_s, 2)
            del bench
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def lrn_by_autograd(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float
) -> torch.Tensor:
    """The implementation before issue 10: the band product, differentiated by autograd."""
    c = x.shape[1]
    offset = torch.arange(c)[None, :] - torch.arange(c)[:, None]
    band = ((offset >= -(size // 2)) & (offset <= (size - 1) // 2)).to(x.dtype)
    sums = torch.matmul(band, (x * x).flatten(2)).view_as(x)
    return x * (k + alpha * sums).pow(-beta)


def lrn_table(batch: int) -> list[dict[str, object]]:
    impls = {
        "pytorch_layer": lambda x: torch.nn.functional.local_response_norm(x, 5, 5e-4, 0.75, 2.0),
        "band_autograd": lambda x: lrn_by_autograd(x, 5, 1e-4, 0.75, 2.0),
        "ours": lambda x: local_response_norm(x, 5, 1e-4, 0.75, 2.0),
    }
    rows = []
    for maps in ((48, 55), (128, 27)):
        for dtype in (torch.float32, torch.bfloat16):
            for layout in (torch.contiguous_format, torch.channels_last):
                x0 = (torch.rand(batch, maps[0], maps[1], maps[1]) * 50).to(dtype)
                x0 = x0.contiguous(memory_format=layout)
                g = torch.randn_like(x0)
                row: dict[str, object] = {
                    "maps": f"{maps[0]}×{maps[1]}²",
                    "dtype": str(dtype)[6:],
                    "layout": "channels-last" if layout is torch.channels_last else "NCHW",
                }
                for name, fn in impls.items():
                    if name == "pytorch_layer" and dtype is torch.bfloat16:
                        continue  # no bf16 kernel for its avg_pool3d on the CPU
                    row[name + "_ms"] = round(
                        1e3 * _best(lambda f=fn, x=x0, d=g: _fwd_bwd(f, x, d)), 1
                    )
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def _fwd_bwd(fn, x0: torch.Tensor, g: torch.Tensor) -> None:
    x = x0.clone().requires_grad_()
    fn(x).backward(g)


def _best(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "steps": step_ladder(args.preset, args.batch_size, args.seconds),
        "lrn_32": lrn_table(32),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
