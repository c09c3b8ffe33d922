"""`alexcli predict`: any image file through prepare's resize, then the views; top-5
classes with words and probabilities; unreadable files one line each."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from alexcli.core.data.decode import load_image
from tests.eval_helpers import CROP, SIZE, class_list, photo, reference_probs, save_run, tiny_config


@pytest.mark.parametrize("views", [1, 10])
def test_predict_matches_a_direct_forward_of_prepares_resize(cli, tmp_path, views):
    model, mean = save_run(tmp_path / "run.pt")
    files = [photo(tmp_path / "wide.png", 90, 52), photo(tmp_path / "tall.jpg", 47, 80, 1)]
    r = cli("predict", tmp_path / "run.pt", *files, "--views", views, "--json", "--devices", "cpu")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["views"] == views and len(report["predictions"]) == 2
    # the reference: prepare's own decode + resize, then the patches by hand
    images = np.stack([load_image(f, SIZE) for f in files])
    want = reference_probs(model, images, mean, CROP, views)
    for p, probs in zip(report["predictions"], want, strict=True):
        assert p["error"] is None
        order = np.argsort(-probs)[:5]
        assert [g["index"] for g in p["top5"]] == list(order)
        assert [g["name"] for g in p["top5"]] == [f"n{i:08d}" for i in order]
        np.testing.assert_allclose([g["probability"] for g in p["top5"]], probs[order], atol=1e-6)


def test_predict_gives_the_known_answer_of_a_network_that_only_has_biases(cli, tmp_path):
    """fc8's weights zero: the probabilities are softmax(fc8's biases), whatever the
    image. Tower 1 holds classes 0–3, tower 2 classes 4–7 (the logits' order)."""
    cfg = tiny_config(num_classes=8)
    bias = torch.tensor([0.0, 1.0, 3.0, -1.0, 2.5, 0.5, 4.0, 2.0])
    classes = [
        {"name": f"n{i:08d}", "words": w}
        for i, w in enumerate(
            [
                "tench",
                "goldfish",
                "great white shark",
                "tiger shark",
                "hammerhead",
                "electric ray",
                "stingray",
                "cock",
            ]
        )
    ]
    from alexcli.core.nn.checkpoint import load_checkpoint, save_checkpoint

    save_run(tmp_path / "run.pt", cfg, classes=classes)
    ckpt = load_checkpoint(tmp_path / "run.pt")
    state = dict(ckpt.weights)
    for t, part in enumerate(bias.split(4)):
        state[f"towers.{t}.fc8.weight"] = torch.zeros_like(state[f"towers.{t}.fc8.weight"])
        state[f"towers.{t}.fc8.bias"] = part
    save_checkpoint(tmp_path / "bias.pt", dataclasses.replace(ckpt, weights=state))
    image = photo(tmp_path / "any.png", 64, 64)
    r = cli("predict", tmp_path / "bias.pt", image, "--devices", "cpu")
    assert r.code == 0, r.err
    p = torch.softmax(bias.double(), 0).numpy()
    # top-5 by hand: stingray 4.0, great white 3.0, hammerhead 2.5, cock 2.0, goldfish 1.0
    for words, i in [
        ("stingray", 6),
        ("great white shark", 2),
        ("hammerhead", 4),
        ("cock", 7),
        ("goldfish", 1),
    ]:
        assert words in r.out and f"{100 * p[i]:.2f} %" in r.out
    rows = [line for line in r.out.splitlines() if line.startswith("│")]
    assert [row.split("│")[3].strip() for row in rows] == [
        "stingray",
        "great white shark",
        "hammerhead",
        "cock",
        "goldfish",
    ]
    assert "tench" not in r.out


def test_unreadable_images_are_one_line_each_and_the_rest_are_answered(cli, tmp_path):
    save_run(tmp_path / "run.pt")
    good = photo(tmp_path / "good.png", 50, 60)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(photo(tmp_path / "whole.png", 64, 64).read_bytes()[:300])
    missing = tmp_path / "missing.jpg"
    # --batch-size 2: the last batch has no readable image at all
    r = cli(
        "predict",
        tmp_path / "run.pt",
        text,
        good,
        empty,
        truncated,
        missing,
        "--json",
        "--devices",
        "cpu",
        "--batch-size",
        2,
    )
    assert r.code == 2
    report = json.loads(r.out)
    by_name = {p["path"].rsplit("/", 1)[-1]: p for p in report["predictions"]}
    assert list(by_name) == ["notes.jpg", "good.png", "empty.png", "cut.png", "missing.jpg"]
    assert by_name["good.png"]["error"] is None and len(by_name["good.png"]["top5"]) == 5
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 4 and "Traceback" not in r.err
    for name, reason in [
        ("notes.jpg", "not an image"),
        ("empty.png", "empty file"),
        ("cut.png", "truncated"),
        ("missing.jpg", "unreadable"),
    ]:
        assert any(name in e and reason in e for e in errors), (name, errors)
        assert by_name[name]["top5"] == [] and reason in by_name[name]["error"]
    # without --json: the good image's table, then the four lines, exit 2
    r = cli("predict", tmp_path / "run.pt", good, missing, "--devices", "cpu")
    assert r.code == 2 and "good.png" in r.out and "class " in r.out
    assert sum(line.startswith("error:") for line in r.err.splitlines()) == 1


def test_predict_needs_a_run(cli, tmp_path):
    image = photo(tmp_path / "a.png", 40, 40)
    r = cli("predict", tmp_path / "no-run", image)
    assert r.code == 2 and r.err.startswith("error:") and "no-run" in r.err
    save_run(tmp_path / "run.pt", classes=class_list(8))
    r = cli("predict", tmp_path / "run.pt", image, "--views", "3")
    assert r.code == 2 and "views" in r.err
