"""`alexcli prepare SOURCE DATA_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from alexcli.cli._app import app
from alexcli.cli._console import out, print_json, reporting
from alexcli.cli._options import Force, Jobs, Json, Seed

if TYPE_CHECKING:
    from rich.table import Table

    from alexcli.stages.prepare import PrepareResult


@app.command()
def prepare(
    source: Annotated[
        Path,
        typer.Argument(
            help="An ILSVRC-2012, Tiny ImageNet or image folder tree; or a prepared "
            "DATA_DIR, whose images are converted to --encoding without reading its source."
        ),
    ],
    data_dir: Annotated[Path, typer.Argument(help="Where the shards and manifest.json go.")],
    classes: Annotated[
        int | None, typer.Option(help="A seeded choice of N classes (default: all).")
    ] = None,
    wnids: Annotated[
        Path | None, typer.Option(help="A file of class names (wnids), one per line.")
    ] = None,
    train_per_class: Annotated[
        int | None, typer.Option(help="At most N training images per class.")
    ] = None,
    val_per_class: Annotated[
        int | None, typer.Option(help="At most N validation images per class.")
    ] = None,
    size: Annotated[
        int | None, typer.Option(help="Shorter side, then the central crop (default 256).")
    ] = None,
    resample: Annotated[
        Literal["bilinear", "bicubic", "lanczos"] | None,
        typer.Option(help="The resize filter (default: bilinear)."),
    ] = None,
    shard_size: Annotated[
        int | None, typer.Option(help="At most N images per HDF5 shard (default 1024).")
    ] = None,
    encoding: Annotated[
        Literal["raw", "jpeg"] | None,
        typer.Option(
            help="How the shards store each image: raw pixels (default) or a JPEG record "
            "that every reader decodes (~1/10 of the bytes)."
        ),
    ] = None,
    quality: Annotated[
        int | None, typer.Option(help="JPEG quality of --encoding jpeg, 1-100 (default 90).")
    ] = None,
    jobs: Jobs = None,
    seed: Seed = None,
    force: Force = False,
    verify: Annotated[
        bool,
        typer.Option(
            help="First check every shard's bytes against the manifest's sha256 (reads "
            "them all); write again the ones that differ."
        ),
    ] = False,
    json: Json = False,
) -> None:
    """Resize an image tree to SIZE×SIZE (shorter side, then the centre) into HDF5 shards,
    stored as raw pixels or as JPEG records (--encoding jpeg: ~1/10 of the bytes).

    Example: `alexcli prepare /data/imagenet data/in100 --classes 100 --jobs 16`
    """
    from alexcli.config import PrepareConfig, with_values
    from alexcli.stages.prepare import run_prepare

    config = with_values(
        PrepareConfig(),
        size=size,
        classes=classes,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        resample=resample,
        shard_size=shard_size,
        encoding=encoding,
        quality=quality,
        jobs=jobs,
        seed=seed,
    )
    with reporting(quiet=json) as progress:
        result = run_prepare(
            source,
            data_dir,
            config,
            wnids_file=wnids,
            force=force,
            verify=verify,
            progress=progress,
        )
    if json:
        print_json(result.to_json())
    else:
        out.print(_summary(result))


def _summary(r: PrepareResult) -> Table:
    from rich.table import Table

    table = Table(title="prepare" + (" (up to date)" if r.up_to_date else ""), show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("data dir", str(r.data_dir))
    table.add_row("layout", r.layout)
    table.add_row("encoding", r.encoding + (f", quality {r.quality}" if r.quality else ""))
    table.add_row("classes", f"{r.classes:,}")
    for split, n in r.images.items():
        table.add_row(f"{split} images", f"{n:,}")
    for reason, n in sorted(r.skipped.items()):
        table.add_row(f"skipped: {reason}", f"{n:,}")
    if not r.skipped:
        table.add_row("skipped", "none")
    for kind, n in r.converted.items():
        table.add_row(f"converted: {kind}", f"{n:,}")
    if not r.converted:
        table.add_row("converted", "none")
    if not r.up_to_date:
        reused = f" ({r.shards_reused} reused)" if r.shards_reused else ""
        table.add_row("shards written", f"{r.shards_written}{reused}")
        table.add_row("throughput", f"{r.images_per_s:,.0f} images/s ({r.seconds:.1f} s)")
    table.add_row("output size", f"{r.bytes / 1e6:,.1f} MB")
    return table
