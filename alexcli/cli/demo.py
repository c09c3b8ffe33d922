"""`alexcli demo [WORK_DIR]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexcli.cli._app import app
from alexcli.cli._console import reporting
from alexcli.cli._options import Force, Json
from alexcli.cli.run import Sets, render


@app.command()
def demo(
    work_dir: Annotated[
        Path, typer.Argument(help="Where the synthetic data and the run go.")
    ] = Path("alexcli-demo"),
    set_: Sets = None,
    archives: Annotated[
        bool,
        typer.Option(
            "--archives",
            help="Pack the generated tree as ILSVRC-2012 is downloaded (tars), which "
            "prepare reads in place.",
        ),
    ] = False,
    force: Force = False,
    json: Json = False,
) -> None:
    """The whole chain on embedded synthetic data, with the `small` preset, in minutes.

    Generates an ILSVRC-shaped tree (wnid folders, Kaggle-style validation labels, a few
    of ImageNet's awkward files), then runs the demo recipe shipped with alexcli
    (`alexcli run demo`): prepare → stats → train → eval (1 and 10 views) → viz-kernels
    → viz-curves. A second run is up to date.

    Example: `alexcli demo /tmp/demo --set synthetic.classes=5`
    """
    from alexcli.workflows.pipeline import run_demo

    with reporting(quiet=json) as progress:
        sets = [*(set_ or []), *(["synthetic.archives=true"] if archives else [])]
        result = run_demo(work_dir, sets, force=force, progress=progress)
    render(result, json)
