"""`alexcli import-weights caffe`: a .caffemodel serialised here by the protobuf library
itself (messages declared with caffe.proto's field numbers, in both the current
`layer` and the released bvlc_alexnet's older `layers` form) gives, through alexcli,
the logits of a forward written here from Caffe's definition of bvlc_alexnet: BGR input
minus the mean image at the crop, grouped convolutions, Caffe's LRN (k = 1, α/n)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import alexcli
from alexcli.core.nn.caffe import read_blob
from tests.eval_helpers import wave_images

# The protobuf library writes the test's .caffemodel (alexcli reads it without protobuf).
# It comes with the optional extras (onnx, tensorboardX), not with alexcli: without it
# these tests skip.
descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
descriptor_pool = pytest.importorskip("google.protobuf.descriptor_pool")
message_factory = pytest.importorskip("google.protobuf.message_factory")

FD = descriptor_pb2.FieldDescriptorProto
CLASSES = 7  # odd: tower 1 holds fc8's extra class, as the paper splits them
# name, out, in per group, kernel, groups (bvlc_alexnet's deploy.prototxt)
CONVS = [
    ("conv1", 96, 3, 11, 1),
    ("conv2", 256, 48, 5, 2),
    ("conv3", 384, 256, 3, 1),
    ("conv4", 384, 192, 3, 2),
    ("conv5", 256, 192, 3, 2),
]
FCS = [("fc6", 4096, 9216), ("fc7", 4096, 4096), ("fc8", CLASSES, 4096)]


def caffe_messages(packed=True):
    """NetParameter, V1LayerParameter, LayerParameter, BlobProto, BlobShape with
    caffe.proto's numbers, as message classes of the protobuf library."""
    fdp = descriptor_pb2.FileDescriptorProto(name=f"caffe_{packed}.proto", package="caffe")
    fdp.syntax = "proto2"

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, repeated, type_name in fields:
            label = FD.LABEL_REPEATED if repeated else FD.LABEL_OPTIONAL
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".caffe.{type_name}"
            if repeated and ftype in (FD.TYPE_FLOAT, FD.TYPE_INT64, FD.TYPE_DOUBLE):
                f.options.packed = packed

    message("BlobShape", [("dim", 1, FD.TYPE_INT64, True, None)])
    message(
        "BlobProto",
        [
            ("num", 1, FD.TYPE_INT32, False, None),
            ("channels", 2, FD.TYPE_INT32, False, None),
            ("height", 3, FD.TYPE_INT32, False, None),
            ("width", 4, FD.TYPE_INT32, False, None),
            ("data", 5, FD.TYPE_FLOAT, True, None),
            ("shape", 7, FD.TYPE_MESSAGE, False, "BlobShape"),
            ("double_data", 8, FD.TYPE_DOUBLE, True, None),
        ],
    )
    message(
        "LayerParameter",
        [
            ("name", 1, FD.TYPE_STRING, False, None),
            ("type", 2, FD.TYPE_STRING, False, None),
            ("blobs", 7, FD.TYPE_MESSAGE, True, "BlobProto"),
        ],
    )
    message(
        "V1LayerParameter",
        [
            ("name", 4, FD.TYPE_STRING, False, None),
            ("type", 5, FD.TYPE_INT32, False, None),
            ("blobs", 6, FD.TYPE_MESSAGE, True, "BlobProto"),
        ],
    )
    message(
        "NetParameter",
        [
            ("name", 1, FD.TYPE_STRING, False, None),
            ("layers", 2, FD.TYPE_MESSAGE, True, "V1LayerParameter"),
            ("layer", 100, FD.TYPE_MESSAGE, True, "LayerParameter"),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}"))
        for n in ("NetParameter", "BlobProto")
    }


def caffe_weights(seed=0):
    """bvlc_alexnet's blobs, He-initialised: {layer: (weights, biases)} as Caffe shapes."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, cout, cin, k, _ in CONVS:
        out[name] = (
            rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k)),
            rng.uniform(-0.1, 0.1, cout),
        )
    for name, fout, fin in FCS:
        out[name] = (rng.normal(0, np.sqrt(2 / fin), (fout, fin)), rng.uniform(-0.1, 0.1, fout))
    return {k: (w.astype(np.float32), b.astype(np.float32)) for k, (w, b) in out.items()}


def write_caffemodel(path, weights, form="layer"):
    """`layer`: today's LayerParameter with BlobShape; `layers`: the V1 form with the
    legacy num/channels/height/width (fc weights 1×1×out×in), as bvlc_alexnet ships."""
    msgs = caffe_messages()
    net = msgs["NetParameter"](name="AlexNet")
    data = net.layer.add(name="data", type="Input") if form == "layer" else None
    assert data is None or not data.blobs
    for name, (w, b) in weights.items():
        layer = (
            net.layer.add(name=name, type="Convolution")
            if form == "layer"
            else net.layers.add(name=name, type=4)
        )
        for blob in (w, b):
            proto = layer.blobs.add()
            if form == "layer":
                proto.shape.dim.extend(blob.shape)
            else:
                dims = (1,) * (4 - blob.ndim) + blob.shape
                proto.num, proto.channels, proto.height, proto.width = dims
            proto.data.extend(blob.ravel().tolist())
    path.write_bytes(net.SerializeToString())


def write_mean(path, mean_bgr):
    blob = caffe_messages()["BlobProto"](num=1, channels=3, height=256, width=256)
    blob.data.extend(mean_bgr.ravel().tolist())
    path.write_bytes(blob.SerializeToString())


def reference_logits(weights, images, mean_bgr):
    """Caffe's bvlc_alexnet forward, in float64: BGR 227 centre crops minus the mean
    image's same window, conv1 (stride 4), ReLU, LRN (Caffe: k 1, α/n), pool 3/2 (ceil,
    Caffe's rounding), conv2 in 2 groups, …, fc8."""
    x = torch.from_numpy(images[:, 14:241, 14:241, ::-1].copy()).permute(0, 3, 1, 2).double()
    x = x - torch.from_numpy(mean_bgr[:, 14:241, 14:241]).double()
    w = {
        k: (torch.from_numpy(a).double(), torch.from_numpy(b).double())
        for k, (a, b) in weights.items()
    }

    def conv(x, name, stride, pad, groups):
        return F.relu(F.conv2d(x, *w[name], stride=stride, padding=pad, groups=groups))

    def norm_pool(x):
        x = F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)
        return F.max_pool2d(x, 3, 2, ceil_mode=True)

    x = norm_pool(conv(x, "conv1", 4, 0, 1))
    x = norm_pool(conv(x, "conv2", 1, 2, 2))
    x = conv(conv(x, "conv3", 1, 1, 1), "conv4", 1, 1, 2)
    x = F.max_pool2d(conv(x, "conv5", 1, 1, 2), 3, 2, ceil_mode=True).flatten(1)
    x = F.relu(F.linear(x, *w["fc6"]))
    x = F.relu(F.linear(x, *w["fc7"]))
    return F.linear(x, *w["fc8"]).numpy()


