"""`alexcli prepare SOURCE DATA_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexcli.cli._app import app
from alexcli.cli._options import DataDir, Force, Jobs, Json, Seed
from alexcli.errors import NotBuiltYet


@app.command()
def prepare(
    source: Annotated[Path, typer.Argument(help="An ILSVRC-2012 tree or an image folder tree.")],
    data_dir: DataDir,
    classes: Annotated[
        int | None, typer.Option(min=1, help="A seeded choice of N classes (default: all).")
    ] = None,
    wnids: Annotated[
        Path | None, typer.Option(help="A file of class names (wnids), one per line.")
    ] = None,
    train_per_class: Annotated[
        int | None, typer.Option(min=1, help="At most N training images per class.")
    ] = None,
    val_per_class: Annotated[
        int | None, typer.Option(min=1, help="At most N validation images per class.")
    ] = None,
    size: Annotated[
        int | None, typer.Option(help="Shorter side, then the central crop (default 256).")
    ] = None,
    jobs: Jobs = None,
    seed: Seed = None,
    force: Force = False,
    json: Json = False,
) -> None:
    """Resize an image tree to SIZE×SIZE (shorter side, then the centre) into HDF5 shards.

    Example: `alexcli prepare /data/imagenet data/in100 --classes 100 --jobs 16`
    """
    raise NotBuiltYet("prepare", 3)
