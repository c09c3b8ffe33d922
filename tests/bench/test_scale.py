"""The scale rehearsal's pieces: ILSVRC-2012's counts, the source it writes (which
prepare reads as ILSVRC-2012, from the tree and from the archives alike), the watch on a
command's processes, and the report's verdicts."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from alexcli.bench.scale import (
    CLASSES,
    PLAN_BYTES,
    ScaleReport,
    StageRun,
    Usage,
    fastest,
    scaled_counts,
    train_counts,
    watching,
    write_source,
)


def test_the_training_counts_are_ilsvrc_2012s_range_and_total():
    counts = train_counts()
    assert len(counts) == 1000 and counts.sum() == 1_281_167
    assert counts.min() == 732 and counts.max() == 1300
    assert (counts == 1300).mean() > 0.8  # most classes are full, as in ILSVRC-2012
    assert np.array_equal(train_counts(), counts)  # seeded


def test_a_fraction_keeps_every_class():
    train, val = scaled_counts(0.01)
    assert len(train) == CLASSES and train.min() >= 7 and 12_700 < train.sum() < 12_900
    assert val == 500
    tiny, _ = scaled_counts(0.0001)
    assert tiny.min() == 1


def test_the_source_is_ilsvrc_2012_as_extracted_and_as_downloaded(tmp_path):
    from alexcli.config import PrepareConfig
    from alexcli.stages.prepare import run_prepare

    write_source(tmp_path / "src", 0.0004, side=8, pool=1)
    cfg = PrepareConfig(size=16, jobs=1)
    a = run_prepare(tmp_path / "src" / "archives", tmp_path / "a", cfg)
    b = run_prepare(tmp_path / "src" / "tree", tmp_path / "b", cfg)
    assert a.layout.startswith("ilsvrc2012") and a.fingerprint == b.fingerprint
    assert a.images == b.images == {"train": 1000, "val": 20}
    assert a.classes == 1000 and not a.skipped


def test_the_watch_sees_a_commands_memory_and_open_files(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, time
        block = bytearray(300 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        files = [open("{tmp_path}/f%d" % i, "w") for i in range(60)]
        time.sleep(1.5)
        """
    )
    with (
        subprocess.Popen([sys.executable, "-c", script]) as proc,
        watching(proc.pid, every=0.1) as usage,
    ):
        proc.wait()
    assert usage.anon >= 300 << 20 and usage.fds >= 60 and usage.processes == 1


def _run(stage, fraction, images, seconds, anon, ok=True):
    return StageRun(stage, fraction, images, seconds, Usage(anon=anon), ok)


def test_the_report_passes_only_when_every_ratio_and_growth_holds():
    runs = [
        _run("stats", 0.01, 100, 1.0, 100 << 20),
        _run("stats", 1.0, 10_000, 110.0, 150 << 20),
        _run("train", 0.01, 100, 1.0, 300 << 20),
        _run("train", 1.0, 10_000, 90.0, 400 << 20),
    ]
    report = ScaleReport(runs)
    assert report.ratio("stats", 0.01) == pytest.approx(100 / 110 / 100 * 100)
    assert report.growth("train") == pytest.approx(4 / 3)
    assert report.passed()
    slow = ScaleReport([*runs[:3], _run("train", 1.0, 10_000, 200.0, 400 << 20)])
    assert slow.ratio("train", 0.01) == pytest.approx(0.5) and not slow.passed()
    leaky = ScaleReport([*runs[:3], _run("train", 1.0, 10_000, 90.0, 700 << 20)])
    assert not leaky.passed()
    failed = ScaleReport([*runs[:3], _run("train", 1.0, 10_000, 90.0, 400 << 20, ok=False)])
    assert not failed.passed() and failed.to_json()["passed"] is False


def test_prepare_may_grow_by_its_plan_and_no_more():
    """prepare's process holds a plan of every image: judged by the bytes it gains per
    image added (< PLAN_BYTES), not by the 2× of the stages that hold nothing per image."""
    small = _run("prepare (archives)", 0.01, 13_000, 3.0, 45 << 20)
    planned = ScaleReport([small, _run("prepare (archives)", 1.0, 1_331_000, 250.0, 312 << 20)])
    assert planned.growth("prepare (archives)") > 2
    assert planned.bytes_per_image("prepare (archives)") == pytest.approx((267 << 20) / 1_318_000)
    assert planned.passed()
    objects = ScaleReport([small, _run("prepare (archives)", 1.0, 1_331_000, 250.0, 863 << 20)])
    assert objects.bytes_per_image("prepare (archives)") > PLAN_BYTES and not objects.passed()


def test_a_short_stage_is_timed_again_and_its_fastest_run_kept():
    """A stage of a few seconds is timed up to three times (the fastest run's rate, the
    highest peak of memory of any); a long one once; a failure ends the tries and is what
    the report sees."""
    seconds = iter([(5.0, 3 << 20), (3.0, 1 << 20), (4.0, 2 << 20), (9.0, 1)])
    calls = []

    def measure():
        calls.append(1)
        took, anon = next(seconds)
        return _run("stats", 0.01, 100, took, anon)

    kept = fastest(measure, tries=3, short=20.0)
    assert kept.seconds == 3.0 and len(calls) == 3
    assert kept.usage.anon == 3 << 20  # the rate of the fastest, the peak of them all
    long = fastest(lambda: _run("stats", 1.0, 100, 30.0, 1 << 20), tries=3, short=20.0)
    assert long.seconds == 30.0
    runs = iter([_run("stats", 0.01, 100, 2.0, 1), _run("stats", 0.01, 100, 1.0, 1, ok=False)])
    assert not fastest(lambda: next(runs), tries=3, short=20.0).ok


def test_bench_scale_refuses_fractions_that_are_not_fractions(cli, tmp_path):
    r = cli("bench", "--scale", tmp_path, "--fractions", "0.1,2")
    assert r.code == 2 and "--fractions" in r.err
    once = cli("bench", "--scale", tmp_path, "--fractions", "1,1")  # nothing to judge against
    assert once.code == 2 and "at least two different fractions" in once.err
    assert not any(tmp_path.iterdir())
