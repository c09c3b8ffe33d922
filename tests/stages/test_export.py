"""`alexcli export`: each format reopened the way a user without alexcli would (plain
torch, onnxruntime, safetensors) gives `alexcli predict --views 1`'s probabilities and the
numpy reference's, on any batch size; bad requests are one line and leave no file."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import alexcli
from alexcli.core.data.decode import load_image
from tests.eval_helpers import CROP, SIZE, reference_probs, save_run


def _onnx():
    """onnx, or the test skips: `alexcli[onnx]` (onnx, onnxscript, onnxruntime) is an
    optional extra, which a GPU machine's image may lack."""
    for name in ("onnxscript", "onnxruntime"):
        pytest.importorskip(name)
    return pytest.importorskip("onnx")


def _photos(root, n=3):
    rng = np.random.default_rng(5)
    files = []
    for i in range(n):
        w, h = rng.integers(45, 120, 2)
        colour = rng.integers(0, 256, 3)
        pixels = np.clip(colour + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"p{i}.png")
        files.append(root / f"p{i}.png")
    return files


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    (root / "run" / "checkpoints").mkdir(parents=True)
    model, mean = save_run(root / "run" / "checkpoints" / "last.pt")
    files = _photos(root)
    images = np.stack([load_image(f, SIZE) for f in files])
    return root, model, mean, files, images


def _centre_crops(images, layout):
    c = (SIZE - CROP) // 2
    crops = images[:, c : c + CROP, c : c + CROP]
    return np.ascontiguousarray(crops if layout == "nhwc" else crops.transpose(0, 3, 1, 2))


def _predict_top5(cli, target, files):
    r = cli("predict", target, *files, "--views", 1, "--json", "--devices", "cpu")
    assert r.code == 0, r.err
    return [p["top5"] for p in json.loads(r.out)["predictions"]]


def _reopen(path, fmt):
    """What a user without alexcli does with each file."""
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
        return lambda x: module(torch.from_numpy(x)).detach().numpy()
    if fmt == "pt2":
        module = torch.export.load(path).module()
        return lambda x: module(torch.from_numpy(x)).detach().numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["probabilities"], {"images": x})[0]


