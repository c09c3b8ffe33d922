"""`alexcli import-weights torchvision|caffe FILE RUN_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from alexcli.cli._app import app
from alexcli.cli._console import out as console
from alexcli.cli._options import Json


@app.command("import-weights")
def import_weights(
    kind: Annotated[Literal["torchvision", "caffe"], typer.Argument(help="Whose weights.")],
    file: Annotated[
        Path, typer.Argument(help="torchvision: the state dict (.pth); caffe: the .caffemodel.")
    ],
    run_dir: Annotated[Path, typer.Argument(help="The run directory to write.")],
    classes: Annotated[
        Path | None,
        typer.Option(
            "--classes",
            help="What label i is: a prepared DATA_DIR of all the classes, or Kaggle's "
            "LOC_synset_mapping.txt (sorted by wnid). Default: classes named by index.",
        ),
    ] = None,
    mean: Annotated[
        Path | None,
        typer.Option(
            "--mean",
            help="caffe: the mean image, ilsvrc_2012_mean.binaryproto (default: Caffe's "
            "mean pixel everywhere).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a run RUN_DIR already holds.")
    ] = False,
    json: Json = False,
) -> None:
    """Weights trained elsewhere as a run that eval, predict, export and viz read.

    torchvision's `alexnet` state dict (no torchvision needed, nothing downloaded): one
    tower, no LRN, its per-channel normalisation folded in; published 56.52 % / 79.07 %
    top-1/top-5 accuracy. Caffe's bvlc_alexnet (read without Caffe): two towers, LRN,
    227 crops, BGR folded in, with `--mean ilsvrc_2012_mean.binaryproto`; published
    57.1 % / 80.2 %. Both on ILSVRC-2012 val with one centre crop, so
    `alexcli eval RUN_DIR DATA_DIR --views 1` on prepared ILSVRC-2012 checks the whole
    eval path against a published number.

    Example: `alexcli import-weights torchvision alexnet.pth runs/tv --classes data/in1k`
    """
    from alexcli.cli._console import print_json
    from alexcli.stages.import_weights import run_import_weights

    report = run_import_weights(kind, file, run_dir, classes, force, mean)
    if json:
        print_json(report.to_json())
        return
    named = f"classes from {report.classes_from}" if report.classes_from else "classes by index"
    console.print(
        f"wrote {report.checkpoint}: {report.kind}'s weights, {report.num_classes} {named}"
    )
    p = report.published
    console.print(
        f"published, ILSVRC-2012 val, 1 centre crop: {100 * p['top1_error']:.2f} % top-1 / "
        f"{100 * p['top5_error']:.2f} % top-5 error; check with "
        f"`alexcli eval {report.run} DATA_DIR --views 1`",
        highlight=False,
    )
