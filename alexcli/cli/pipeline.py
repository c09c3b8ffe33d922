"""`alexcli demo` and `alexcli run RECIPE.toml`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexcli.cli._app import app
from alexcli.cli._options import Force, Sets
from alexcli.errors import NotBuiltYet


@app.command()
def demo(
    work_dir: Annotated[
        Path, typer.Argument(help="Where the synthetic data and the run go.")
    ] = Path("alexcli-demo"),
    force: Force = False,
) -> None:
    """The whole chain on embedded synthetic data, with the `small` preset, in minutes.

    Example: `alexcli demo /tmp/demo`
    """
    raise NotBuiltYet("demo", 9)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe, e.g. pipelines/paper.toml.")],
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
    set_: Sets = None,
    force: Force = False,
) -> None:
    """Run a recipe's stages in turn, skipping those that are up to date.

    Example: `alexcli run pipelines/imagenet100.toml --set source=/data/imagenet`
    """
    raise NotBuiltYet("run", 9)