@pytest.mark.parametrize(
    ("fmt", "suffix", "layout"),
    [
        ("torchscript", ".ts", "nchw"),
        ("pt2", ".pt2", "nchw"),
        ("onnx", ".onnx", "nchw"),
        ("onnx", ".onnx", "nhwc"),
        ("torchscript", ".pt", "nhwc"),
    ],
)
def test_each_graph_format_reopens_outside_alexcli_and_gives_predicts_answer(
    cli, run, fmt, suffix, layout
):
    if fmt == "onnx":
        _onnx()
    root, model, mean, files, images = run
    out = root / f"net-{fmt}-{layout}{suffix}"
    r = cli("export", root / "run", out, "--format", fmt, "--layout", layout, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["format"] == fmt and report["max_difference"] < 1e-5
    net = _reopen(out, fmt)
    crops = _centre_crops(images, layout)
    got = net(crops)
    want = reference_probs(model, images, mean, CROP, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    for row, top5 in zip(got, _predict_top5(cli, root / "run", files), strict=True):
        index, probability = zip(*[(g["index"], g["probability"]) for g in top5], strict=True)
        np.testing.assert_allclose(row[list(index)], probability, atol=1e-6)
    np.testing.assert_allclose(net(crops[:1]), got[:1], atol=1e-6)  # any batch size
    np.testing.assert_allclose(net(np.concatenate([crops] * 3)), np.tile(got, (3, 1)), atol=1e-6)


def test_onnx_carries_its_opset_and_the_class_names(cli, run):
    onnx = _onnx()
    root, *_ = run
    out = root / "meta.onnx"
    assert cli("export", root / "run", out).code == 0
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"])[5] == {"name": "n00000005", "words": "class 5"}
    assert meta["input"] == f"uint8 (n, 3, {CROP}, {CROP}) RGB crops"
    (inp,) = proto.graph.input
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    extra = {"alexcli.json": ""}
    ts = root / "meta.ts"
    assert cli("export", root / "run", ts).code == 0
    torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(json.loads(extra["alexcli.json"])["classes"])[2]["words"] == "class 2"


def test_safetensors_holds_plain_weights_and_reloads_as_the_run(cli, run):
    root, model, mean, files, _ = run
    out = root / "weights.safetensors"
    r = cli("export", root / "run", out)
    assert r.code == 0, r.err
    with safe_open(str(out), framework="pt") as f:  # plain safetensors, no alexcli
        keys = set(f.keys())
        assert keys == {f"model.{k}" for k in model.state_dict()} | {"mean", "eigval", "eigvec"}
        torch.testing.assert_close(
            f.get_tensor("model.towers.1.conv2.weight"), model.state_dict()["towers.1.conv2.weight"]
        )
        np.testing.assert_array_equal(f.get_tensor("mean").numpy(), mean)
        assert json.loads(f.metadata()["config"])["model"]["towers"] == 2
    # and alexcli (the API and predict) reads it back as the run itself
    for views in (1, 10):
        want = alexcli.load(root / "run", devices="cpu").probabilities(files, views)
        got = alexcli.load(out, devices="cpu").probabilities(files, views)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    assert _predict_top5(cli, out, files) == _predict_top5(cli, root / "run", files)


def test_bad_requests_are_one_line_and_leave_no_file(cli, run, tmp_path):
    root, *_ = run
    cases = [
        (("export", root / "run", tmp_path / "net.bin"), "which format"),
        (("export", root / "run", tmp_path / "w.safetensors", "--layout", "nhwc"), "layout"),
        (("export", root / "run", tmp_path / "n.onnx", "--format", "tflite"), "tflite"),
        (("export", root / "nowhere", tmp_path / "n.onnx"), "no such run"),
        (("export", root / "run", tmp_path, "--format", "onnx"), "is a directory"),
    ]
    for args, words in cases:
        r = cli(*args)
        assert r.code == 2, (args, r.err)
        assert words in r.err and len(r.err.strip().splitlines()) <= 2, r.err
        assert "Traceback" not in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_foreign_and_damaged_safetensors_are_refused(cli, run, tmp_path):
    from safetensors.torch import save_file

    root, _, _, files, _ = run
    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    good = root / "weights-bad.safetensors"
    assert cli("export", root / "run", good).code == 0
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:5000])
    cases = [(tmp_path / "foreign.safetensors", "not alexcli's"), (cut, "not a safetensors")]
    for path, words in cases:
        r = cli("predict", path, files[0])
        assert r.code == 2 and words in r.err, r.err
        assert "Traceback" not in r.err


def test_onnx_without_its_packages_names_the_extra(cli, run, tmp_path, monkeypatch):
    root, *_ = run
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    r = cli("export", root / "run", tmp_path / "n.onnx")
    assert r.code == 2 and "alexcli[onnx]" in r.err, r.err
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_fails_its_check_never_replaces_out(cli, run, tmp_path, monkeypatch):
    """The check runs on the temporary file: a wrong answer, or a runtime that cannot
    open it, fails the command and leaves an earlier OUT as it was, and no temporary."""
    from alexcli.core.nn import export

    root, *_ = run
    out = tmp_path / "net.ts"
    assert cli("export", root / "run", out).code == 0
    before = out.read_bytes()

    def wrong(path, fmt):
        return lambda x: np.zeros((len(x), 8), np.float32)

    def broken(path, fmt):
        raise RuntimeError("PytorchStreamReader failed\nreading zip archive")

    for fake, words in [(wrong, "disagrees with predict"), (broken, "does not reopen")]:
        monkeypatch.setattr(export, "reload", fake)
        r = cli("export", root / "run", out)
        assert r.code == 1 and words in r.err and "nothing written" in r.err, r.err
        assert len(r.err.strip().splitlines()) == 2 and "Traceback" not in r.err
        assert out.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["net.ts"]
