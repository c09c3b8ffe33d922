"""core/rundir.py: a run's paths, and its metrics.jsonl read tolerantly, by the one reader
that train, viz-curves, ablate and TensorBoard share."""

from __future__ import annotations

import json

import pytest

from alexcli.core.rundir import RunDir, read_metrics
from alexcli.errors import FormatError


def _lines(n):
    return [json.dumps({"epoch": e, "train_loss": 7.0 / e, "lr": 0.01}) for e in range(1, n + 1)]


def test_the_paths_of_a_run(tmp_path):
    run = RunDir(tmp_path)
    assert run.last == tmp_path / "checkpoints" / "last.pt"
    assert run.best.parent == run.checkpoints and run.job.name == "torchrun-job"
    assert not run.holds_a_run() and not run.unfinished() and run.metrics().records == []
    run.checkpoints.mkdir()
    run.config.write_text("{}")
    assert run.holds_a_run() and run.unfinished()
    run.manifest.write_text("{}")
    assert not run.unfinished()


def test_a_cut_last_line_is_left_out_and_said(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(_lines(3)) + '\n{"epoch": 4, "train_lo')
    m = read_metrics(path)
    assert [r["epoch"] for r in m.records] == [1, 2, 3] and m.partial_line
    assert RunDir(tmp_path).metrics() == m


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", '{"train_loss": 1.0}', '{"epoch": "x"}'])
def test_a_bad_line_before_the_last_names_the_file_and_line(tmp_path, bad):
    lines = _lines(4)
    lines[1] = bad
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=r"metrics.jsonl:2"):
        read_metrics(path)


def test_a_repeated_epoch_keeps_its_last_record_in_epoch_order(tmp_path):
    lines = _lines(3)
    again = json.loads(lines[1]) | {"train_loss": 0.5}
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([*lines, json.dumps(again)]) + "\n")
    records = read_metrics(path).records
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[1]["train_loss"] == 0.5
