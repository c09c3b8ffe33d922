"""`alexcli bench`: every figure comes with its limit, measured in the same run, and a
ratio; on tiny made-up data (`--quick`). No timing is asserted: only that the report
is whole and its arithmetic right."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
import torch

from alexcli.bench.limits import flops_per_image
from alexcli.config import PRESETS, ModelConfig
from tests.helpers import write_data_dir

# stage → the targets of its figures, in report order (issue 10)
TARGETS = {
    "prepare": [0.8, 0.9],  # vs a plain decode loop; from the archives vs from the tree
    "stats": [0.7],
    # raw images, then the same as JPEG records: vs raw or decoding reads, vs the step;
    # one worker's share vs an H100's appetite per core
    "loader": [0.5, 10.0, 0.5, 10.0, 0.8],
    # fp32 vs its peak, bf16 vs its peak, fp32 and bf16 vs plain eager fp32 on every core
    "train": [None, None, 1.5, 2.5],
}
INFERENCE_LIMITS = ("onnxruntime", "the training network's forward")


def check_figure(f: dict) -> None:
    assert f["value"] > 0 and f["limit_value"] > 0, f
    assert f["limit"] and f["name"] and f["unit"] == "images/s"
    assert f["ratio"] == pytest.approx(f["value"] / f["limit_value"], rel=1e-2)
    if f["target"] is None:
        assert f["met"] is None
    else:
        assert f["met"] is (f["ratio"] >= f["target"])
        assert ("cause" in f) is (not f["met"])


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    """bench's temporary directory goes here, so the test sees it cleaned up."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_quick_bench_reports_every_figure_beside_its_limit(cli, own_tmp):
    r = cli("bench", "--quick", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    figures = report["figures"]
    assert {s: [f["target"] for f in figures if f["stage"] == s] for s in TARGETS} == TARGETS
    for f in figures:
        check_figure(f)
    # inference: alexcli against onnxruntime on the same threads first (target 1), then
    # against its own threads and at bf16 where this CPU has it, then the training forward
    inference = [f for f in figures if f["stage"] == "inference"]
    threads = report["details"]["inference"]["threads"]
    assert inference[0]["target"] == 1.0
    assert inference[0]["limit"] == f"onnxruntime, {threads} thread{'' if threads == 1 else 's'}"
    assert inference[-1]["limit"] == "the training network's forward"
    assert all(f["limit"].startswith(INFERENCE_LIMITS) for f in inference)
    assert all(f["target"] is None for f in inference[1:])
    details = report["details"]["inference"]
    assert details["openmp_wait_policy"] and details["onnxruntime"].startswith("onnxruntime")
    assert set(details["images_per_s"]) >= {"alexcli", "onnxruntime", "reference"}
    assert details["max_difference"] < 1e-5  # the same probabilities as the training forward
    train = report["details"]["train"]
    assert set(train["peak_gflops"]) == {"fp32", "bf16"}
    for k, peak in train["peak_gflops"].items():  # the best of a matmul and a convolution
        assert peak == max(train["matmul_gflops"][k], train["conv3x3_gflops"][k])
    assert set(train["step_images_per_s"]) == {"plain_fp32", "tuned_fp32", "tuned_bf16"}
    assert 0 < sum(op["share"] for op in train["step_top_ops"]) <= 1.0 + 1e-6
    # the peak figures are the step against peak ÷ FLOPs per image
    fp32 = next(f for f in figures if f["limit"].startswith("fp32 peak"))
    peak = train["peak_gflops"]["fp32"] * 1e9 / train["flops_per_image"]
    assert fp32["limit_value"] == pytest.approx(peak, rel=1e-2)
    # the loader's appetite figure is the tuned step's rate
    appetite = next(f for f in figures if f["target"] == 10.0)
    assert appetite["limit_value"] == pytest.approx(train["step_images_per_s"]["tuned_bf16"])
    raw, jpeg = report["details"]["loader"], report["details"]["loader_jpeg"]
    assert (raw["encoding"], jpeg["encoding"]) == ("raw", "jpeg")
    assert jpeg["bytes_per_image"] < raw["bytes_per_image"] / 3
    assert all("jpeg q90" in f["name"] for f in [f for f in figures if f["stage"] == "loader"][2:])
    assert report["settings"]["quick"] is True and report["settings"]["preset"] == "small"
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch"]
    assert not list(own_tmp.glob("alexcli-bench-*"))  # the made-up data are gone


def test_compile_adds_the_compiled_step_beside_the_same_step_eager(cli, monkeypatch):
    """`bench --compile`: what `train --compile` gains, as a ratio to the eager step.
    Traced with torch.compile's "eager" backend here (inductor's build takes minutes)."""
    from alexcli.core.nn import loops

    monkeypatch.setattr(loops, "COMPILE_BACKEND", "eager")
    r = cli("bench", "--quick", "--only", "train", "--compile", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    rates = report["details"]["train"]["step_images_per_s"]
    (f,) = [f for f in report["figures"] if f["name"].endswith("compiled")]
    check_figure(f)
    assert f["name"] == "small step, bf16, compiled" and f["limit"] == "small step, bf16, eager"
    assert f["value"] == pytest.approx(rates["tuned_compiled_bf16"], rel=1e-2)
    assert f["limit_value"] == pytest.approx(rates["tuned_bf16"], rel=1e-2)
    assert report["settings"]["compile"] is True


def test_made_up_data_of_a_killed_bench_are_removed_by_the_next(cli, own_tmp):
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = own_tmp / f"alexcli-bench-{done.stdout.strip()}-x1y2"  # its process is gone
    live = own_tmp / f"alexcli-bench-{os.getpid()}-a3b4"  # a bench still running
    for folder in (orphan, live):
        (folder / "data").mkdir(parents=True)
    r = cli("bench", "--quick", "--only", "train", "--json")
    assert r.code == 0, r.err
    assert not orphan.exists() and live.exists()


def test_bench_on_a_data_dir_measures_only_what_it_is_asked(cli, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 128, 128, 3), dtype=np.uint8)
    write_data_dir(
        tmp_path / "data", {"train": (images, np.arange(10) % 3), "val": (images[:2], np.arange(2))}
    )
    r = cli(
        "bench", tmp_path / "data", "--quick", "--only", "loader,train", "--amp", "off", "--json"
    )
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert [f["stage"] for f in report["figures"]] == ["loader"] * 2 + ["train"] * 2
    assert [f["target"] for f in report["figures"] if f["stage"] == "train"] == [None, 1.5]
    for f in report["figures"]:
        check_figure(f)
    assert set(report["details"]["train"]["peak_gflops"]) == {"fp32", "bf16"}
    assert report["details"]["loader"]["images"] == 10
    assert report["settings"]["data_dir"] == str(tmp_path / "data")


def test_bench_table_names_each_stage_and_its_limit(cli):
    r = cli("bench", "--quick", "--only", "stats", "--only", "prepare")
    assert r.code == 0, r.err
    for word in ("prepare", "decode only", "stats", "h5py read", "ratio", "target"):
        assert word in r.out
    assert "loader" not in r.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "eval"], "no such stage"),
        (["--amp", "fp16"], "needs a CUDA device"),
        (["--preset", "huge"], "'huge' is not one of 'paper', 'small'"),
    ],
)
def test_bad_options_are_one_line(cli, args, message):
    r = cli("bench", "--quick", *args)
    assert r.code == 2 and message in r.err and "Traceback" not in r.err


