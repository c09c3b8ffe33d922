"""`alexcli demo` and `alexcli run RECIPE.toml`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import out, print_json, reporting
from alexcli.cli._options import Force, Json

if TYPE_CHECKING:
    from alexcli.stages.pipeline import PipelineResult

# A recipe's keys start with their table (`train.`, `prepare.`…), unlike `train --set`'s.
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any recipe key: `--set train.model.towers=1`."),
]


@app.command()
def demo(
    work_dir: Annotated[
        Path, typer.Argument(help="Where the synthetic data and the run go.")
    ] = Path("alexcli-demo"),
    set_: Sets = None,
    force: Force = False,
    json: Json = False,
) -> None:
    """The whole chain on embedded synthetic data, with the `small` preset, in minutes.

    Generates an ILSVRC-shaped tree (wnid folders, Kaggle-style validation labels, a few
    of ImageNet's awkward files), then runs pipelines/demo.toml: prepare → stats → train →
    eval (1 and 10 views) → viz-kernels → viz-curves. A second run is up to date.

    Example: `alexcli demo /tmp/demo --set synthetic.classes=5`
    """
    from alexcli.stages.pipeline import demo as run_demo

    with reporting(quiet=json) as progress:
        result = run_demo(work_dir, set_ or [], force=force, progress=progress)
    _render(result, json)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe, e.g. pipelines/paper.toml.")],
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
    set_: Sets = None,
    force: Force = False,
    json: Json = False,
) -> None:
    """Run a recipe's stages in turn, skipping those that are up to date.

    Paths in the recipe are relative to the current directory.

    Example: `alexcli run pipelines/imagenet100.toml --set source=/data/imagenet`
    """
    from alexcli.stages.pipeline import run_recipe_file

    with reporting(quiet=json) as progress:
        result = run_recipe_file(recipe, set_ or [], until=until, force=force, progress=progress)
    _render(result, json)


def _render(r: PipelineResult, json: bool) -> None:
    if json:
        print_json(_as_json(r))
        return
    if r.evals:
        table = Table("views", "top-1 error", "top-5 error", "images", title="Results")
        for views, e in sorted(r.evals.items()):
            table.add_row(
                str(views), _pct(e["top1_error"]), _pct(e["top5_error"]), str(e["images"])
            )
        table.add_row("chance", _pct(r.chance_top1_error), _pct(r.chance_top5_error), "",
                      style="dim")  # fmt: skip
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


def _as_json(r: PipelineResult) -> dict[str, object]:
    return {
        "classes": r.classes,
        "chance": {"top1_error": r.chance_top1_error, "top5_error": r.chance_top5_error},
        "evals": {str(v): e for v, e in r.evals.items()},
        "steps": [
            {
                "stage": s.stage,
                "up_to_date": s.up_to_date,
                "seconds": s.seconds,
                "artefacts": {k: str(p) for k, p in s.artefacts.items()},
                "notes": s.notes,
            }
            for s in r.steps
        ],
    }


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"
