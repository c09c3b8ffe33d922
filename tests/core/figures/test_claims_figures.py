"""The ablation study's figures put each number where its axis says."""

from __future__ import annotations

import pytest

from alexcli.core.figures.canvas import to_svg
from alexcli.core.figures.claims import GREY, RELU, TANH, Effect, effects, figure1


def test_an_effect_is_a_dot_at_its_mean_between_its_interval_ends():
    fig = effects([Effect("no-lrn: top-1", 2.0, 1.0, 1.4), Effect("views", -0.5, None, None)])
    (dot, dot2) = [p for p in fig.polylines if p.series == "effect"]
    x_mean = (dot.points[0][0] + dot.points[1][0]) / 2
    bar = next(ln for ln in fig.lines if ln.colour == RELU and ln.start[1] == ln.end[1])
    lo, hi = bar.start[0], bar.end[0]
    assert x_mean - lo == pytest.approx(hi - x_mean, abs=0.2)  # ± the half width
    zero = next(t.at[0] for t in fig.texts if t.text == "0")  # the axis' 0 label
    unit = (x_mean - zero) / 2.0  # pixels per percentage point
    assert hi - lo == pytest.approx(2 * 1.0 * unit, rel=1e-2)
    paper = next(ln for ln in fig.lines if ln.colour == GREY)
    assert paper.start[0] - zero == pytest.approx(1.4 * unit, rel=1e-2)
    x2 = (dot2.points[0][0] + dot2.points[1][0]) / 2  # one seed: a dot, no bar
    assert x2 - zero == pytest.approx(-0.5 * unit, rel=1e-2)
    assert sum(1 for ln in fig.lines if ln.colour == RELU and ln.width == 2) == 3  # 1 bar, 2 caps
    assert "no-lrn: top-1" in to_svg(fig)


def test_figure1_draws_each_seed_and_the_mean_with_the_threshold():
    relu = [[0.9, 0.5, 0.2], [0.9, 0.4, 0.2]]
    tanh = [[0.9, 0.7, 0.4]]
    fig = figure1(relu, tanh, threshold=0.25)
    thick = {p.series: p for p in fig.polylines if p.width == 3}
    assert set(thick) == {"relu", "tanh"} and thick["tanh"].points == next(
        p.points for p in fig.polylines if p.series == "tanh-seed"
    )
    ys = [y for _, y in thick["relu"].points]
    seed_ys = [[y for _, y in p.points] for p in fig.polylines if p.series == "relu-seed"]
    assert ys == pytest.approx([(a + b) / 2 for a, b in zip(*seed_ys, strict=True)], abs=0.1)
    threshold = next(ln for ln in fig.lines if ln.dashed)
    y0, y9 = thick["relu"].points[0][1], ys[0]  # 0.9 at epoch 0
    assert y0 == y9 and thick["tanh"].colour == TANH and thick["relu"].colour == RELU
    bottom = max(ln.start[1] for ln in fig.lines)  # the frame's bottom edge: error 0
    assert (bottom - threshold.start[1]) / (bottom - y0) == pytest.approx(0.25 / 0.9, rel=1e-2)
