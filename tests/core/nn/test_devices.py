"""core/devices.py: `--devices` strings, and one-line errors for devices that are not there."""

from __future__ import annotations

import pytest
import torch

from alexcli.core.nn.devices import resolve_devices
from alexcli.errors import DeviceError

CPU = torch.device("cpu")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that reports two CUDA devices (only names are made, nothing runs)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("cpu", [CPU]), ("CPU", [CPU]), (" cpu ", [CPU]), ("cpu,cpu", [CPU, CPU]), ("cpu:0", [CPU])],
)
def test_cpu_specs(spec, expected):
    assert resolve_devices(spec) == expected


def test_auto_is_the_cpu_without_cuda(no_cuda):
    assert resolve_devices("auto") == [CPU]


def test_auto_is_the_first_gpu_with_cuda(two_gpus):
    assert resolve_devices("auto") == [torch.device("cuda", 0)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cuda", ["cuda:0"]),
        ("cuda:1", ["cuda:1"]),
        ("cuda:0,cuda:1", ["cuda:0", "cuda:1"]),
        ("cuda:1, cuda:0", ["cuda:1", "cuda:0"]),
        ("cuda:0,cpu", ["cuda:0", "cpu"]),
    ],
)
def test_cuda_specs(two_gpus, spec, expected):
    assert [str(d) for d in resolve_devices(spec)] == expected


def test_naming_a_gpu_turns_on_cudnns_autotuner(two_gpus):
    """The shapes of a run are fixed: cuDNN times each convolution's algorithms once."""
    resolve_devices("cpu")
    assert not torch.backends.cudnn.benchmark
    resolve_devices("cuda:1")
    assert torch.backends.cudnn.benchmark


def test_auto_on_a_gpu_turns_on_the_autotuner_too(two_gpus):
    """eval, predict, neighbors and `alexcli.load` default to `auto`: it took a path that
    returned before the autotuner was switched on."""
    resolve_devices("auto")
    assert torch.backends.cudnn.benchmark


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("cuda:0", "no CUDA"),
        ("cuda", "no CUDA"),
        ("cuda:0,cuda:1", "no CUDA"),
        ("cpu,cuda:0", "no CUDA"),
    ],
)
def test_cuda_named_without_cuda(no_cuda, spec, words):
    with pytest.raises(DeviceError, match=words) as e:
        resolve_devices(spec)
    assert "\n" not in e.value.message and "cpu" in (e.value.hint or "")


@pytest.mark.parametrize("spec", ["cuda:2", "cuda:0,cuda:2", "cuda:7"])
def test_a_gpu_index_beyond_the_machine(two_gpus, spec):
    with pytest.raises(DeviceError, match="2 CUDA device") as e:
        resolve_devices(spec)
    assert "cuda:0…cuda:1" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("gpu", "unknown device 'gpu'"),
        ("cuda:x", "unknown device"),
        ("", "empty"),
        ("cpu,", "empty"),
        ("cpu:1", "one CPU"),
        ("cpu,cpu,cpu", "two towers"),
    ],
)
def test_malformed_specs(spec, words):
    with pytest.raises(DeviceError, match=words) as e:
        resolve_devices(spec)
    assert e.value.hint


def test_mps_absent(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="not available"):
        resolve_devices("mps")


def test_an_absent_device_is_one_line_at_the_cli(cli, no_cuda):
    r = cli("summary", "--devices", "cuda:0,cuda:1")
    assert r.code == 2
    assert r.err.startswith("error: device 'cuda:0' is not available")
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 2  # error + hint


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_devices_resolve_and_hold_tensors():
    count = torch.cuda.device_count()
    assert resolve_devices("auto") == [torch.device("cuda", 0)]
    devices = resolve_devices("cuda:0" if count == 1 else "cuda:0,cuda:1")
    for d in devices:
        assert torch.ones(2, device=d).sum().item() == 2
    with pytest.raises(DeviceError):
        resolve_devices(f"cuda:{count}")
