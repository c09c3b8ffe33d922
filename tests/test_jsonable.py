"""Results and configurations become JSON's own types, alike."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from alexcli.config import TrainConfig, to_dict
from alexcli.jsonable import jsonable


def test_paths_tuples_numpy_and_non_finite_numbers_become_json():
    value = {
        "path": Path("runs/a"),
        "shape": (3, 4),
        "array": np.arange(3, dtype=np.int64),
        "scalars": [np.float32(0.5), np.int16(7), np.bool_(True)],
        "nan": float("nan"),
        "inf": np.float64(math.inf),
        1: "a key that is not a string",
    }
    out = jsonable(value)
    assert out == {
        "path": "runs/a",
        "shape": [3, 4],
        "array": [0, 1, 2],
        "scalars": [0.5, 7, True],
        "nan": None,
        "inf": None,
        "1": "a key that is not a string",
    }
    assert [type(v) for v in out["scalars"]] == [float, int, bool]
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_a_configuration_is_written_as_json_with_lists_for_tuples():
    data = to_dict(TrainConfig())
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert isinstance(data["model"]["conv_channels"], list)
