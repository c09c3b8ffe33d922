"""`alexcli stats DATA_DIR`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import out, print_json, reporting
from alexcli.cli._options import DataDir, Force, Jobs, Json
from alexcli.config import StatsConfig, with_values

if TYPE_CHECKING:
    from alexcli.stages.stats import StatsResult


@app.command()
def stats(data_dir: DataDir, jobs: Jobs = None, force: Force = False, json: Json = False) -> None:
    """Compute the training set's mean image and RGB principal components (stats.h5).

    One pass over the training shards (never the validation ones); writes
    DATA_DIR/stats.h5 (0–255 units) and the mean image as DATA_DIR/stats_mean.png.
    `--jobs` is how many shards are summed at once (threads).

    Example: `alexcli stats data/in100`
    """
    from alexcli.stages.stats import run_stats

    config = with_values(StatsConfig(), jobs=jobs)
    with reporting(quiet=json) as progress:
        result = run_stats(data_dir, config, force=force, progress=progress)
    if json:
        print_json(result.to_json())
    else:
        _render(result)


def _render(result: StatsResult) -> None:
    s = result.stats
    out.print(f"[bold]{s.images:,} training images[/], {s.size}×{s.size}, pixel values 0–255")
    rgb = Table(title="RGB mean and covariance")
    rgb.add_column("")
    for channel in "RGB":
        rgb.add_column(channel, justify="right")
    rgb.add_row("mean", *(f"{v:.2f}" for v in s.rgb_mean))
    for channel, row in zip("RGB", s.rgb_cov, strict=True):
        rgb.add_row(f"cov {channel}", *(f"{v:.1f}" for v in row))
    out.print(rgb)

    pca = Table(title="principal components of the RGB pixel values")
    pca.add_column("i", justify="right")
    pca.add_column("eigenvalue λ", justify="right")
    pca.add_column("√λ (std)", justify="right")
    pca.add_column("eigenvector (R, G, B)", justify="right")
    for i in range(3):
        vec = ", ".join(f"{v:+.4f}" for v in s.eigvec[:, i])
        pca.add_row(str(i + 1), f"{s.eigval[i]:.2f}", f"{s.eigstd[i]:.2f}", vec)
    out.print(pca)

    done = (
        "up to date"
        if result.up_to_date
        else f"computed in {result.seconds:.1f} s ({result.images_per_s:,.0f} images/s)"
    )
    out.print(f"{done}\n  {result.stats_path}\n  {result.mean_png}", highlight=False)