def test_images_smaller_than_the_crop_are_refused(cli, tmp_path):
    images = np.zeros((4, 64, 64, 3), np.uint8)
    write_data_dir(
        tmp_path / "d", {"train": (images, np.arange(4) % 2), "val": (images, np.arange(4) % 2)}
    )
    r = cli("bench", tmp_path / "d", "--quick", "--only", "loader")
    assert r.code == 2 and "smaller than the 112 px crop" in r.err


def test_flops_per_image_is_six_times_the_hand_counted_multiply_adds():
    # the paper's layers at 224 (per-tower widths, grouped connections): output maps × fan-in
    macs = (
        96 * 55**2 * 3 * 11**2  # conv1
        + 256 * 27**2 * 48 * 5**2  # conv2, own tower's 48 maps
        + 384 * 13**2 * 256 * 3**2  # conv3, both towers
        + 384 * 13**2 * 192 * 3**2  # conv4
        + 256 * 13**2 * 192 * 3**2  # conv5
        + 9216 * 4096
        + 4096 * 4096
        + 4096 * 1000  # fc6, fc7, fc8
    )
    assert flops_per_image(ModelConfig()) == 6 * macs
    assert flops_per_image(PRESETS["small"].model) < flops_per_image(ModelConfig()) / 10


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_benched_batch_is_pinned_as_the_loaders_are():
    """A non_blocking copy from pageable memory is synchronous: the step looked slower."""
    from alexcli.bench.step import StepBench, StepSetup

    cfg = PRESETS["small"].model
    runner = StepBench(
        cfg, batch_size=4, devices=[torch.device("cuda", 0)], setup=StepSetup.tuned("bf16")
    )
    assert all(t.is_pinned() for t in runner.batch)
    assert runner.steps(2).per_s > 0
