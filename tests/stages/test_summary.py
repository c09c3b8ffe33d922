"""`alexcli summary` and its stage: the layer table, the totals, table and JSON output."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from alexcli.config import PRESETS
from alexcli.core.nn.model import build_model
from alexcli.errors import DeviceError
from alexcli.stages.summary import run_summary


def test_paper_summary_totals():
    s = run_summary(dataclasses.replace(PRESETS["paper"], devices="cpu"))
    assert s.parameters == 60_965_224
    assert s.mult_adds == 724_406_816
    assert s.devices == ("cpu", "cpu") and s.towers == 2
    assert [r.name for r in s.layers[:4]] == ["conv1", "conv1", "conv2", "conv2"]
    assert [r.tower for r in s.layers[:4]] == [1, 2, 1, 2]


def test_table(cli):
    r = cli("summary", "--preset", "paper", "--devices", "cpu")
    assert r.code == 0, r.err
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        assert f" {name} " in r.out
    assert "60,965,224" in r.out and "724.4M" in r.out
    assert "48×55×55" in r.out and "128×27×27" in r.out and "192×13×13" in r.out
    assert "1 cpu" in r.out and "2 cpu" in r.out


def test_json_is_one_object_with_totals_and_layers(cli):
    r = cli("summary", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["parameters"] == 60_965_224 and data["mult_adds"] == 724_406_816
    assert len(data["layers"]) == 16
    assert sum(layer["parameters"] for layer in data["layers"]) == data["parameters"]
    first = data["layers"][0]
    assert first["name"] == "conv1" and first["tower"] == 1 and first["device"] == "cpu"
    assert first["output_shape"] == [48, 55, 55] and first["after_shape"] == [48, 27, 27]


def test_flags_change_the_network(cli):
    r = cli("summary", "--preset", "small", "--crop", "96", "--classes", "10", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert (data["preset"], data["crop"], data["num_classes"]) == ("small", 96, 10)
    assert [layer["output_shape"] for layer in data["layers"] if layer["name"] == "fc8"] == [
        [5],
        [5],
    ]
    cfg = dataclasses.replace(PRESETS["small"].model, num_classes=10)
    built = build_model(dataclasses.replace(cfg, crop=96))
    assert data["parameters"] == sum(p.numel() for p in built.parameters())
    assert (
        data["layers"][0]["output_shape"][1]
        == built.tower_list[0].conv1(torch.zeros(1, 3, 96, 96)).shape[-1]
    )


def test_two_devices_hold_one_tower_each_and_one_tower_cannot_split(cli):
    r = cli("summary", "--devices", "cpu,cpu", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["devices"] == ["cpu", "cpu"]
    cfg = dataclasses.replace(PRESETS["paper"], devices="cpu,cpu")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, towers=1))
    with pytest.raises(DeviceError, match="1 tower"):
        run_summary(cfg)


def test_bad_arguments_are_one_line(cli):
    r = cli("summary", "--preset", "huge")
    assert r.code == 2 and "'huge' is not one of 'paper', 'small'" in r.err
    r = cli("summary", "--crop", "40")
    assert r.code == 2 and "crop 40 is too small" in r.err and "at least 63" in r.err
    r = cli("summary", "--classes", "1")
    assert r.code == 2
