"""`alexcli run RECIPE.toml`, and the table every recipe run ends with (`demo` too)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import out, print_json, reporting
from alexcli.cli._options import Force, Json

if TYPE_CHECKING:
    from alexcli.workflows.pipeline import PipelineResult

# A recipe's keys start with their table (`train.`, `prepare.`…), unlike `train --set`'s.
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any recipe key: `--set train.model.towers=1`."),
]


@app.command()
def run(
    recipe: Annotated[
        Path,
        typer.Argument(
            help="A recipe file, or the name of one shipped with alexcli: demo, paper, "
            "imagenet100, ablations."
        ),
    ],
    until: Annotated[
        Literal["prepare", "stats", "train", "eval", "viz-kernels", "viz-curves", "ablate"] | None,
        typer.Option(help="Stop after this stage."),
    ] = None,
    set_: Sets = None,
    force: Force = False,
    json: Json = False,
) -> None:
    """Run a recipe's stages in turn, skipping those that are up to date.

    Paths in the recipe are relative to the current directory.

    Example: `alexcli run imagenet100 --set source=/data/imagenet`
    """
    from alexcli.workflows.pipeline import run_recipe

    with reporting(quiet=json) as progress:
        result = run_recipe(recipe, set_ or [], until=until, force=force, progress=progress)
    render(result, json)


def render(r: PipelineResult, json: bool) -> None:
    """The results, the stages and the artefacts of a recipe run (or its JSON)."""
    if json:
        print_json(r.to_json())
        return
    if r.evals:
        table = Table("views", "top-1 error", "top-5 error", "images", title="Results")
        for views, e in sorted(r.evals.items()):
            table.add_row(
                str(views), _pct(e["top1_error"]), _pct(e["top5_error"]), str(e["images"])
            )
        table.add_row(
            "chance", _pct(r.chance_top1_error), _pct(r.chance_top5_error), "", style="dim"
        )
        out.print(table)
    stages = Table("stage", "", "seconds", "notes", title="Stages")
    artefacts = Table("artefact", "path", title="Artefacts")
    for s in r.steps:
        status = "up to date" if s.up_to_date else "ran"
        stages.add_row(s.stage, status, f"{s.seconds:.1f}", s.notes)
        for name, path in s.artefacts.items():
            artefacts.add_row(name, str(path))
    stages.add_row("total", "", f"{sum(s.seconds for s in r.steps):.1f}", "", style="bold")
    out.print(stages)
    out.print(artefacts)


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"
