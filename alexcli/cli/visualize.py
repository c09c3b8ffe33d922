"""`alexcli viz-kernels` and `alexcli viz-curves`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexcli.cli._app import app
from alexcli.cli._options import RunDir
from alexcli.errors import NotBuiltYet


@app.command("viz-kernels")
def viz_kernels(
    run_dir: RunDir,
    out: Annotated[Path, typer.Option("--out", help="The PNG to write.")],
) -> None:
    """Figure 3: conv1's kernels, tower 1 above tower 2.

    Example: `alexcli viz-kernels runs/in100 --out kernels.png`
    """
    raise NotBuiltYet("viz-kernels", 8)


@app.command("viz-curves")
def viz_curves(
    run_dir: RunDir,
    out: Annotated[Path, typer.Option("--out", help="The picture file to write.")],
) -> None:
    """Training loss and validation error per epoch, with the learning-rate drops.

    Example: `alexcli viz-curves runs/in100 --out curves.png`
    """
    raise NotBuiltYet("viz-curves", 8)
