"""Options shared by several commands, declared once (Typer `Annotated` aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

Force = Annotated[
    bool, typer.Option("--force", help="Redo the work even when the outputs are up to date.")
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Jobs = Annotated[
    int | None,
    typer.Option("--jobs", "-j", help="Parallel workers (default: all cores)."),
]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed (default 0).")]
# Fixed choices are Literal types: Typer lists them in --help, checks them, and shell
# completion offers them (tests/cli/test_cli.py keeps them equal to the config's).
PresetName = Literal["paper", "small"]
AmpName = Literal["off", "bf16", "fp16"]
Preset = Annotated[
    PresetName | None, typer.Option("--preset", help="Configuration preset (default: paper).")
]
Devices = Annotated[
    str | None,
    typer.Option(
        "--devices",
        envvar="ALEXCLI_DEVICES",
        help="`auto`, `cpu`, `cuda:0`, or `cuda:0,cuda:1` (two towers, model parallel).",
    ),
]
Amp = Annotated[AmpName | None, typer.Option("--amp", help="Mixed precision (default: off).")]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="Run the network through torch.compile (inductor), after a compile of a "
        "minute or more at the start: meant for GPUs; on a CPU it measured slower "
        "(docs/performance.md).",
    ),
]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any configuration key: `--set model.towers=1`."),
]
DataDir = Annotated[Path, typer.Argument(help="The directory `alexcli prepare` wrote.")]
RunDir = Annotated[
    Path, typer.Argument(help="A training run directory, or one checkpoint file (.pt).")
]
Views = Annotated[
    Literal[1, 10] | None,
    typer.Option("--views", help="1: the centre crop; 10: the paper's test (default)."),
]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", help="Images per batch (default 128).")
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        envvar="ALEXCLI_WORKERS",
        help="Shard-reading processes (default: cores − 1).",
    ),
]
Split = Annotated[Literal["val", "train"], typer.Option("--split", help="The split to read.")]
