"""Checkpoints: round trip, weights-only loading, and one-line errors for bad files."""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import pytest
import torch

from alexcli.config import TrainConfig
from alexcli.core.nn.checkpoint import (
    FORMAT,
    Checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from alexcli.core.nn.model import build_model
from alexcli.errors import FormatError, UserError
from tests.tiny import TINY_MODEL

MODEL = dataclasses.replace(TINY_MODEL, num_classes=3)
CFG = TrainConfig(preset="small", model=MODEL, lr=0.05)


def _payload(model=None, **extra):
    model = model or build_model(MODEL)
    fields = {
        "config": CFG,
        "classes": [{"name": f"n{i}", "words": f"class {i}"} for i in range(3)],
        "size": 40,
        "mean": np.full((40, 40, 3), 100.0),
        "eigval": np.array([30.0, 2.0, 1.0]),
        "eigvec": np.eye(3),
        "weights": model.state_dict(),
        "epoch": 2,
        "step": 0,
        "rank_rng": [rng_state()],
        "best_top1": 0.25,
        "metrics": [{"epoch": 1, "val_top1_error": 0.5}, {"epoch": 2, "val_top1_error": 0.25}],
    }
    return Checkpoint(**{**fields, **extra})


def test_round_trip_gives_back_config_data_and_the_same_network(tmp_path):
    torch.manual_seed(0)
    model = build_model(MODEL).eval()
    save_checkpoint(tmp_path / "c.pt", _payload(model))
    ck = load_checkpoint(tmp_path / "c.pt")
    assert ck.config == CFG and ck.epoch == 2 and ck.step == 0 and ck.best_top1 == 0.25
    assert ck.classes[2] == {"name": "n2", "words": "class 2"} and ck.size == 40
    assert ck.mean.dtype == np.float32 and ck.mean.shape == (40, 40, 3)
    np.testing.assert_array_equal(ck.eigval, [30, 2, 1])
    assert [m["epoch"] for m in ck.metrics] == [1, 2]
    rebuilt = ck.build_model()
    assert not rebuilt.training
    x = torch.randn(2, 3, MODEL.crop, MODEL.crop)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_the_file_loads_with_plain_weights_only_torch_load(tmp_path):
    save_checkpoint(tmp_path / "c.pt", _payload())
    data = torch.load(tmp_path / "c.pt", weights_only=True)
    assert data["format"] == FORMAT and data["version"] == 1


def test_a_run_dir_resolves_to_best_then_last(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="no checkpoints"):
        resolve_checkpoint(tmp_path)
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", _payload())
    assert resolve_checkpoint(tmp_path).name == "last.pt"
    save_checkpoint(tmp_path / "checkpoints" / "best.pt", _payload())
    assert resolve_checkpoint(tmp_path).name == "best.pt"
    assert load_checkpoint(tmp_path).path.name == "best.pt"
    with pytest.raises(UserError, match="no such"):
        resolve_checkpoint(tmp_path / "missing")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = str(tmp_path / "pwned")
    torch.save({"format": FORMAT, "version": 1, "x": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(FormatError, match="pickled") as e:
        load_checkpoint(tmp_path / "evil.pt")
    assert not os.path.exists(marker)
    assert "alexcli train" in e.value.hint and "--force" in e.value.hint


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p, good: p.write_bytes(good[: len(good) // 2]), "truncated"),
        (lambda p, good: p.write_bytes(b"not a checkpoint at all"), "truncated or foreign"),
        (lambda p, good: torch.save({"weights": torch.ones(2)}, p), "not an alexcli"),
        (lambda p, good: torch.save({"format": FORMAT, "version": 99}, p), "version 99"),
        (lambda p, good: torch.save({"format": FORMAT, "version": 1}, p), "lacks"),
    ],
)
def test_bad_files_are_one_line_format_errors(tmp_path, make, match):
    save_checkpoint(tmp_path / "good.pt", _payload())
    bad = tmp_path / "bad.pt"
    make(bad, (tmp_path / "good.pt").read_bytes())
    with pytest.raises(FormatError, match=match) as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value) and "--force" in e.value.hint


def test_weights_that_do_not_fit_the_saved_network_name_what_differs(tmp_path):
    five_classes = build_model(dataclasses.replace(MODEL, num_classes=5))
    save_checkpoint(tmp_path / "x.pt", _payload(five_classes))
    with pytest.raises(FormatError, match=r"size mismatch for towers\.0\.fc8\.weight") as e:
        load_checkpoint(tmp_path / "x.pt").build_model()
    assert "\n" not in str(e.value) and "--force" in e.value.hint


def test_rng_states_round_trip_every_generator():
    random.random(), np.random.rand(), np.random.randn(), torch.rand(1)
    state = rng_state()
    first = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    set_rng_state(state)
    second = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert first[:3] == second[:3] and torch.equal(first[3], second[3])
    assert isinstance(state["numpy"]["keys"], torch.Tensor)  # tensors: weights_only-safe


def test_saving_is_atomic_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload())
    before = path.read_bytes()

    def dies(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(OSError):
        save_checkpoint(path, _payload(epoch=3))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