@pytest.fixture(scope="module")
def caffe_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("caffe")
    weights = caffe_weights()
    for form in ("layer", "layers"):
        write_caffemodel(root / f"{form}.caffemodel", weights, form)
    rng = np.random.default_rng(9)
    mean_bgr = (rng.uniform(90, 130, (3, 1, 1)) + rng.normal(0, 8, (3, 256, 256))).astype(
        np.float32
    )
    write_mean(root / "mean.binaryproto", mean_bgr)
    return root, weights, mean_bgr


@pytest.mark.parametrize("form", ["layer", "layers"])
def test_alexcli_gives_caffes_logits(cli, caffe_files, tmp_path, form):
    root, weights, mean_bgr = caffe_files
    run = tmp_path / "run"
    r = cli(
        "import-weights",
        "caffe",
        root / f"{form}.caffemodel",
        run,
        "--mean",
        root / "mean.binaryproto",
        "--json",
    )
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["published"] == pytest.approx({"top1_error": 0.429, "top5_error": 0.198})
    net = alexcli.load(run, devices="cpu")
    assert net.cfg.model.towers == 2 and net.cfg.model.lrn and net.crop == 227
    images = wave_images(4, seed=3)
    want = reference_logits(weights, images, mean_bgr)
    assert want.std(0).mean() > 0.1
    crops = images[:, 14:241, 14:241]
    x = torch.from_numpy(crops).float() - torch.from_numpy(net.ckpt.mean[14:241, 14:241])
    with torch.no_grad():
        got = net.model(x.permute(0, 3, 1, 2).contiguous()).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4 * np.abs(want).max())
    probs = net.probabilities(list(images), views=1).numpy()
    e = np.exp(want - want.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), atol=1e-4)


def test_without_a_mean_file_the_mean_pixel_is_used(cli, caffe_files, tmp_path):
    root, *_ = caffe_files
    assert cli("import-weights", "caffe", root / "layer.caffemodel", tmp_path / "run").code == 0
    mean = alexcli.load(tmp_path / "run").ckpt.mean
    np.testing.assert_allclose(mean[100, 7], [122.67891434, 116.66876762, 104.00698793], rtol=1e-6)


def test_blobs_in_every_encoding_caffe_has_written():
    """Unpacked floats (old Caffe), double_data, legacy 4-d dims and BlobShape."""
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    unpacked = caffe_messages(packed=False)["BlobProto"]()
    unpacked.shape.dim.extend(values.shape)
    unpacked.data.extend(values.ravel().tolist())
    np.testing.assert_array_equal(read_blob(memoryview(unpacked.SerializeToString())), values)
    doubles = caffe_messages()["BlobProto"](num=1, channels=2, height=3, width=4)
    doubles.double_data.extend(values.ravel().astype(np.float64).tolist())
    got = read_blob(memoryview(doubles.SerializeToString()))
    assert got.shape == (1, 2, 3, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got.ravel(), values.ravel(), rtol=1e-7)


def test_bad_caffe_files_are_one_line(cli, caffe_files, tmp_path):
    root, weights, _ = caffe_files
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes((root / "layer.caffemodel").read_bytes()[:100_000])
    partial = tmp_path / "partial.caffemodel"
    write_caffemodel(partial, {k: v for k, v in weights.items() if k != "conv3"})
    wide = tmp_path / "wide.caffemodel"
    write_caffemodel(
        wide,
        weights | {"conv4": (np.zeros((384, 384, 3, 3), np.float32), np.zeros(384, np.float32))},
    )
    text = tmp_path / "deploy.prototxt"
    text.write_text('name: "AlexNet"\nlayer { name: "data" type: "Input" }\n')
    cases = [
        (("caffe", cut), "not a Caffe model"),
        (("caffe", partial), "no weights and biases for conv3"),
        (("caffe", wide), "conv4's weight gives tower 1 (192, 384, 3, 3)"),
        (("caffe", text), "not a Caffe model"),
        (("caffe", root / "layer.caffemodel", "--mean", cut), "not a Caffe mean file"),
        (
            ("torchvision", root / "layer.caffemodel", "--mean", root / "mean.binaryproto"),
            "--mean is for Caffe",
        ),
    ]
    for (kind, file, *rest), words in cases:
        out = tmp_path / "out"
        r = cli("import-weights", kind, file, out, *rest)
        assert r.code == 2 and words in r.err and "Traceback" not in r.err, (words, r.err)
        assert not out.exists()
