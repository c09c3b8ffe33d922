"""`alexcli ablate DATA_DIR OUT_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import out as console
from alexcli.cli._console import print_json, reporting
from alexcli.cli._options import Amp, DataDir, Devices, Force, Json, Preset, Sets, Workers
from alexcli.workflows.ablate.claims import CLAIMS as ALL_CLAIMS

if TYPE_CHECKING:
    from alexcli.workflows.ablate import StudyResult

CLAIMS = [c.name for c in ALL_CLAIMS]


@app.command()
def ablate(
    data_dir: DataDir,
    out_dir: Annotated[Path, typer.Argument(help="Where the study's runs and report go.")],
    preset: Preset = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per variant (paired).")] = 3,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs of every run (default: the preset's).")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", help=f"A claim to test (repeatable; default all): {', '.join(CLAIMS)}."
        ),
    ] = None,
    first_seed: Annotated[
        int,
        typer.Option(min=0, help="The first seed (another set: --first-seed 3 --seeds 3)."),
    ] = 0,
    figure1_epochs: Annotated[
        int | None,
        typer.Option(min=1, help="Epochs of Figure 1's runs (default: as --epochs)."),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="The relu claim's training-error threshold (Figure 1: 0.25)."
        ),
    ] = 0.25,
    devices: Devices = None,
    amp: Amp = None,
    workers: Workers = None,
    set_: Sets = None,
    force: Force = False,
    json: Json = False,
) -> None:
    """Test the paper's claims on your data: train the baseline and each variant that
    switches one of the paper's choices off, for each seed, then judge each claim.

    Example: `alexcli ablate data/demo study --preset small --seeds 3`

    Each run is an ordinary RUN_DIR under OUT_DIR/VARIANT/seed-K/ (eval, viz-curves
    and viz-kernels work on it), cached like `train`: a stopped study continues where
    it stopped, more --seeds train only the new ones. OUT_DIR gets claims.json,
    claims.md, figure1.png/svg (training error, ReLU vs tanh) and effects.png/svg.
    Each claim gets a direction verdict (paired t-test, Holm-adjusted across the
    study's claims: at most 5 % chance of any false one) and a size verdict (the
    paper's figure against the measured interval); docs/ablations.md says what each
    network is.
    """
    from alexcli.config import AblateConfig, train_config
    from alexcli.workflows.ablate import run_ablate

    base = train_config(
        preset_name=preset,
        sets=set_ or (),
        epochs=epochs,
        devices=devices,
        amp=amp,
        workers=workers,
    )
    study = AblateConfig(
        only=tuple(only or ()),
        seeds=seeds,
        first_seed=first_seed,
        threshold=threshold,
        figure1_epochs=figure1_epochs,
    )
    with reporting(quiet=json) as progress:
        result = run_ablate(data_dir, out_dir, base, study, force=force, progress=progress)
    if json:
        print_json(result.to_json())
    else:
        _show(result)


def _show(r: StudyResult) -> None:
    from alexcli.workflows.ablate.report import format_effect

    table = Table("claim", "primary measure", "effect", "p (Holm)", "direction", "size")
    for row in r.claims:
        for i, m in enumerate(x for x in row["measures"] if x["primary"]):
            size = "no figure" if row["size"] is None else row["size"]
            table.add_row(
                row["claim"] if i == 0 else "",
                f"{m['variant']}: {m['label']}",
                format_effect(m),
                f"{row['p_holm']:.2g}" if i == 0 else "",
                row["direction"] if i == 0 else "",
                size if i == 0 else "",
            )
    console.print(table)
    trained = "up to date" if r.up_to_date else f"{r.trained} run(s) trained"
    console.print(f"{trained}; report in {r.files['markdown']}", highlight=False)
