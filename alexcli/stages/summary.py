"""`alexcli summary`: the network layer by layer, with each tower's device.

Nothing is built or trained: the table comes from the configuration alone
(`core.model.layer_table`), the devices from `core.devices.resolve_devices`, so
a device that is named but absent fails here as it would in `train`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from alexcli.config import TrainConfig
from alexcli.core.nn.devices import resolve_devices
from alexcli.core.nn.model import LayerRow, layer_table, tower_devices
from alexcli.stages.results import Result


@dataclass(frozen=True)
class Summary(Result):
    """The layer table of one configuration, each row with its tower's device."""

    preset: str
    crop: int
    num_classes: int
    towers: int
    devices: tuple[str, ...]  # one per tower, tower 1 first
    layers: tuple[LayerRow, ...]

    @property
    def parameters(self) -> int:
        return sum(row.parameters for row in self.layers)

    @property
    def mult_adds(self) -> int:
        """Multiply-accumulates of the weights for one image (forward pass)."""
        return sum(row.mult_adds for row in self.layers)

    def device_of(self, row: LayerRow) -> str:
        return self.devices[row.tower - 1]

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-able data, with the totals."""
        layers = [{**asdict(row), "device": self.device_of(row)} for row in self.layers]
        for layer in layers:
            layer["output_shape"] = list(layer["output_shape"])
            layer["after_shape"] = list(layer["after_shape"])
        return {
            "preset": self.preset,
            "crop": self.crop,
            "num_classes": self.num_classes,
            "towers": self.towers,
            "devices": list(self.devices),
            "parameters": self.parameters,
            "mult_adds": self.mult_adds,
            "layers": layers,
        }


def run_summary(cfg: TrainConfig) -> Summary:
    """The layer table for `cfg.model` at `cfg.crop`, placed on `cfg.devices`."""
    model = cfg.model
    rows = layer_table(model)
    devices = tower_devices(model.towers, resolve_devices(cfg.devices))
    return Summary(
        preset=cfg.preset,
        crop=cfg.crop,
        num_classes=model.num_classes,
        towers=model.towers,
        devices=tuple(str(d) for d in devices),
        layers=tuple(rows),
    )
