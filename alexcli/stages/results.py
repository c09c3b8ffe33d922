"""What every stage returns: a frozen dataclass that is its own JSON (`--json`)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np


class Result:
    """Mixed into each stage's result dataclass: `to_json()` is every field as JSON-able
    data (paths as strings, arrays as lists); a result adds what it computes."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]
        return data


def jsonable(value: Any) -> Any:
    """`value` with paths, arrays, numpy scalars and tuples made JSON's own types; a
    non-finite float becomes None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
