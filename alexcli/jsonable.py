"""JSON's own types from what alexcli's results and configurations hold — in a leaf
module any layer may import, so that configurations and results are written alike."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    """`value` with paths, tuples, numpy arrays and scalars made JSON's own types; a
    non-finite float becomes None (JSON has no NaN). numpy is recognised by its
    `tolist`, not imported: the configuration loads without it."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str | int | bool) and callable(getattr(value, "tolist", None)):
        return jsonable(value.tolist())  # a numpy array or scalar
    return value
