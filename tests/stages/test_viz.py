"""`alexcli viz-kernels` and `alexcli viz-curves` end to end, from a real checkpoint
(core/nn/model.build_model + core/nn/checkpoint.save_checkpoint) and a small metrics file."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image

from alexcli.config import PRESETS, merge
from alexcli.core.nn.checkpoint import Checkpoint, save_checkpoint
from alexcli.core.nn.model import build_model


def make_checkpoint(path, towers=2):
    """The `small` preset's network (32 conv1 kernels 11×11) with tower 1's kernels grey
    (R = G = B) and tower 2's colour-opponent (R = −G), saved as `train` saves it."""
    cfg = merge(PRESETS["small"], {"model": {"towers": towers}}, "test")
    model = build_model(cfg.model)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for i, tower in enumerate(model.tower_list):
            w = tower.conv1.weight
            g = torch.from_numpy(rng.normal(0, 0.01, (w.shape[0], 1, *w.shape[2:]))).float()
            colour = torch.cat([g, -g, torch.zeros_like(g)], 1)
            w.copy_(colour if i == 1 else g.expand_as(w))
    save_checkpoint(
        path,
        Checkpoint(
            config=cfg,
            classes=[{"name": "n0", "words": "zero"}],
            size=128,
            mean=np.zeros((128, 128, 3)),
            eigval=np.ones(3),
            eigvec=np.eye(3),
            weights=model.state_dict(),
            epoch=7,
        ),
    )
    return model.conv1_weight().numpy()


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    weights = make_checkpoint(run / "checkpoints" / "last.pt")
    lines = [
        {
            "epoch": e,
            "train_loss": 3 / e,
            "val_top1_error": 0.8 - 0.05 * e,
            "val_top5_error": 0.5 - 0.05 * e,
            "lr": 0.01 if e < 4 else 0.001,
            "images_per_s": 50.0,
        }
        for e in range(1, 7)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run, weights


def test_viz_kernels_writes_the_grid_and_measures_colour(cli, run_dir, tmp_path):
    run, weights = run_dir
    out = tmp_path / "fig3.png"
    r = cli("viz-kernels", run, "--out", out)
    assert r.code == 0, r.err
    image = np.asarray(Image.open(out).convert("RGB"))
    # 32 kernels 11×11, 16 per tower in one row of 16, scale 4 → 44-px tiles, 2-px gaps
    assert image.shape == (2 * (2 + 46) + 12, 2 + 16 * 46, 3)
    k = weights[16].astype(np.float64)  # tower 2's first kernel: below the band
    ref = np.rint((k - k.min()) / (k.max() - k.min()) * 255).astype(np.uint8)
    tile = image[48 + 12 + 2 : 48 + 12 + 2 + 44 : 4, 2 : 2 + 44 : 4]
    np.testing.assert_array_equal(tile, ref.transpose(1, 2, 0))
    table = [line.split("│") for line in r.out.splitlines() if line.startswith("│")]
    means = {row[1].strip(): float(row[3]) for row in table}
    assert means == {"1": 0.0, "2": 1.0}  # grey tower 1, pure colour tower 2
    assert "fig3.png" in r.out and "epoch 7" in r.out


def test_viz_kernels_json_and_one_tower(cli, tmp_path):
    make_checkpoint(tmp_path / "one.pt", towers=1)
    r = cli("viz-kernels", tmp_path / "one.pt", "--out", tmp_path / "k.png", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert (result["towers"], result["kernels"], result["kernel_size"]) == (1, 32, 11)
    assert len(result["colour"]) == 1
    assert Image.open(tmp_path / "k.png").size == (result["width"], result["height"])
    assert result["height"] == 2 + 2 * 46  # one block: 32 kernels, two rows of 16


def test_viz_curves_png_and_the_terminal_table(cli, run_dir, tmp_path):
    run, _ = run_dir
    r = cli("viz-curves", run, "--out", tmp_path / "c.png")
    assert r.code == 0, r.err
    assert Image.open(tmp_path / "c.png").size == (900, 620)
    rows = [line.split("│") for line in r.out.splitlines() if line.startswith("│")]
    assert [row[1].strip() for row in rows] == ["1", "2", "3", "4", "5", "6"]
    assert "↓" in rows[3][2] and "↓" not in rows[2][2]
    assert "lr drops at: 4" in r.out and "train loss" in r.out


def test_viz_curves_svg_from_a_run_in_progress(cli, run_dir, tmp_path):
    run, _ = run_dir
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 7, "train_loss": 0.4')
    out = tmp_path / "c.svg"
    r = cli("viz-curves", run / "checkpoints" / "last.pt", "--out", out, "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert len(result["epochs"]) == 6 and result["partial_line"]
    assert [d["epoch"] for d in result["drops"]] == [4]
    polylines = ET.parse(out).getroot().iter("{http://www.w3.org/2000/svg}polyline")
    assert [len(p.get("points").split()) for p in polylines] == [6, 6, 6]


def test_viz_curves_leaves_out_values_that_are_not_finite(cli, run_dir, tmp_path):
    """Python's json writes NaN and Infinity (a diverged run, another tool's log): such a
    value is a gap in its curve, not an "unexpected ValueError"."""
    run, _ = run_dir
    text = (run / "metrics.jsonl").read_text()
    text = text.replace('"train_loss": 1.5,', '"train_loss": NaN,')
    text = text.replace('"val_top1_error": 0.65,', '"val_top1_error": Infinity,')
    (run / "metrics.jsonl").write_text(text)
    r = cli("viz-curves", run, "--out", tmp_path / "c.png", "--json")
    assert r.code == 0, r.err
    epochs = json.loads(r.out)["epochs"]
    assert epochs[1]["train_loss"] is None and epochs[2]["val_top1_error"] is None
    assert epochs[0]["train_loss"] == 3.0 and Image.open(tmp_path / "c.png").size == (900, 620)


def _one_line_error(r, *words):
    assert r.code == 2
    assert "Traceback" not in r.err
    first = r.err.splitlines()[0]
    assert first.startswith("error: ")
    for word in words:
        assert word in first, (word, first)


def test_missing_run_dir(cli, tmp_path):
    missing = tmp_path / "nope"
    _one_line_error(cli("viz-kernels", missing, "--out", tmp_path / "k.png"), "nope")
    _one_line_error(cli("viz-curves", missing, "--out", tmp_path / "c.png"), "nope")


def test_no_metrics_and_no_checkpoint(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(cli("viz-curves", tmp_path / "empty", "--out", tmp_path / "c.png"), "metrics")
    _one_line_error(cli("viz-kernels", tmp_path / "empty", "--out", tmp_path / "k.png"), "best.pt")


def test_a_file_that_is_not_a_checkpoint(cli, tmp_path):
    fake = tmp_path / "model.pt"
    fake.write_text("hello")
    _one_line_error(cli("viz-kernels", fake, "--out", tmp_path / "k.png"), "model.pt")
    assert not (tmp_path / "k.png").exists()


def test_an_out_that_cannot_be_written(cli, run_dir, tmp_path):
    run, _ = run_dir
    (tmp_path / "a-file").write_text("")
    _one_line_error(cli("viz-curves", run, "--out", tmp_path / "a-file" / "c.png"), "a-file")
    _one_line_error(cli("viz-kernels", run, "--out", tmp_path / "a-file" / "k.png"), "a-file")


def test_a_wrong_picture_suffix(cli, run_dir, tmp_path):
    run, _ = run_dir
    _one_line_error(cli("viz-curves", run, "--out", tmp_path / "c.gif"), ".png", ".svg")
    _one_line_error(cli("viz-kernels", run, "--out", tmp_path / "k.svg"), ".png")
