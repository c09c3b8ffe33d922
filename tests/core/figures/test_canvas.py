"""core/figures/canvas.py: the primitives drawn as PNG and SVG, the panel's mapping, ticks."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from alexcli.core.figures.canvas import (
    MARKERS_UP_TO,
    Figure,
    Line,
    Panel,
    Polyline,
    Text,
    nice_ticks,
    to_svg,
    write_figure,
)

SVG = "{http://www.w3.org/2000/svg}"


def small_figure(points: int = 3) -> Figure:
    fig = Figure(200, 100)
    fig.lines.append(Line((10, 50), (190, 50), "#00ff00", width=2, dashed=True))
    fig.polylines.append(
        Polyline("s", [(10 + 180 * i / max(points - 1, 1), 20.0) for i in range(points)], "#ff0000")
    )
    fig.texts.append(Text((100, 90), "a < b & c", anchor="ms"))
    return fig


def test_panel_maps_the_data_ranges_onto_its_pixels():
    panel = Panel(left=10, top=20, right=110, bottom=220, x_range=(0, 10), y_range=(0, 1))
    assert panel.at(0, 0) == (10, 220) and panel.at(10, 1) == (110, 20)
    assert panel.at(5, 0.25) == (60, 170)  # y grows upwards on the page


def test_svg_draws_each_primitive_and_escapes_text(tmp_path):
    write_figure(small_figure(), tmp_path / "f.svg")
    root = ET.parse(tmp_path / "f.svg").getroot()
    assert (root.get("width"), root.get("height")) == ("200", "100")
    (line,) = root.iter(f"{SVG}line")
    assert line.get("stroke-dasharray") == "6 4" and line.get("stroke-width") == "2"
    (poly,) = root.iter(f"{SVG}polyline")
    assert poly.get("data-series") == "s" and poly.get("points") == "10,20 100,20 190,20"
    assert len(list(root.iter(f"{SVG}circle"))) == 3  # a dot on each point
    (text,) = root.iter(f"{SVG}text")
    assert text.text == "a < b & c" and text.get("text-anchor") == "middle"


def test_a_long_series_has_no_dots():
    svg = to_svg(small_figure(points=MARKERS_UP_TO + 1))
    assert "<circle" not in svg and "<polyline" in svg


def test_png_draws_the_colours_where_the_primitives_are(tmp_path):
    write_figure(small_figure(), tmp_path / "f.png")
    image = Image.open(tmp_path / "f.png")
    assert image.format == "PNG" and image.size == (200, 100) and image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    assert (pixels[20, 30:170] == [255, 0, 0]).all()  # the polyline's row
    row = (pixels[50, 10:190] == [0, 255, 0]).all(axis=1)
    assert 0.4 < row.mean() < 0.8, "the rule is dashed: 6 pixels on, 4 off"
    assert (pixels[0, 0] == 255).all()  # a white background


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        write_figure(Figure(10, 10), tmp_path / "c.jpg")
    assert not (tmp_path / "c.jpg").exists()


def test_nice_ticks_cover_the_range_in_round_steps():
    assert nice_ticks(0.13, 0.92) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(1, 90, count=8, integer=True) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(1, 3, count=8, integer=True) == [1, 2, 3]
    ticks = nice_ticks(2.5, 2.5)
    assert ticks[0] <= 2.5 <= ticks[-1] and len(ticks) >= 2
