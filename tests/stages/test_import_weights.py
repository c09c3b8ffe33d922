"""`alexcli import-weights torchvision`: random weights in torchvision's layout give, through
alexcli (eval, predict, the API), the logits of a reference forward written here from
torchvision's published architecture with plain F.conv2d / F.linear and its per-channel
normalisation; and the errors a user meets are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alexcli
from alexcli.core.nn.imports import TORCHVISION_VAL, torchvision_config
from alexcli.stages.eval import published_reference
from tests.eval_helpers import wave_images
from tests.helpers import write_data_dir

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CLASSES = 6


def torchvision_state(classes=CLASSES, seed=0):
    """A state dict with torchvision.models.alexnet's keys and shapes, He-initialised
    (so activations keep their scale through eight layers)."""
    torch.manual_seed(seed)
    layers = {
        "features.0": nn.Conv2d(3, 64, 11, 4, 2),
        "features.3": nn.Conv2d(64, 192, 5, padding=2),
        "features.6": nn.Conv2d(192, 384, 3, padding=1),
        "features.8": nn.Conv2d(384, 256, 3, padding=1),
        "features.10": nn.Conv2d(256, 256, 3, padding=1),
        "classifier.1": nn.Linear(256 * 6 * 6, 4096),
        "classifier.4": nn.Linear(4096, 4096),
        "classifier.6": nn.Linear(4096, classes),
    }
    state = {}
    for name, layer in layers.items():
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.uniform_(layer.bias, -0.1, 0.1)
        state[f"{name}.weight"] = layer.weight.detach().clone()
        state[f"{name}.bias"] = layer.bias.detach().clone()
    return state


def reference_logits(state, crops):
    """torchvision's alexnet forward, written out: uint8 (n, 224, 224, 3) crops →
    (x/255 − mean)/std → features → adaptive 6×6 average pool → classifier."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).double() / 255
    x = (x - MEAN.double()) / STD.double()
    s = {k: v.double() for k, v in state.items()}
    x = F.max_pool2d(F.relu(F.conv2d(x, s["features.0.weight"], s["features.0.bias"], 4, 2)), 3, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, s["features.3.weight"], s["features.3.bias"], 1, 2)), 3, 2)
    x = F.relu(F.conv2d(x, s["features.6.weight"], s["features.6.bias"], 1, 1))
    x = F.relu(F.conv2d(x, s["features.8.weight"], s["features.8.bias"], 1, 1))
    x = F.max_pool2d(
        F.relu(F.conv2d(x, s["features.10.weight"], s["features.10.bias"], 1, 1)), 3, 2
    )
    x = torch.flatten(F.adaptive_avg_pool2d(x, (6, 6)), 1)
    x = F.relu(F.linear(x, s["classifier.1.weight"], s["classifier.1.bias"]))
    x = F.relu(F.linear(x, s["classifier.4.weight"], s["classifier.4.bias"]))
    return F.linear(x, s["classifier.6.weight"], s["classifier.6.bias"]).numpy()


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("tv")
    state = torchvision_state()
    torch.save(state, root / "alexnet.pth")
    images = wave_images(12)
    # labels the reference gets right for half the images and wrong for the rest, so the
    # eval's error is a number a broken path would miss (a random network's argmax
    # is often one class for every image)
    guess = reference_logits(state, images[:, 16:240, 16:240]).argmax(1)
    labels = np.where(np.arange(12) % 2 == 0, guess, (guess + 1) % CLASSES)
    data = root / "data"
    classes = [{"name": f"n{i:08d}", "words": f"class {i}"} for i in range(CLASSES)]
    write_data_dir(
        data, {"val": (images, labels), "train": (images[:6], labels[:6])}, classes=classes
    )
    return root, state, images, labels, data


def test_logits_and_probabilities_match_torchvisions_forward(cli, imported):
    root, state, images, _, data = imported
    r = cli("import-weights", "torchvision", root / "alexnet.pth", root / "run", "--classes", data)
    assert r.code == 0, r.err
    net = alexcli.load(root / "run", devices="cpu")
    crops = images[:, 16:240, 16:240]  # the centre 224 of the stored 256
    want = reference_logits(state, crops)
    assert want.std(0).mean() > 0.1  # the images are told apart: a real comparison
    # the network alone, on alexcli's normalisation of the same crops
    x = torch.from_numpy(crops).float() - torch.from_numpy(net.ckpt.mean[16:240, 16:240])
    x = (x * net.cfg.input_scale).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        got = net.model(x).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4 * np.abs(want).max())
    # and the whole predict path
    probs = net.probabilities(list(images), views=1).numpy()
    np.testing.assert_allclose(probs, _softmax(want), atol=1e-4)
    assert net.classes == [{"name": f"n{i:08d}", "words": f"class {i}"} for i in range(CLASSES)]


