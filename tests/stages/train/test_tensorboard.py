"""`train --tensorboard`: event files a TensorBoard reader parses — read here as
TensorBoard reads them (TFRecord framing with masked CRC-32C checks, written out in this
file, then the Event protobuf) — whose numbers are metrics.jsonl's."""

from __future__ import annotations

import importlib.util
import io
import json
import struct
import sys

import numpy as np
import pytest
from PIL import Image

from tests.train_helpers import TINY, make_data_dir

# tensorboardX (`alexcli[tensorboard]`) is an optional extra, which a GPU machine's image
# may lack: the tests that read its events skip without it, the refusal's test runs.
NEEDS_TENSORBOARDX = pytest.mark.skipif(
    importlib.util.find_spec("tensorboardX") is None, reason="needs alexcli[tensorboard]"
)

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def _crc32c(data: bytes) -> int:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path):
    """TFRecords: u64 length, u32 masked crc(length), data, u32 masked crc(data)."""
    from tensorboardX.proto.event_pb2 import Event

    raw = path.read_bytes()
    out, at = [], 0
    while at < len(raw):
        header = raw[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", raw[at + 8 : at + 12])
        assert crc == _masked(header), f"{path}: length crc"
        data = raw[at + 12 : at + 12 + length]
        (crc,) = struct.unpack("<I", raw[at + 12 + length : at + 16 + length])
        assert crc == _masked(data), f"{path}: data crc"
        out.append(Event.FromString(data))
        at += 16 + length
    return out


def scalars(events):
    """{tag: [(step, value)]}, and the images {tag: [(step, PNG bytes)]}."""
    values, images = {}, {}
    for e in events:
        for v in e.summary.value:
            if v.HasField("image"):
                images.setdefault(v.tag, []).append((e.step, v.image.encoded_image_string))
            else:
                values.setdefault(v.tag, []).append((e.step, v.simple_value))
    return values, images


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"), train=24, val=8)


def _train(cli, data, run, *extra):
    sets = [a for s in TINY for a in ("--set", s)]
    return cli("train", data, run, "--preset", "small", *sets, "--tensorboard", *extra)


@NEEDS_TENSORBOARDX
def test_events_hold_every_step_and_epoch_of_metrics_jsonl(cli, data, tmp_path):
    run = tmp_path / "run"
    r = _train(cli, data, run, "--epochs", "2")
    assert r.code == 0, r.err
    files = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    values, images = scalars(read_events(files[0]))
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = 96 // 16  # 4 classes × 24 images, batch 16
    assert [s for s, _ in values["train/loss"]] == list(range(1, 2 * steps + 1))
    losses = np.array([v for _, v in values["train/loss"]]).reshape(2, steps)
    lrs = np.array([v for _, v in values["train/lr"]]).reshape(2, steps)
    for e, m in enumerate(metrics):
        # the epoch's loss is the mean of its steps' losses (float32 in the events)
        assert losses[e].mean() == pytest.approx(m["train_loss"], rel=1e-5)
        assert lrs[e, -1] == pytest.approx(m["lr"], rel=1e-6)
        for tag, key in [
            ("val/top1_error", "val_top1_error"),
            ("val/top5_error", "val_top5_error"),
            ("train/images_per_s", "images_per_s"),
        ]:
            assert values[tag][e] == (steps * (e + 1), pytest.approx(m[key], rel=1e-6))
    (step, png), _ = images["conv1/kernels"]
    assert step == steps
    grid = Image.open(io.BytesIO(png))
    assert grid.mode == "RGB" and grid.width > grid.height > 0


@NEEDS_TENSORBOARDX
def test_a_resumed_run_continues_its_steps(cli, data, tmp_path):
    run = tmp_path / "run"
    assert _train(cli, data, run, "--epochs", "1").code == 0
    r = cli("train", data, run, "--resume", "--set", "epochs=2", "--tensorboard")
    assert r.code == 0, r.err
    files = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2
    first, _ = scalars(read_events(files[0]))
    events = read_events(files[1])
    second, _ = scalars(events)
    assert [s for s, _ in first["train/loss"]] == list(range(1, 7))
    assert [s for s, _ in second["train/loss"]] == list(range(7, 13))
    assert [s for s, _ in second["val/top1_error"]] == [12]
    # TensorBoard hides the first file's events at or after the second's START step:
    # it must be the first new step, or epoch 1's values (at step 6) would vanish
    (start,) = [e.step for e in events if e.HasField("session_log")]
    assert start == 7 and first["val/top1_error"][0][0] == 6


def test_without_tensorboardx_the_flag_is_refused_before_training(cli, data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    r = _train(cli, data, tmp_path / "run", "--epochs", "1")
    assert r.code == 2 and "alexcli[tensorboard]" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
