"""The Typer application every command module registers on."""

from __future__ import annotations

from typing import Annotated

import typer

from alexcli import __version__
from alexcli.cli._console import configure_logging

app = typer.Typer(
    name="alexcli",
    help=(
        "AlexNet (Krizhevsky, Sutskever & Hinton, 2012), end to end: prepare an image "
        "tree into HDF5 shards, compute the mean image and RGB PCA, train the two-tower "
        "network with the paper's recipe, evaluate with the 10-view test, look at what "
        "it learned.\n\nStart with `alexcli demo`."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"alexcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when something fails.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Also print debug lines.")
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only warnings, errors and results.")
    ] = False,
) -> None:
    # --debug is read by `main()` before parsing (the error boundary sits outside Typer).
    configure_logging(-1 if quiet else verbose)
