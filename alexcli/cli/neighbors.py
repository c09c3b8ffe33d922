"""`alexcli neighbors RUN_DIR DATA_DIR --out PNG`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import out as console
from alexcli.cli._console import print_json, reporting
from alexcli.cli._options import (
    Amp,
    BatchSize,
    DataDir,
    Devices,
    Json,
    RunDir,
    Split,
    Views,
    Workers,
)
from alexcli.config import EvalConfig, with_values

if TYPE_CHECKING:
    from alexcli.stages.neighbors import NeighborsReport


@app.command()
def neighbors(
    run_dir: RunDir,
    data_dir: DataDir,
    out: Annotated[Path, typer.Option("--out", help="The PNG to write.")],
    queries: Annotated[
        int | None,
        typer.Option(min=1, help="How many query images, spread through --split (5)."),
    ] = None,
    index: Annotated[
        list[int] | None,
        typer.Option("--index", min=0, help="A query image by its index in --split (repeatable)."),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours per query.")] = 6,
    split: Split = "val",
    views: Views = None,
    json: Json = False,
    devices: Devices = None,
    amp: Amp = None,
    batch_size: BatchSize = None,
    workers: Workers = None,
) -> None:
    """Figure 4: validation images beside the training images nearest in fc7 space.

    Each row: the query, its label and top-5 guesses (a bar per probability, red for
    the true class), then its `--k` nearest training images (framed green when of the
    query's class). Example: `alexcli neighbors runs/in100 data/in100 --out fig4.png`
    """
    from alexcli.stages.neighbors import run_neighbors

    cfg = with_values(
        EvalConfig(),
        views=views,
        split=split,
        devices=devices,
        amp=amp,
        batch_size=batch_size,
        workers=workers,
    )
    with reporting(quiet=json) as progress:
        report = run_neighbors(
            run_dir,
            data_dir,
            out,
            queries=queries,
            indices=index or (),
            k=k,
            cfg=cfg,
            progress=progress,
        )
    if json:
        print_json(report.to_json())
    else:
        _show_neighbors(report)


def _show_neighbors(r: NeighborsReport) -> None:
    table = Table("query", "label", "top-1 guess", f"{r.k} nearest: same class")
    for q in r.results:
        best = q.top5[0]
        same = sum(n.name == q.name for n in q.neighbours)
        guess = f"{best.words or best.name} ({100 * best.probability:.1f} %)"
        table.add_row(str(q.index), q.words or q.name, guess, f"{same}/{len(q.neighbours)}")
    console.print(table)
    console.print(
        f"wrote [bold]{r.out}[/] ({r.width}×{r.height} px): {len(r.results)} queries from "
        f"{r.split}, {r.k} nearest of {r.searched:,} training images in fc7 space "
        f"({r.features}-d), from {r.checkpoint}",
        highlight=False,
    )
