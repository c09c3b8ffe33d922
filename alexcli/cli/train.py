"""`alexcli train DATA_DIR RUN_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import out as console
from alexcli.cli._console import print_json, reporting
from alexcli.cli._options import (
    Amp,
    Compile,
    DataDir,
    Devices,
    Force,
    Json,
    Preset,
    Seed,
    Sets,
    Workers,
)

if TYPE_CHECKING:
    from alexcli.stages.train import TrainResult


@app.command()
def train(
    data_dir: DataDir,
    run_dir: Annotated[Path, typer.Argument(help="Where checkpoints and metrics go.")],
    preset: Preset = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (paper: 90).")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Global batch, all processes (paper: 128). Without --lr, the lr follows it "
            "linearly from the preset's, with a warm-up when it rises (Goyal et al. 2017; "
            "`--set lr_scaling=none` keeps the preset's lr).",
        ),
    ] = None,
    batch_per_device: Annotated[
        int | None,
        typer.Option(
            "--batch-per-device",
            min=1,
            help="Each process's batch under torchrun instead: the global batch is it × "
            "the processes (the lr follows as with --batch-size).",
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Learning rate (paper: 0.01; default: the preset's, scaled to the batch)."
        ),
    ] = None,
    crop: Annotated[int | None, typer.Option(help="Training crop (paper: 224).")] = None,
    devices: Devices = None,
    amp: Amp = None,
    seed: Seed = None,
    workers: Workers = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from RUN_DIR/checkpoints/last.pt; on an empty RUN_DIR, start "
            "(a job script can always pass it). After a torchrun restart, implied.",
        ),
    ] = False,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            "--checkpoint-every",
            min=0,
            help="Also save last.pt every N steps (default 5000; 0: only at epoch ends and "
            "every checkpoint_minutes), bounding what a restart loses.",
        ),
    ] = None,
    stop_if_flat: Annotated[
        bool,
        typer.Option(
            "--stop-if-flat",
            help="Stop at an epoch that learned nothing (loss at ln C, validation at "
            "chance), after saving it; without it, a warning.",
        ),
    ] = False,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard",
            help="Also write TensorBoard event files to RUN_DIR/tensorboard: loss and lr "
            "per step, validation errors, images/s and conv1's kernels per epoch "
            "(pip install 'alexcli[tensorboard]').",
        ),
    ] = False,
    compile_: Compile = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML file of configuration keys.")
    ] = None,
    set_: Sets = None,
    force: Force = False,
    json: Json = False,
) -> None:
    """Train AlexNet on the shards with the paper's recipe.

    Example: `alexcli train data/in100 runs/in100 --devices cuda:0,cuda:1 --amp bf16`

    Layering: `--preset` < `--config FILE.toml` < `--set key=value` < the flags
    above. Under `torchrun` (e.g. `torchrun --nproc-per-node 8 -m alexcli train …`)
    each process trains data parallel on its share of the global batch.

    `--preset paper` is the paper's network and recipe; docs/paper.md lists where
    alexcli departs from it (conv1 padding 2 at 224, PyTorch's momentum form, decay on
    biases, the automatic plateau, the units of the colour noise, the lr scaled with a
    batch other than 128). `--preset small`
    departs from its recipe too: He init (fc8 the paper's), inputs scaled to unit
    variance, lr 0.02 at batch 32 with gradients clipped to norm 2 and lr × gradient
    norm at most 0.08, lr drops at fractions of the run's steps, dropout 0.25
    (docs/presets.md says why).
    """
    from alexcli.stages.train import resolve_config, run_train

    with reporting(quiet=json) as progress:
        cfg = resolve_config(
            run_dir,
            resume=resume,
            preset_name=preset,
            config_file=config,
            sets=set_ or (),
            epochs=epochs,
            batch_size=batch_size,
            batch_per_device=batch_per_device,
            lr=lr,
            crop=crop,
            devices=devices,
            amp=amp,
            seed=seed,
            workers=workers,
            checkpoint_every=checkpoint_every,
            stop_if_flat=stop_if_flat or None,
            tensorboard=tensorboard or None,
            compile=compile_ or None,
        )
        result = run_train(data_dir, run_dir, cfg, resume=resume, force=force, progress=progress)
    if result.rank != 0:
        return
    if json:
        print_json(result.to_json())
    else:
        _show(result)


def _show(r: TrainResult) -> None:
    if r.up_to_date:
        console.print(f"{r.run_dir}: up to date ({len(r.metrics)} epochs)", highlight=False)
    table = Table("epoch", "train loss", "val top-1", "val top-5", "lr", "images/s")
    for m in r.metrics[-10:]:
        table.add_row(
            str(m["epoch"]),
            f"{m['train_loss']:.4f}",
            f"{m['val_top1_error']:.2%}",
            f"{m['val_top5_error']:.2%}",
            f"{m['lr']:.3g}",
            f"{m['images_per_s']:.0f}",
        )
    console.print(table)
    best = f"{r.best_top1_error:.2%}" if r.best_top1_error is not None else "—"
    console.print(
        f"best val top-1 error {best}; checkpoints in {r.run_dir / 'checkpoints'}",
        highlight=False,
    )
