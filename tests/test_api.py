"""The public Python API: `alexcli.load(RUN) -> Classifier`, the object `alexcli predict`
itself uses, so a Python caller and the CLI give the same answer."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import alexcli
from alexcli.core.data.decode import Unreadable, load_image
from tests.eval_helpers import CROP, SIZE, photo, reference_probs, save_run


@pytest.fixture
def run(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    model, mean = save_run(tmp_path / "run" / "checkpoints" / "last.pt")
    files = [photo(tmp_path / "wide.png", 90, 52), photo(tmp_path / "tall.jpg", 47, 80, 1)]
    return tmp_path / "run", model, mean, files


@pytest.mark.parametrize("views", [1, 10])
def test_load_predict_equals_the_cli_predict(cli, run, views):
    run_dir, _, _, files = run
    r = cli("predict", run_dir, *files, "--views", views, "--json", "--devices", "cpu")
    assert r.code == 0, r.err
    want = [p["top5"] for p in json.loads(r.out)["predictions"]]
    got = alexcli.load(run_dir, devices="cpu").predict(files, views=views)
    assert [[g.to_json() for g in row] for row in got] == want


def test_probabilities_match_a_reference_forward_for_every_kind_of_picture(run):
    """A path, its bytes, a PIL image and a uint8 array are the same picture."""
    run_dir, model, mean, files = run
    net = alexcli.load(run_dir, devices="cpu")
    assert isinstance(net.model, torch.nn.Module) and not net.model.training
    assert (net.size, net.crop, len(net.classes)) == (SIZE, CROP, 8)
    assert net.classes[3] == {"name": "n00000003", "words": "class 3"}
    want = reference_probs(model, np.stack([load_image(f, SIZE) for f in files]), mean, CROP, 10)
    pictures = [
        [str(f) for f in files],
        [f.read_bytes() for f in files],
        [Image.open(f) for f in files],
        [np.asarray(Image.open(f).convert("RGB")) for f in files],
    ]
    for kind in pictures:
        probs = net.probabilities(kind, views=10)
        assert probs.shape == (2, 8) and probs.dtype == torch.float32
        np.testing.assert_allclose(probs.numpy(), want, atol=1e-5)
    # a greyscale array becomes RGB; a preprocessed image is stored-size uint8
    grey = np.asarray(Image.open(files[0]).convert("L"))
    assert net.preprocess(grey).shape == (SIZE, SIZE, 3)
    assert net.preprocess(files[0]).dtype == np.uint8


def test_batches_do_not_change_the_answer(run):
    run_dir, _, _, files = run
    pictures = [*files, *files, files[0]]
    whole = alexcli.load(run_dir, devices="cpu").probabilities(pictures, views=1)
    piecewise = alexcli.load(run_dir, devices="cpu", batch_size=2).probabilities(pictures, views=1)
    np.testing.assert_allclose(whole.numpy(), piecewise.numpy(), atol=1e-6)
    assert alexcli.load(run_dir, devices="cpu").probabilities([], views=1).shape == (0, 8)


def test_bad_input_raises_a_one_line_error(tmp_path, run):
    run_dir, _, _, _ = run
    with pytest.raises(alexcli.UserError) as e:
        alexcli.load(tmp_path / "nowhere")
    assert "\n" not in str(e.value)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "stats.h5").write_bytes(b"")
    with pytest.raises(alexcli.UserError, match="is a DATA_DIR"):
        alexcli.load(data_dir)
    net = alexcli.load(run_dir, devices="cpu")
    with pytest.raises(Unreadable):
        net.preprocess(io.BytesIO(b"not an image").getvalue())
    empty = run_dir.parent / "empty.jpg"
    empty.write_bytes(b"")
    good = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(
        Unreadable, match=f"^{re.escape(str(empty))}: empty file"
    ) as caught:  # which file
        net.probabilities([good, empty])
    assert caught.value.reason == "empty file"
    with pytest.raises(Unreadable, match=r"^picture 1: not an image"):
        net.probabilities([good, b"not an image"])
    with pytest.raises(ValueError, match="uint8"):
        net.preprocess(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="views"):
        net.probabilities([np.zeros((50, 50, 3), np.uint8)], views=5)
    with pytest.raises(alexcli.AlexcliError, match="fp16"):
        alexcli.load(run_dir, devices="cpu", amp="fp16")


def test_the_issue_one_liner_runs_and_importing_stays_cheap(run):
    run_dir, _, _, files = run
    code = (
        "import sys, alexcli; assert 'torch' not in sys.modules; "
        f"c = alexcli.load({str(run_dir)!r}, devices='cpu'); "
        f"print(c.predict([{str(files[0])!r}])[0][0].name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("n0000000")


def test_one_picture_must_come_in_a_list(run):
    run_dir, _, _, files = run
    net = alexcli.load(run_dir, devices="cpu")
    for single in (files[0], str(files[0]), files[0].read_bytes()):
        with pytest.raises(TypeError, match="pictures is a list"):
            net.predict(single)
