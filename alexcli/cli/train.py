"""`alexcli train DATA_DIR RUN_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexcli.cli._app import app
from alexcli.cli._options import Amp, DataDir, Devices, Force, Preset, Seed, Sets
from alexcli.errors import NotBuiltYet


@app.command()
def train(
    data_dir: DataDir,
    run_dir: Annotated[Path, typer.Argument(help="Where checkpoints and metrics go.")],
    preset: Preset = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (paper: 90).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Batch (paper: 128).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (paper: 0.01).")] = None,
    crop: Annotated[int | None, typer.Option(min=1, help="Training crop (paper: 224).")] = None,
    devices: Devices = None,
    amp: Amp = None,
    seed: Seed = None,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Data loader processes (default: cores − 1).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from RUN_DIR/checkpoints/last.pt.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML file of configuration keys.")
    ] = None,
    set_: Sets = None,
    force: Force = False,
) -> None:
    """Train AlexNet on the shards with the paper's recipe.

    Example: `alexcli train data/in100 runs/in100 --devices cuda:0,cuda:1 --amp bf16`
    """
    raise NotBuiltYet("train", 6)
