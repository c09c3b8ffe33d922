"""`alexcli stats DATA_DIR`."""

from __future__ import annotations

from alexcli.cli._app import app
from alexcli.cli._options import DataDir, Force, Jobs, Json
from alexcli.errors import NotBuiltYet


@app.command()
def stats(data_dir: DataDir, jobs: Jobs = None, force: Force = False, json: Json = False) -> None:
    """Compute the training set's mean image and RGB principal components (stats.h5).

    Example: `alexcli stats data/in100`
    """
    raise NotBuiltYet("stats", 4)
