"""core/figures/curves.py: metrics.jsonl's records laid out, lr drops found, PNG and SVG."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from alexcli.core.figures.canvas import write_figure
from alexcli.core.figures.curves import (
    COLOURS,
    Epoch,
    epochs_of,
    lr_drops,
    plot,
    sparkline,
    summary_rows,
)
from alexcli.core.rundir import read_metrics

SVG = "{http://www.w3.org/2000/svg}"


def metrics_lines(lrs):
    """One record per epoch (1-based) with falling loss and error."""
    return [
        json.dumps(
            {
                "epoch": e,
                "train_loss": 7.0 / e,
                "val_top1_error": 0.9 - 0.02 * e,
                "val_top5_error": 0.7 - 0.02 * e,
                "lr": lr,
                "images_per_s": 100.0,
            }
        )
        for e, lr in enumerate(lrs, 1)
    ]


LRS = [0.01] * 4 + [0.001] * 3 + [0.0001] * 2  # drops before epochs 5 and 8


@pytest.fixture
def metrics_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(metrics_lines(LRS)) + "\n")
    return path


def epochs(path):
    return epochs_of(read_metrics(path).records)


def test_takes_every_epoch_and_finds_the_drops(metrics_file):
    m = epochs(metrics_file)
    assert [e.epoch for e in m] == list(range(1, 10))
    assert m[0].train_loss == 7.0 and m[2].lr == 0.01
    drops = lr_drops(m)
    assert [(d.epoch, d.before, d.after) for d in drops] == [(5, 0.01, 0.001), (8, 0.001, 0.0001)]


def test_a_repeated_epoch_keeps_the_last_record_and_nulls_are_missing(tmp_path):
    lines = metrics_lines([0.01, 0.01, 0.01])
    again = json.loads(lines[2]) | {"train_loss": 0.5, "val_top5_error": None}
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([*lines, json.dumps(again)]) + "\n")
    drawn = epochs(path)
    assert len(drawn) == 3 and drawn[2].train_loss == 0.5 and drawn[2].val_top5_error is None


def test_a_warm_up_is_not_a_drop():
    epochs = [Epoch(e, lr=lr) for e, lr in enumerate([0.002, 0.006, 0.01, 0.01, 0.001], 1)]
    assert [d.epoch for d in lr_drops(epochs)] == [5]


def test_png_has_the_size_and_draws_each_series(metrics_file, tmp_path):
    out = tmp_path / "curves.png"
    write_figure(plot(epochs(metrics_file), width=640, height=480), out)
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (640, 480) and image.mode == "RGB"
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    for name, colour in COLOURS.items():
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        near = (np.abs(pixels - rgb).max(axis=1) <= 24).sum()  # lines are antialiased
        assert near > 200, f"{name} is not drawn"


def test_svg_has_one_polyline_per_series_and_a_rule_per_drop(metrics_file, tmp_path):
    out = tmp_path / "curves.svg"
    write_figure(plot(epochs(metrics_file)), out)
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg" and root.get("width") == "900"
    polylines = {p.get("data-series"): p.get("points") for p in root.iter(f"{SVG}polyline")}
    assert set(polylines) == {"train_loss", "val_top1_error", "val_top5_error"}
    for name, points in polylines.items():
        xy = [tuple(map(float, p.split(","))) for p in points.split()]
        assert len(xy) == 9, name
        xs, ys = zip(*xy, strict=True)
        assert list(xs) == sorted(xs), "epochs left to right"
        assert list(ys) == sorted(ys), "falling values: each point lower on the page"
    dashed = [ln for ln in root.iter(f"{SVG}line") if ln.get("stroke-dasharray")]
    assert len(dashed) == 2 * 2 + 1, "each drop in both panels, plus the legend's sample"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "lr 0.001" in texts and "lr 0.0001" in texts


def test_the_drop_rule_sits_at_the_last_epoch_before_the_new_rate(metrics_file, tmp_path):
    fig = plot(epochs(metrics_file))
    loss = next(p for p in fig.polylines if p.series == "train_loss")
    x_epoch4 = loss.points[3][0]
    rules = [ln for ln in fig.lines if ln.dashed and ln.start[0] == ln.end[0]]
    assert any(ln.start[0] == x_epoch4 for ln in rules)


def test_a_missing_value_leaves_a_point_out(tmp_path):
    lines = metrics_lines([0.01] * 4)
    rec = json.loads(lines[1]) | {"val_top1_error": None}
    lines[1] = json.dumps(rec)
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n")
    fig = plot(epochs(path))
    counts = {p.series: len(p.points) for p in fig.polylines}
    assert counts == {"train_loss": 4, "val_top1_error": 3, "val_top5_error": 4}


def test_one_epoch_plots():
    fig = plot([Epoch(1, 2.0, 0.5, 0.3, 0.01)])
    assert all(len(p.points) == 1 for p in fig.polylines)


def test_sparkline():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, None, 1.0]) == "▁ ▁"
    # 10 bins of 10: means 4.5 … 94.5, i.e. levels 7k/9 rounded: 0 1 2 2 3 4 5 5 6 7
    assert sparkline([float(i) for i in range(100)], width=10) == "▁▂▃▃▄▅▆▆▇█"
    assert len(sparkline(list(range(1000)), width=40)) == 40


def test_summary_rows_keep_first_last_best_and_drops():
    assert summary_rows([Epoch(e) for e in range(1, 6)], limit=20) == [0, 1, 2, 3, 4]
    epochs = [
        Epoch(e, val_top1_error=0.1 if e == 40 else 0.5, lr=0.01 if e < 30 else 0.001)
        for e in range(1, 91)
    ]
    rows = summary_rows(epochs, limit=12)
    assert len(rows) == 12 and rows == sorted(set(rows))
    assert {0, 89, 39, 28, 29} <= set(rows)  # first, last, best (epoch 40), drop at 30
