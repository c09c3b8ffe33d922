"""Files an earlier alexcli wrote, read by this one: the checkpoint in tests/data/tiny_run
(made by its make.py, before the network's layers became modules) loads, gives the same
logits, and exports to files that hold the same; the state dict keeps its keys, shapes
and order; `alexcli summary --json` prints the same table."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from alexcli.config import TrainConfig, from_dict
from alexcli.core.nn import export
from alexcli.core.nn.checkpoint import load_checkpoint
from alexcli.core.nn.model import build_model
from alexcli.core.nn.optim import make_optimizer
from alexcli.stages.summary import run_summary
from tests.data.tiny_run.make import VARIANTS, digest, inputs

HERE = Path(__file__).resolve().parents[2] / "data" / "tiny_run"
EXPECTED = json.loads((HERE / "expected.json").read_text())
TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}


def close(got: torch.Tensor | np.ndarray, key: list[list[float]]) -> None:
    got = torch.as_tensor(np.asarray(got))
    torch.testing.assert_close(got, torch.tensor(key, dtype=got.dtype), **TOLERANCE)


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(HERE / "tiny.pt")


def test_the_state_dict_keeps_its_keys_shapes_and_order(checkpoint):
    model = checkpoint.build_model()
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == EXPECTED["state_dict"]
    # The optimizer's state is saved by the parameters' position, not their names.
    assert [n for n, _ in model.named_parameters()] == EXPECTED["parameters"]


def test_the_old_checkpoint_gives_the_same_logits_and_features(checkpoint):
    model = checkpoint.build_model()
    x, _ = inputs()
    with torch.no_grad():
        close(model(x), EXPECTED["logits"])
        close(model.features(x), EXPECTED["features"])
        close(model.place([torch.device("cpu")] * 2)(x), EXPECTED["logits"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_seeded_variant_is_built_and_runs_as_before(checkpoint, variant):
    """The same seed makes the same weights (the layers are made in the same order) and
    the same logits, for each ablation's wiring."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(checkpoint.config.model, **VARIANTS[variant]))
    x, _ = inputs()
    with torch.no_grad():
        close(model.eval()(x), EXPECTED["variants"][variant])


def test_the_old_optimizer_state_resumes_on_its_own_parameters(checkpoint):
    model = checkpoint.build_model().train()
    optimizer = make_optimizer(model, 0.01, 0.9, 5e-4)
    optimizer.load_state_dict(checkpoint.optimizer)
    for p in model.parameters():
        assert optimizer.state[p]["momentum_buffer"].shape == p.shape


def known(config: dict, old: dict) -> dict:
    """`config` with only the keys `old` has, at every level (`model` gained keys too)."""
    return {k: known(config[k], v) if isinstance(v, dict) else config[k] for k, v in old.items()}


def test_exports_hold_what_they_held(checkpoint, tmp_path):
    _, crops = inputs()
    with torch.no_grad():
        close(export.deployable(checkpoint)(torch.from_numpy(crops)), EXPECTED["deployable"])

    path = tmp_path / "tiny.safetensors"
    export.write(checkpoint, path, "safetensors")
    from safetensors import safe_open

    want = EXPECTED["safetensors"]
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert {k: digest(f.get_tensor(k)) for k in f.keys()} == want["sha256"]  # noqa: SIM118
    config = json.loads(meta.pop("config"))
    old_config = json.loads(want["metadata"].pop("config"))
    assert {k: meta[k] for k in want["metadata"]} == want["metadata"]
    assert known(config, old_config) == old_config  # keys added later aside

    path = tmp_path / "tiny.ts"
    export.write(checkpoint, path, "torchscript")
    module = torch.jit.load(str(path))
    assert [n for n, _ in module.named_parameters()] == EXPECTED["torchscript"]["parameters"]
    assert [n for n, _ in module.named_buffers()] == EXPECTED["torchscript"]["buffers"]
    close(export.reload(path, "torchscript")(crops), EXPECTED["torchscript"]["probabilities"])


def test_graph_exports_hold_what_they_held(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    _, crops = inputs()
    path = tmp_path / "tiny.pt2"
    export.write(checkpoint, path, "pt2")
    with open(path, "rb") as f:
        assert list(torch.export.load(f).state_dict) == EXPECTED["pt2"]["state_dict"]
    close(export.reload(path, "pt2")(crops), EXPECTED["pt2"]["probabilities"])

    path = tmp_path / "tiny.onnx"
    export.write(checkpoint, path, "onnx")
    proto = onnx.load(str(path))
    names = sorted(i.name for i in proto.graph.initializer if not i.name.startswith("val_"))
    assert names == EXPECTED["onnx"]["initializers"]
    assert Counter(n.op_type for n in proto.graph.node) == Counter(EXPECTED["onnx"]["ops"])
    close(export.reload(path, "onnx")(crops), EXPECTED["onnx"]["probabilities"])


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_summary_json_is_unchanged(preset):
    stored = json.loads((HERE / f"summary_{preset}.json").read_text())
    cfg = from_dict(TrainConfig, stored["config"], where="summary")
    assert run_summary(cfg).to_json() == stored["summary"]
