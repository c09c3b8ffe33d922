"""`alexcli summary`."""

from __future__ import annotations

from typing import Annotated

import typer

from alexcli.cli._app import app
from alexcli.cli._options import Devices, Json, Preset
from alexcli.errors import NotBuiltYet


@app.command()
def summary(
    preset: Preset = None,
    crop: Annotated[int | None, typer.Option(min=1, help="Input crop size.")] = None,
    classes: Annotated[int | None, typer.Option(min=2, help="Number of classes.")] = None,
    devices: Devices = None,
    json: Json = False,
) -> None:
    """The network layer by layer: tower, device, output shape, parameters, multiply-adds.

    Example: `alexcli summary --preset paper`
    """
    raise NotBuiltYet("summary", 5)
