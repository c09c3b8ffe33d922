"""`alexcli eval RUN_DIR DATA_DIR`, `alexcli predict`, `alexcli neighbors`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexcli.cli._app import app
from alexcli.cli._options import Amp, DataDir, Devices, Json, RunDir
from alexcli.errors import NotBuiltYet

Views = Annotated[
    int | None, typer.Option("--views", help="1 (centre crop) or 10 (the paper's test).")
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
) -> None:
    """Top-1 and top-5 error on the validation shards, with the paper's 10-view test.

    Example: `alexcli eval runs/in100 data/in100 --views 10 --json eval.json`
    """
    raise NotBuiltYet("eval", 7)


@app.command()
def predict(
    run_dir: RunDir,
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    views: Views = None,
    json: Json = False,
) -> None:
    """Top-5 classes, with their words and probabilities, for each image.

    Example: `alexcli predict runs/in100 cat.jpg dog.png`
    """
    raise NotBuiltYet("predict", 7)


@app.command()
def neighbors(
    run_dir: RunDir,
    data_dir: DataDir,
    out: Annotated[Path, typer.Option("--out", help="The PNG to write.")],
    queries: Annotated[int, typer.Option(min=1, help="How many validation images.")] = 5,
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours per query.")] = 6,
    json: Json = False,
) -> None:
    """Figure 4: validation images beside the training images nearest in fc7 space.

    Example: `alexcli neighbors runs/in100 data/in100 --out fig4.png`
    """
    raise NotBuiltYet("neighbors", 7)
