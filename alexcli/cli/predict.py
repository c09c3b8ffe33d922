"""`alexcli predict RUN_DIR IMAGE...`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import error, print_json, reporting
from alexcli.cli._console import out as console
from alexcli.cli._options import Amp, BatchSize, Devices, Json, RunDir, Views
from alexcli.config import EvalConfig, with_values

if TYPE_CHECKING:
    from alexcli.stages.predict import PredictReport


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
    from alexcli.stages.predict import run_predict

    cfg = with_values(EvalConfig(), views=views, devices=devices, amp=amp, batch_size=batch_size)
    with reporting(quiet=json) as progress:
        report = run_predict(run_dir, images, cfg, progress)
    if json:
        print_json(report.to_json())
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
