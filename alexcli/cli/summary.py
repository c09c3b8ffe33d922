"""`alexcli summary`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from alexcli import config
from alexcli.cli._app import app
from alexcli.cli._console import out, print_json
from alexcli.cli._options import Devices, Json, Preset

if TYPE_CHECKING:
    from alexcli.stages.summary import Summary


@app.command()
def summary(
    preset: Preset = None,
    crop: Annotated[int | None, typer.Option(help="Input crop size.")] = None,
    classes: Annotated[int | None, typer.Option(help="Number of classes.")] = None,
    devices: Devices = None,
    json: Json = False,
) -> None:
    """The network layer by layer: tower, device, output shape, parameters, multiply-adds.

    The paper preset has 60,965,224 parameters and ~724 M multiply-adds per 224 image.

    Example: `alexcli summary --preset paper`
    """
    from alexcli.stages.summary import run_summary

    cfg = config.with_values(config.preset(preset or "paper"), crop=crop, devices=devices)
    if classes is not None:
        cfg = config.merge(cfg, {"model": {"num_classes": classes}}, "--classes")
    result = run_summary(cfg)
    if json:
        print_json(result.to_json())
    else:
        _render(result)


def _render(result: Summary) -> None:
    from rich import box
    from rich.table import Table

    title = (
        f"AlexNet, preset {result.preset}: {result.towers} tower(s), "
        f"{result.crop}×{result.crop} crops, {result.num_classes} classes"
    )
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for name in ("layer", "tower", "input", "output", "then"):
        table.add_column(name, no_wrap=True)
    table.add_column("parameters", justify="right")
    table.add_column("mult-adds", justify="right")
    for row in result.layers:
        table.add_row(
            row.name,
            f"{row.tower} {result.device_of(row)}",
            row.inputs,
            "×".join(map(str, row.output_shape)),
            row.then,
            f"{row.parameters:,}",
            f"{row.mult_adds / 1e6:,.1f}M",
        )
    table.add_section()
    total = (f"{result.parameters:,}", f"{result.mult_adds / 1e6:,.1f}M")
    table.add_row("total", "", "", "", "", *total)
    out.print(table)
    out.print(
        "[dim]tower: the tower and its device; input: the image, its own tower's maps, or both "
        "towers'; output: the layer's own maps (C×H×W) or neurons, per tower; mult-adds: the "
        "weights' multiply-accumulates per image.[/]"
    )
