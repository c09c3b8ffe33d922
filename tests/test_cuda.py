"""The CUDA paths end to end: train, resume, eval, predict and neighbors on a GPU, and a
checkpoint written on a GPU read where there is none.

Each device test runs twice: on the CPU (the same code, so the test itself is checked
wherever the suite runs) and on cuda:0 where there is one (marked `gpu`:
`pytest -m gpu`). On CUDA the convolutions run in TF32 and cuDNN may sum in any
order, so runs are compared to a tolerance, not bit for bit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from alexcli.core.nn import checkpoint
from alexcli.core.nn.checkpoint import load_checkpoint, rng_state, set_rng_state
from tests.train_helpers import TINY, make_data_dir

GPU = (pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
ONE = ["cpu", pytest.param("cuda:0", marks=GPU)]
AMPS = [
    ("cpu", "bf16"),
    pytest.param("cuda:0", "bf16", marks=GPU),
    pytest.param("cuda:0", "fp16", marks=GPU),
]
TOWERS = [  # the two towers on two devices, or twice the same one
    "cpu,cpu",
    pytest.param("cuda:0,cuda:0", marks=GPU),
    pytest.param("cuda:0,cuda:1", marks=(*GPU, TWO_GPUS)),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"), train=24, val=8)


def _train(cli, data, run, device, *sets, resume=False):
    args = [a for s in (*TINY, *sets) for a in ("--set", s)]
    extra = ["--resume"] if resume else []
    r = cli("train", data, run, "--preset", "small", *args, "--devices", device, *extra)
    assert r.code == 0, r.err
    return load_checkpoint(run / "checkpoints" / "last.pt")


def _close(a, b, rtol, atol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("device", ONE)
def test_a_resumed_run_follows_the_uninterrupted_one(cli, data, tmp_path, device):
    """Optimizer state, dropout's RNG (CUDA's too) and the schedule come back from last.pt."""
    straight = _train(cli, data, tmp_path / "straight", device, "epochs=2")
    _train(cli, data, tmp_path / "resumed", device, "epochs=1")
    resumed = _train(cli, data, tmp_path / "resumed", device, "epochs=2", resume=True)
    assert ("cuda" in straight.rank_rng[0]) == device.startswith("cuda")
    assert straight.optimizer["state"]  # momentum buffers, saved from the device
    _close(resumed.weights, straight.weights, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("device", "amp"), AMPS)
def test_mixed_precision_trains_and_resumes(cli, data, tmp_path, device, amp):
    """bf16 autocast; fp16 adds the GradScaler, whose state last.pt must carry."""
    straight = _train(cli, data, tmp_path / "straight", device, "epochs=2", f'amp="{amp}"')
    _train(cli, data, tmp_path / "resumed", device, "epochs=1", f'amp="{amp}"')
    resumed = _train(
        cli, data, tmp_path / "resumed", device, "epochs=2", f'amp="{amp}"', resume=True
    )
    assert all(np.isfinite(m["train_loss"]) for m in resumed.metrics)
    scaler = resumed.scaler
    assert (scaler is not None and scaler["scale"] > 0) == (amp == "fp16")
    _close(resumed.weights, straight.weights, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("devices", TOWERS)
def test_two_towers_train_and_evaluate_as_one_device_does(cli, data, tmp_path, devices):
    """Model parallel: the towers on two devices (or twice the same one), then the run
    evaluated with the whole network on the first device."""
    run = tmp_path / "run"
    ck = _train(cli, data, run, devices, "epochs=1")
    assert np.isfinite(ck.metrics[0]["train_loss"])
    first = devices.split(",")[0]
    answers = []
    for where in (devices, first):
        out = tmp_path / "e"
        r = cli("eval", run, data, "--devices", where, "--workers", "0", "--json-out", out)
        assert r.code == 0, r.err
        answers.append(json.loads((tmp_path / "e").read_text()))
    assert answers[0]["top1_error"] == answers[1]["top1_error"]


# --------------------------------------------------------------------------- the other readers


@pytest.mark.parametrize("device", ONE)
def test_eval_predict_and_neighbors_run_on_the_device(cli, data, tmp_path, device):
    """A run trained on `device`, read on it and on the CPU: the same answers, to the
    one image a TF32 rounding may tip."""
    run = tmp_path / "run"
    _train(cli, data, run, device, "epochs=1")
    reports = []
    for where in (device, "cpu"):
        out = tmp_path / f"eval-{where}.json"
        r = cli(
            "eval", run, data, "--devices", where, "--views", "10", "--workers", "1", "--json", out
        )
        assert r.code == 0, r.err
        reports.append(json.loads(out.read_text()))
    assert reports[0]["images"] == reports[1]["images"] == 32
    assert abs(reports[0]["top1_error"] - reports[1]["top1_error"]) <= 1 / 32 + 1e-9

    image = tmp_path / "x.png"
    Image.fromarray(np.full((50, 60, 3), 200, np.uint8)).save(image)
    r = cli("predict", run, image, "--devices", device, "--json")
    assert r.code == 0, r.err
    top5 = json.loads(r.out)["predictions"][0]["top5"]
    assert len(top5) == 4 and abs(sum(g["probability"] for g in top5) - 1) < 1e-4

    png = tmp_path / "fig4.png"
    r = cli(
        "neighbors",
        run,
        data,
        "--out",
        png,
        "--devices",
        device,
        "--queries",
        "2",
        "--k",
        "3",
        "--workers",
        "0",
    )
    assert r.code == 0, r.err
    assert png.stat().st_size > 0


# --------------------------------------------------------------------------- CPU-only checks


def test_a_checkpoint_written_on_a_gpu_resumes_and_evaluates_without_one(
    cli, data, tmp_path, monkeypatch
):
    """A GPU's checkpoint records its tensors' device (weights, momentum buffers) as
    cuda:0; a CPU-only machine must read it onto the CPU, not fail deserialising."""
    run = tmp_path / "run"
    _train(cli, data, run, "cpu", "epochs=1")
    for name in ("last.pt", "best.pt"):  # re-saved as a GPU would have written them
        path = run / "checkpoints" / name
        payload = torch.load(path, weights_only=True)
        with monkeypatch.context() as m:
            m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
            torch.save(payload, path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load does here
        torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    r = cli("eval", run, data, "--devices", "cpu", "--workers", "0")
    assert r.code == 0, r.err
    ck = _train(cli, data, run, "cpu", "epochs=2", resume=True)
    assert [m["epoch"] for m in ck.metrics] == [1, 2]


def test_a_cpu_run_saves_no_cuda_rng_state_after_something_initialised_cuda(
    cli, data, tmp_path, monkeypatch
):
    """CUDA initialised earlier in the process (a GPU test before this one, the API on a
    GPU) made a CPU run's checkpoint carry CUDA's generator states, and the CPU case of
    the resume test failed after the GPU cases: a run saves its own devices' states."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)]
    )
    assert "cuda" in rng_state()  # what the process as a whole would save
    ck = _train(cli, data, tmp_path / "run", "cpu", "epochs=1")
    assert "cuda" not in ck.rank_rng[0]


def test_cuda_rng_states_come_back_on_a_machine_with_fewer_gpus(monkeypatch):
    """Saved by a process that saw two GPUs, restored where one shows: cuda:0's state
    is restored (it was dropped whole before, and dropout's masks changed on resume)."""
    state = rng_state()
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in (7, 8)]
    restored: dict[int, torch.Tensor] = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.__setitem__(i, s))
    monkeypatch.setattr(
        torch.cuda, "set_rng_state_all", lambda states: restored.update(enumerate(states))
    )
    set_rng_state(state)
    assert list(restored) == [0] and torch.equal(restored[0], state["cuda"][0])
    assert checkpoint.rng_state()["torch"].equal(state["torch"])
