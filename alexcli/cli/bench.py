"""`alexcli bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexcli.cli._app import app
from alexcli.cli._options import Json, Preset
from alexcli.errors import NotBuiltYet


@app.command()
def bench(
    data_dir: Annotated[
        Path | None, typer.Argument(help="Shards to measure (default: made-up data).")
    ] = None,
    preset: Preset = None,
    json: Json = False,
) -> None:
    """Each stage's throughput beside this machine's limit, measured in the same run.

    Example: `alexcli bench data/in100 --json > bench.json`
    """
    raise NotBuiltYet("bench", 10)
