"""`alexcli eval RUN_DIR DATA_DIR`, `alexcli predict`, `alexcli neighbors`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import error, print_json, reporting
from alexcli.cli._console import out as console
from alexcli.cli._options import Amp, DataDir, Devices, Json, RunDir
from alexcli.config import EvalConfig, with_values

if TYPE_CHECKING:
    from alexcli.stages.evaluate import EvalReport, PredictReport
    from alexcli.stages.neighbors import NeighborsReport

Views = Annotated[
    int | None, typer.Option("--views", help="1 (centre crop) or 10 (the paper's test, default).")
]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Images per batch (default 128).")
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", min=0, help="Shard-reading processes (default: cores − 1)."),
]


@app.command("eval")
def eval_(
    run_dir: RunDir,
    data_dir: DataDir,
    views: Views = None,
    split: Annotated[str, typer.Option(help="The split to evaluate.")] = "val",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the report to this JSON file.")
    ] = None,
    devices: Devices = None,
    amp: Amp = None,
    batch_size: BatchSize = None,
    workers: Workers = None,
) -> None:
    """Top-1 and top-5 error on the validation shards, with the paper's 10-view test.

    Example: `alexcli eval runs/in100 data/in100 --views 10 --json eval.json`
    """
    from alexcli.core.atomic import check_writable, write_json
    from alexcli.stages.evaluate import evaluate

    cfg = with_values(
        EvalConfig(), views=views, split=split, devices=devices, amp=amp,
        batch_size=batch_size, workers=workers,
    )  # fmt: skip
    if json_file is not None:
        check_writable(json_file, "--json")  # now, not after hours of evaluating
    with reporting() as progress:
        report = evaluate(run_dir, data_dir, cfg, progress)
    if json_file is not None:
        write_json(json_file, report.to_json())
    _show_eval(report)
    if json_file is not None:
        console.print(f"wrote [bold]{json_file}[/]", highlight=False)


def _show_eval(r: EvalReport) -> None:
    table = Table("", "this run", title_justify="left", title=f"{r.split}, {r.views} view(s)")
    if r.paper:
        table.add_column("paper, 1 CNN (ILSVRC-2012 val)")
    for name, value in (("top-1 error", r.top1_error), ("top-5 error", r.top5_error)):
        key = "top1_error" if name.startswith("top-1") else "top5_error"
        paper = [_pct(r.paper[key])] if r.paper else []
        table.add_row(name, _pct(value), *paper)
    console.print(table)
    console.print(
        f"{r.images:,} images from {r.checkpoint} (epoch {r.epoch}) on "
        f"{', '.join(r.devices)}, amp {r.amp}: {r.images_per_s:,.1f} images/s",
        highlight=False,
    )
    scored = [c for c in r.per_class_top1 if c.top1_error is not None]
    if len(scored) > 1:
        worst = sorted(scored, key=lambda c: (-(c.top1_error or 0.0), c.index))[:5]
        hard = Table("class", "words", "images", "top-1 error", title="hardest classes")
        for c in worst:
            hard.add_row(c.name, c.words, str(c.images), _pct(c.top1_error or 0.0))
        console.print(hard)


@app.command()
def predict(
    run_dir: RunDir,
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    views: Views = None,
    json: Json = False,
    devices: Devices = None,
    amp: Amp = None,
    batch_size: BatchSize = None,
) -> None:
    """Top-5 classes, with their words and probabilities, for each image.

    Any image file: prepare's resize (shorter side to the run's size, central square),
    then the views. An unreadable image is one line; the others are still answered and
    the exit code is 2. Example: `alexcli predict runs/in100 cat.jpg dog.png`
    """
    from alexcli.stages.evaluate import predict as run

    cfg = with_values(EvalConfig(), views=views, devices=devices, amp=amp, batch_size=batch_size)
    with reporting(quiet=json) as progress:
        report = run(run_dir, images, cfg, progress)
    if json:
        print_json(dataclasses.asdict(report))
    else:
        _show_predictions(report)
    for p in report.failed:
        error(f"{p.path}: {p.error}")
    if report.failed:
        raise typer.Exit(2)


def _show_predictions(r: PredictReport) -> None:
    for p in r.predictions:
        if p.error is not None:
            continue
        table = Table("", "class", "words", "probability", title=str(p.path), title_justify="left")
        for rank, g in enumerate(p.top5, 1):
            table.add_row(str(rank), g.name, g.words, f"{100 * g.probability:.2f} %")
        console.print(table)


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
    split: Annotated[
        str, typer.Option(help="The split the queries come from: val (default) or train.")
    ] = "val",
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
    from alexcli.stages.neighbors import neighbors as run

    cfg = with_values(
        EvalConfig(), views=views, split=split, devices=devices, amp=amp,
        batch_size=batch_size, workers=workers,
    )  # fmt: skip
    with reporting(quiet=json) as progress:
        report = run(
            run_dir, data_dir, out, queries=queries, indices=index or (), k=k, cfg=cfg,
            progress=progress,
        )  # fmt: skip
    if json:
        print_json(dataclasses.asdict(report))
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


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"
