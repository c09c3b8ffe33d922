"""`alexcli export RUN_DIR OUT`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from alexcli.cli._app import app
from alexcli.cli._console import out as console
from alexcli.cli._console import print_json
from alexcli.cli._options import Json, RunDir


@app.command()
def export(
    run_dir: RunDir,
    out: Annotated[Path, typer.Argument(help="The file to write.")],
    format: Annotated[
        Literal["safetensors", "torchscript", "pt2", "onnx"] | None,
        typer.Option(
            "--format",
            help="`safetensors`, `torchscript`, `pt2` (torch.export) or `onnx` "
            "(default: from OUT's suffix: .safetensors, .ts, .pt2, .onnx).",
        ),
    ] = None,
    layout: Annotated[
        Literal["nchw", "nhwc"], typer.Option("--layout", help="The graph's input: uint8 crops.")
    ] = "nchw",
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Reopen the file outside alexcli and compare with `predict --views 1`.",
        ),
    ] = True,
    json: Json = False,
) -> None:
    """The trained network as a file other tools load, with its preprocessing inside.

    torchscript, pt2 and onnx take uint8 crops (n, 3, 224, 224) and return the class
    probabilities: the mean image's centre window, the input scale, both towers, LRN and
    softmax are in the graph. safetensors holds the weights, mean image and
    configuration, which `alexcli.load` reads back. ONNX: opset 18, needs
    `pip install 'alexcli[onnx]'`.

    Example: `alexcli export runs/paper alexnet.onnx`
    """
    from alexcli.stages.export import run_export

    report = run_export(run_dir, out, format, layout, check)
    if json:
        print_json(report.to_json())
        return
    console.print(f"wrote {report.out} ({report.format}, {report.bytes / 2**20:.1f} MiB)")
    console.print(f"  input:  {report.input} ({report.preprocess})")
    console.print(f"  output: {report.output}")
    if report.checked_with is not None:
        console.print(
            f"  checked: reopened with {report.checked_with}; "
            f"max |Δp| against predict {report.max_difference:.1e}"
        )
    elif check:
        console.print("  not checked: onnxruntime is not installed")
