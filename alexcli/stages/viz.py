"""The `viz-kernels` and `viz-curves` stages: look at what a run learned.

`viz_kernels` reads conv1's weights from a checkpoint (RUN_DIR → its best.pt, else
last.pt; or a checkpoint file) and writes the Figure-3 grid (core/figures/kernel_grid.py);
`viz_curves` reads RUN_DIR/metrics.jsonl and writes the learning curves as PNG or
SVG (core/figures/curves.py). Both are cheap and pure functions of one input file, so they
keep no manifest and always redraw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexcli.core.atomic import check_writable
from alexcli.core.figures.canvas import write_figure
from alexcli.core.figures.curves import Epoch, LrDrop, epochs_of, lr_drops, plot
from alexcli.core.figures.kernel_grid import Normalize, colour_fraction, kernel_grid
from alexcli.core.figures.png import write_png
from alexcli.core.progress import SILENT, Progress
from alexcli.core.rundir import METRICS, read_metrics
from alexcli.errors import UserError
from alexcli.stages.classifier import check_run
from alexcli.stages.results import Result

PICTURE_SUFFIXES = (".png", ".svg")


@dataclass(frozen=True)
class TowerColour(Result):
    """How colourful one tower's conv1 kernels are (core/figures/kernel_grid.colour_fraction)."""

    tower: int  # 1-based, as the paper's GPU 1 and GPU 2
    kernels: int
    mean: float  # mean colour fraction: 0 grey … 1 colour; random weights ≈ 2/3
    median: float


@dataclass(frozen=True)
class KernelsResult(Result):
    out: Path
    checkpoint: Path
    epoch: int  # epochs the checkpoint had completed
    kernels: int
    kernel_size: int
    towers: int
    width: int
    height: int
    normalize: str
    colour: list[TowerColour]


@dataclass(frozen=True)
class CurvesResult(Result):
    out: Path
    metrics: Path
    epochs: list[Epoch]
    drops: list[LrDrop]
    partial_line: bool  # the run was writing its last line when we read it


def run_viz_kernels(
    run: Path,
    out: Path,
    *,
    normalize: Normalize = "kernel",
    columns: int | None = None,
    scale: int | None = None,
    progress: Progress = SILENT,
) -> KernelsResult:
    """Write `run`'s conv1 kernels as a PNG grid, tower 1 above tower 2 (Figure 3)."""
    from alexcli.core.nn.checkpoint import load_checkpoint  # torch: only when needed

    _check_out(out, (".png",))
    check_run(run)
    ckpt = load_checkpoint(run)
    progress.log(f"reading conv1 from {ckpt.source}")
    towers = ckpt.config.model.towers
    weights = ckpt.build_model().conv1_weight().float().numpy()
    image, layout = kernel_grid(weights, towers, normalize=normalize, columns=columns, scale=scale)
    write_png(out, image)
    per_tower = colour_fraction(weights).reshape(towers, layout.per_tower)
    colour = [
        TowerColour(t + 1, len(f), float(f.mean()), float(np.median(f)))
        for t, f in enumerate(per_tower)
    ]
    return KernelsResult(
        out=out,
        checkpoint=ckpt.source,
        epoch=ckpt.epoch,
        kernels=layout.kernels,
        kernel_size=layout.kernel_size,
        towers=towers,
        width=layout.shape[1],
        height=layout.shape[0],
        normalize=normalize,
        colour=colour,
    )


def run_viz_curves(run: Path, out: Path, *, progress: Progress = SILENT) -> CurvesResult:
    """Write `run`'s loss and error curves (PNG or SVG, by `out`'s suffix)."""
    _check_out(out, PICTURE_SUFFIXES)
    path = find_metrics(run)
    metrics = read_metrics(path)
    epochs = epochs_of(metrics.records)
    if not epochs:
        raise UserError(
            f"{path}: no finished epoch yet",
            hint="a line is written at the end of each epoch; try again after the first",
        )
    if metrics.partial_line:
        progress.log(f"{path}: skipped an unfinished last line (the run is still writing)")
    write_figure(plot(epochs), out)
    return CurvesResult(out, path, epochs, lr_drops(epochs), metrics.partial_line)


def find_metrics(run: Path) -> Path:
    """RUN_DIR/metrics.jsonl; also accepts the file itself or a checkpoint inside a run
    (RUN_DIR/checkpoints/*.pt), since a checkpoint may stand for its run (docs/cli.md)."""
    run = Path(run)
    if not run.exists():
        raise UserError(
            f"{run}: no such run directory or file",
            hint="give the RUN_DIR that `alexcli train DATA_DIR RUN_DIR` wrote",
        )
    if run.is_file() and run.suffix == ".jsonl":
        return run
    candidates = [run] if run.is_dir() else [run.parent, run.parent.parent]
    for directory in candidates:
        if (directory / METRICS).is_file():
            return directory / METRICS
    raise UserError(
        f"{run}: no metrics.jsonl here",
        hint="`alexcli train` writes RUN_DIR/metrics.jsonl at the end of each epoch",
    )


def _check_out(out: Path, suffixes: tuple[str, ...]) -> None:
    if Path(out).suffix.lower() not in suffixes:
        raise UserError(
            f"--out {out}: expected a file name ending in {' or '.join(suffixes)}",
            hint="the picture format is chosen by the suffix",
        )
    if Path(out).is_dir():
        raise UserError(f"--out {out}: is a directory", hint="give a file name")
    check_writable(out, "--out")
