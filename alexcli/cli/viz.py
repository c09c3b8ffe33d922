"""`alexcli viz-kernels` and `alexcli viz-curves`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import out as console
from alexcli.cli._console import print_json, reporting
from alexcli.cli._options import Json, RunDir

if TYPE_CHECKING:
    from alexcli.stages.viz import CurvesResult, KernelsResult


@app.command("viz-kernels")
def viz_kernels(
    run_dir: RunDir,
    out: Annotated[Path, typer.Option("--out", help="The PNG to write.")],
    normalize: Annotated[
        Literal["kernel", "global"],
        typer.Option(
            help="`kernel`: each kernel stretched to 0–255 on its own; "
            "`global`: one range for all (cuda-convnet's shownet).",
        ),
    ] = "kernel",
    columns: Annotated[
        int | None, typer.Option(min=1, help="Kernels per row (default 16).")
    ] = None,
    scale: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Enlargement, pixels per weight (default ~44/k)."),
    ] = None,
    json: Json = False,
) -> None:
    """Figure 3: conv1's kernels, tower 1 above tower 2, and how colourful each tower is.

    Example: `alexcli viz-kernels runs/in100 --out kernels.png`
    """
    from alexcli.stages.viz import run_viz_kernels

    with reporting(quiet=json) as progress:
        result = run_viz_kernels(
            run_dir, out, normalize=normalize, columns=columns, scale=scale, progress=progress
        )
    if json:
        print_json(result.to_json())
    else:
        _show_kernels(result)


def _show_kernels(r: KernelsResult) -> None:
    console.print(
        f"wrote [bold]{r.out}[/] ({r.width}×{r.height} px): {r.kernels} conv1 kernels "
        f"{r.kernel_size}×{r.kernel_size}, {r.towers} tower(s), {r.normalize} normalisation, "
        f"from {r.checkpoint} (epoch {r.epoch})",
        highlight=False,
    )
    table = Table("tower", "kernels", "colour, mean", "colour, median", title_justify="left")
    for t in r.colour:
        table.add_row(str(t.tower), str(t.kernels), f"{t.mean:.3f}", f"{t.median:.3f}")
    console.print(table)
    console.print(
        "[dim]colour: a kernel's share of weight energy off the grey axis R=G=B "
        "(0 grey, 1 pure colour; random weights ≈ 0.667). The paper finds tower 1's "
        "kernels largely colour-agnostic and tower 2's colour-specific.[/]"
    )


@app.command("viz-curves")
def viz_curves(
    run_dir: RunDir,
    out: Annotated[Path, typer.Option("--out", help="The picture to write: `.png` or `.svg`.")],
    json: Json = False,
) -> None:
    """Training loss and validation error per epoch, with the learning-rate drops.

    Works on a run still in progress. Example: `alexcli viz-curves runs/in100 --out curves.png`
    """
    from alexcli.stages.viz import run_viz_curves

    with reporting(quiet=json) as progress:
        result = run_viz_curves(run_dir, out, progress=progress)
    if json:
        print_json(result.to_json())
    else:
        _show_curves(result)


def _show_curves(r: CurvesResult) -> None:
    from alexcli.core.figures.curves import LABELS, SERIES, sparkline, summary_rows

    drops = {d.epoch for d in r.drops}
    rows = summary_rows(r.epochs, limit=16)
    table = Table("epoch", "lr", "train loss", "val top-1", "val top-5", "images/s")
    if len(rows) < len(r.epochs):
        table.caption = f"{len(rows)} of {len(r.epochs)} epochs: first, last, best, lr drops"
    for i in rows:
        e = r.epochs[i]
        lr = _num(e.lr) + (" ↓" if e.epoch in drops else "")
        cells = (e.train_loss, e.val_top1_error, e.val_top5_error)
        table.add_row(str(e.epoch), lr, *(_num(v) for v in cells), _num(e.images_per_s, ".0f"))
    console.print(table)
    for name in SERIES:
        values = [getattr(e, name) for e in r.epochs]
        known = [v for v in values if v is not None]
        if known:
            line = f"{LABELS[name]:>10}  {sparkline(values, width=48)}  "
            console.print(line + f"{known[0]:.4g} → {known[-1]:.4g}", highlight=False)
    where = ", ".join(str(d.epoch) for d in r.drops) or "none"
    console.print(f"wrote [bold]{r.out}[/] ({len(r.epochs)} epochs; lr drops at: {where})")


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "–" if value is None else format(value, fmt)
