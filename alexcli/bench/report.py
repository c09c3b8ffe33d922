"""What `alexcli bench` reports: each measured rate beside its limit, as a ratio."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured rate beside the limit it is compared with, same run, same units."""

    stage: str
    name: str
    value: float
    limit: str
    limit_value: float
    target: float | None = None  # the ratio aimed for (docs/performance.md)
    unit: str = "images/s"
    cause: str = ""  # what holds it back, reported when the target is missed

    @property
    def ratio(self) -> float:
        return self.value / self.limit_value if self.limit_value > 0 else 0.0

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["value"], data["limit_value"] = round(self.value, 2), round(self.limit_value, 2)
        data.update(ratio=round(self.ratio, 4), met=self.met)
        if self.met is not False:
            del data["cause"]
        return data


@dataclass(frozen=True)
class BenchResult:
    figures: list[Figure]
    machine: dict[str, Any]
    settings: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "figures": [f.to_json() for f in self.figures],
            "machine": self.machine,
            "settings": self.settings,
            "details": self.details,
            "seconds": round(self.seconds, 1),
        }
