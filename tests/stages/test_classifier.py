"""stages/classifier.py: `Classifier`'s inference path (core/nn/inference.py) gives the
probabilities and fc7 vectors of the reference path — the training network, NCHW, its
own LRN — to float rounding, and the same top-1/top-5 on a split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexcli.config import EvalConfig
from alexcli.core.data.batches import Batch
from alexcli.core.nn.checkpoint import load_checkpoint
from alexcli.core.nn.loops import centre_features, evaluate_views, view_probabilities
from alexcli.stages.classifier import Classifier
from tests.eval_helpers import CROP, colourful, save_run, tiny_config


@pytest.fixture
def run(tmp_path):
    save_run(tmp_path / "run.pt", tiny_config(num_classes=9, input_scale=0.5), seed=3)
    return tmp_path / "run.pt"


def reference_path(run):
    """The network as `train` builds it (the training LRN, NCHW) and its normaliser."""
    net = Classifier.load(run, EvalConfig(devices="cpu"))
    return load_checkpoint(run).build_model(), net.normalize


@pytest.mark.parametrize("views", [1, 10])
def test_classify_gives_the_reference_paths_probabilities(run, views):
    net = Classifier.load(run, EvalConfig(devices="cpu"))
    model, normalize = reference_path(run)
    images = colourful(11, seed=4)
    got = net.classify(images, views)
    with torch.no_grad():
        want = view_probabilities(
            model, torch.from_numpy(images), normalize, CROP, views, channels_last=False
        )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert torch.equal(got.argmax(1), want.argmax(1))


def test_features_are_the_reference_paths_fc7(run):
    net = Classifier.load(run, EvalConfig(devices="cpu"))
    model, normalize = reference_path(run)
    images = colourful(6, seed=5)
    got = net.features(images)
    with torch.no_grad():
        want = centre_features(
            model, torch.from_numpy(images), normalize, CROP, channels_last=False
        )
    assert got.shape == (6, 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_eval_counts_the_same_hits_as_the_reference_path(run):
    net = Classifier.load(run, EvalConfig(devices="cpu"))
    model, normalize = reference_path(run)
    images = torch.from_numpy(colourful(24, seed=6))
    labels = torch.arange(24) % 9
    unused = (torch.zeros(8), torch.zeros(8), torch.zeros(8, dtype=torch.bool), torch.zeros(8, 3))
    batches = [Batch(images[i : i + 8], labels[i : i + 8], *unused) for i in (0, 8, 16)]
    fast = evaluate_views(
        net.model, batches, net.normalize, crop=CROP, views=10, num_classes=9, threads=net.threads
    )
    want = evaluate_views(model, batches, normalize, crop=CROP, views=10, num_classes=9)
    assert (fast.top1, fast.top5) == (want.top1, want.top5)
    assert np.array_equal(fast.class_top1, want.class_top1)


def test_bf16_stays_near_fp32(run):
    images = colourful(8, seed=7)
    fp32 = Classifier.load(run, EvalConfig(devices="cpu")).classify(images, 10)
    bf16 = Classifier.load(run, EvalConfig(devices="cpu", amp="bf16")).classify(images, 10)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=0.05)  # bf16 keeps 8 bits


def test_classify_leaves_the_callers_threads_and_heap_as_they_were(run):
    net = Classifier.load(run, EvalConfig(devices="cpu"))
    before = torch.get_num_threads()
    with net.running():
        for _ in range(6):  # past the tuner's trials
            net.classify(colourful(3), 1)
    assert torch.get_num_threads() == before
    assert net.threads is None or net.threads.chosen in net.threads.counts
