"""bench/infer.py: the inference figures, and what they say without onnxruntime. (With
it, tests/bench/test_bench.py runs the whole measurement in its child process.)"""

from __future__ import annotations

import sys

from alexcli.bench.infer import ONNX_MISSING, figures, inference_rates
from alexcli.config import preset


def test_without_onnxruntime_the_reference_is_measured_and_the_details_say_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    got = inference_rates(preset("small"), batch_size=2, rounds=2, threads=1)
    assert set(got.rates) == {"alexcli", "reference"}
    assert all(len(t) == 2 for t in got.times.values())
    assert got.threads == 1 and got.chosen == "set" and got.onnxruntime == ONNX_MISSING
    assert got.max_difference < 1e-5  # the inference path gives the training forward's values
    found, details = figures(got, "small")
    assert [(f.limit, f.target) for f in found] == [("the training network's forward", None)]
    assert details["onnxruntime"] == ONNX_MISSING and details["threads"] == 1
    assert details["images_per_s"]["alexcli"] == round(got.rates["alexcli"], 2)
