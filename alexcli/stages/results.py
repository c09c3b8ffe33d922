"""What every stage returns: a frozen dataclass that is its own JSON (`--json`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from alexcli.jsonable import jsonable

__all__ = ["Result", "jsonable"]


class Result:
    """Mixed into each stage's result dataclass: `to_json()` is every field as JSON-able
    data (paths as strings, arrays as lists); a result adds what it computes."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]
        return data
