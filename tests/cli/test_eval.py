"""eval's table at ImageNet's class count: a thousand classes in a dozen lines, the
hardest and the easiest named, every class still in --json."""

from __future__ import annotations

from alexcli.cli.eval import _show_classes
from alexcli.stages.eval import ClassError


def test_a_thousand_classes_print_the_hardest_easiest_and_median(capsys):
    classes = [
        ClassError(k, f"n{k:08d}", f"class {k}", 50, ((k * 37) % 1000) / 1000) for k in range(1000)
    ]
    _show_classes(classes)
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 25
    by_error = sorted(classes, key=lambda c: -(c.top1_error or 0))
    for c in (*by_error[:5], *by_error[-5:]):
        assert c.name in out
    assert by_error[5].name not in out and by_error[-6].name not in out
    assert "median 49.95 %" in out and "1,000 classes" in out


def test_a_few_classes_print_the_hardest_only(capsys):
    classes = [ClassError(k, f"n{k:08d}", f"class {k}", 5, k / 10) for k in range(8)]
    _show_classes(classes)
    out = capsys.readouterr().out
    assert "hardest classes" in out and "median" not in out
    assert all(f"n{k:08d}" in out for k in (3, 4, 5, 6, 7))
    assert not any(f"n{k:08d}" in out for k in (0, 1, 2))