def test_eval_on_a_prepared_data_dir_scores_the_reference(cli, imported):
    root, state, images, labels, data = imported
    run = root / "run-eval"
    assert (
        cli("import-weights", "torchvision", root / "alexnet.pth", run, "--classes", data).code == 0
    )
    r = cli("eval", run, data, "--views", 1, "--json", "--devices", "cpu")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    logits = reference_logits(state, images[:, 16:240, 16:240])
    top1 = np.mean(logits.argmax(1) != labels)
    top5 = np.mean(
        [lab not in np.argsort(-row)[:5] for row, lab in zip(logits, labels, strict=True)]
    )
    assert top1 == 0.5
    assert report["top1_error"] == pytest.approx(top1) and report["top5_error"] == pytest.approx(
        top5
    )
    assert report["published"] is None  # six classes: nothing published to compare with


def test_torchvisions_published_numbers_sit_beside_a_one_crop_eval_of_imagenet():
    classes = [{"name": f"n{i:08d}", "words": ""} for i in range(1000)]
    cfg = torchvision_config(1000)
    ref = published_reference(cfg, classes, views=1)
    assert ref is not None and "torchvision" in ref["source"]
    assert (ref["top1_error"], ref["top5_error"]) == pytest.approx((0.43478, 0.20934))
    published = {"top1_error": 1 - 0.56522, "top5_error": 1 - 0.79066}  # torchvision's page
    assert pytest.approx(published) == TORCHVISION_VAL
    assert published_reference(cfg, classes, views=10) is None  # not torchvision's test
    assert published_reference(cfg, classes[:100], views=1) is None


def test_state_dict_forms_and_class_lists(cli, imported, tmp_path):
    _, state, images, _, _ = imported
    wrapped = tmp_path / "wrapped.pth"  # a DataParallel save inside a training checkpoint
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}, wrapped)
    mapping = tmp_path / "LOC_synset_mapping.txt"
    lines = [f"n{i:08d} thing {i}, a thing" for i in range(CLASSES)]
    mapping.write_text("\n".join(reversed(lines)) + "\n")  # unsorted: sorted on reading
    r = cli(
        "import-weights", "torchvision", wrapped, tmp_path / "run", "--classes", mapping, "--json"
    )
    assert r.code == 0, r.err
    assert json.loads(r.out)["num_classes"] == CLASSES
    net = alexcli.load(tmp_path / "run", devices="cpu")
    assert net.classes[2] == {"name": "n00000002", "words": "thing 2, a thing"}
    want = _softmax(reference_logits(state, images[:3, 16:240, 16:240]))
    np.testing.assert_allclose(net.probabilities(list(images[:3]), 1).numpy(), want, atol=1e-4)
    # no --classes: named by index, and predict still answers
    assert cli("import-weights", "torchvision", wrapped, tmp_path / "bare").code == 0
    assert alexcli.load(tmp_path / "bare").classes[4] == {"name": "4", "words": ""}
    provenance = json.loads((tmp_path / "bare" / "imported.json").read_text())
    assert provenance["kind"] == "torchvision" and len(provenance["sha256"]) == 64


class _Evil:
    def __reduce__(self):
        return (print, ("ran",))


def test_bad_input_is_one_line_and_writes_nothing(cli, imported, tmp_path):
    root, state, *_ = imported
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage" * 100)
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Evil()}, evil)
    resnet = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, resnet)
    wide = tmp_path / "wide.pth"
    torch.save(state | {"features.3.weight": torch.zeros(128, 64, 5, 5)}, wide)
    short = tmp_path / "short.txt"
    short.write_text("n00000001 one\nn00000002 two\n")
    good = root / "alexnet.pth"
    cases = [
        (("caffe2", good), "'caffe2' is not one of 'torchvision'"),
        (("torchvision", junk), "not a PyTorch file"),
        (("torchvision", evil), "pickled Python objects"),
        (("torchvision", resnet), "not torchvision's alexnet"),
        (("torchvision", wide), "features.3.weight is (128, 64, 5, 5)"),
        (("torchvision", tmp_path / "missing.pth"), "no such file"),
        (("torchvision", good, "--classes", short), "fc8 has 6 classes, the class list 2"),
        (("torchvision", good, "--classes", junk), "not a class list"),
    ]
    for (kind, file, *rest), words in cases:
        out = tmp_path / "out"
        r = cli("import-weights", kind, file, out, *rest)
        assert r.code == 2, (words, r.err)
        assert words in r.err and "Traceback" not in r.err, r.err
        assert len(r.err.strip().splitlines()) <= 2
        assert not out.exists(), words
    # an existing run is kept unless --force
    run = tmp_path / "kept"
    assert cli("import-weights", "torchvision", good, run).code == 0
    before = (run / "checkpoints" / "last.pt").read_bytes()
    r = cli("import-weights", "torchvision", good, run)
    assert r.code == 2 and "already holds a run" in r.err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert cli("import-weights", "torchvision", good, run, "--force").code == 0


def test_force_replaces_every_trace_of_an_earlier_run(cli, imported, tmp_path):
    root, *_ = imported
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"an earlier run's best")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (run / "tensorboard").mkdir()
    r = cli("import-weights", "torchvision", root / "alexnet.pth", run)
    assert r.code == 2 and "already holds a run" in r.err
    assert (run / "checkpoints" / "best.pt").read_bytes() == b"an earlier run's best"
    assert cli("import-weights", "torchvision", root / "alexnet.pth", run, "--force").code == 0
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == ["checkpoints", "checkpoints/last.pt", "config.json", "imported.json"]
