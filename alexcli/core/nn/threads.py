"""How many compute threads a CPU run uses: chosen by timing, recorded with the run.

On a dedicated machine the step runs fastest on every core; beside another busy
process, more threads than free cores spin-wait in OpenMP and can be several times
slower (docs/training.md "Throughput on this CPU"). Neither rule of thumb serves both, so
`train` times a few forward and backward passes of its own network, at the run's
crop and a small batch, on each candidate count in turn — the cores left to it after
the loader workers, and all its cores — and keeps the faster, a larger count only when it is at
least 5 % faster. `cudnn.benchmark` chooses kernels the same way.

The count changes the arithmetic (OpenMP splits the sums differently), so the run
records it (in every checkpoint) and a resumed run uses the recorded count: exact
resume stays exact.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alexcli.config import ModelConfig
from alexcli.core.nn.model import build_model

MARGIN = 1.05  # more threads must be this much faster to be chosen
PROBE_BATCH = 16


@dataclass(frozen=True)
class ThreadChoice:
    """The compute threads a run uses and why."""

    threads: int
    how: str  # "probed", "resumed", "set", "OMP_NUM_THREADS", "one candidate"
    rates: dict[int, float]  # images/s of each probed count

    def describe(self) -> str:
        if not self.rates:
            return f"{self.threads} compute thread(s) ({self.how})"
        timed = ", ".join(f"{t}: {r:.1f}" for t, r in sorted(self.rates.items()))
        return f"{self.threads} compute thread(s) (images/s of a probe step at {timed})"


def choose_threads(
    cfg: ModelConfig,
    channels_last: bool,
    given: int | None,
    recorded: int | None,
    cores: int,
    workers: int,
) -> ThreadChoice:
    """A CPU run's compute threads: as `given` (`--set threads=N`), as OMP_NUM_THREADS set
    them, as a resumed run `recorded`, or the faster of the candidates for its `cores`."""
    if given:
        return ThreadChoice(given, "set", {})
    if "OMP_NUM_THREADS" in os.environ:
        return ThreadChoice(torch.get_num_threads(), "OMP_NUM_THREADS", {})
    if recorded:
        return ThreadChoice(recorded, "as the run recorded", {})
    counts = candidates(cores, workers)
    if len(counts) == 1:
        return ThreadChoice(counts[0], "the only choice", {})
    rates = probe(cfg, counts, channels_last=channels_last)
    return ThreadChoice(fastest(rates), "probed", rates)


def candidates(cores: int, workers: int) -> list[int]:
    """The counts worth timing: the cores the loader workers leave, and all of them."""
    return sorted({max(cores - workers, 1), max(cores, 1)})


def probe(
    cfg: ModelConfig,
    counts: Sequence[int],
    *,
    channels_last: bool,
    batch: int = PROBE_BATCH,
    repeats: int = 3,
) -> dict[int, float]:
    """Images/s of forward + backward passes of a fresh copy of the network at each
    thread count: one untimed pass each, then `repeats` rounds that take the counts in
    turn, keeping each count's best pass — so a moment of other work on the machine
    slows one pass of one count, not every pass of it. torch's RNG is left as it was,
    so the run's own initialisation and dropout are unchanged."""
    before = torch.get_num_threads()
    best = dict.fromkeys(counts, float("inf"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(cfg)
        x = torch.randn(batch, 3, cfg.crop, cfg.crop)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, cfg.num_classes, (batch,))

        def one_pass(count: int) -> float:
            torch.set_num_threads(count)
            start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            return time.perf_counter() - start

        try:
            for count in counts:
                one_pass(count)  # untimed: first-call allocation and kernel choice
            for _ in range(repeats):
                for count in counts:
                    best[count] = min(best[count], one_pass(count))
        finally:
            torch.set_num_threads(before)
    return {count: batch / seconds for count, seconds in best.items()}


def fastest(rates: dict[int, float]) -> int:
    """The fewest threads within `MARGIN` of the best rate."""
    top = max(rates.values())
    return min(t for t, r in rates.items() if r * MARGIN >= top)
