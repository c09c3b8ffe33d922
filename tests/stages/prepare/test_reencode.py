"""`alexcli prepare DATA_DIR NEW_DATA_DIR --encoding …` (stages/prepare/reencode.py): a prepared
DATA_DIR converted without its SOURCE, giving what preparing SOURCE in that encoding gives."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from alexcli.stages.datadir import open_data_dir


def prepare(cli, src, out, *args):
    r = cli("prepare", src, out, "--size", "32", "--jobs", "1", "--json", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def _records(data_dir):
    """Every shard's labels, paths and stored bytes (JPEG records or raw pixels)."""
    out = {}
    for path in sorted(data_dir.glob("*/*.h5")):
        with h5py.File(path) as f:
            stored = f["jpeg"][:] if "jpeg" in f else f["images"][:]
            out[path.relative_to(data_dir).as_posix()] = (
                list(f["labels"][:]),
                list(f["paths"].asstr()[:]),
                stored.tobytes(),
            )
    return out


@pytest.fixture(scope="module")
def raw_and_jpeg(synthetic_tree, tmp_path_factory):
    from alexcli.config import PrepareConfig
    from alexcli.stages.prepare import run_prepare

    root = tmp_path_factory.mktemp("reencode")
    for name, encoding in (("raw", "raw"), ("jpeg", "jpeg")):
        run_prepare(
            synthetic_tree.root, root / name, PrepareConfig(size=32, encoding=encoding, jobs=1)
        )
    return root


def test_raw_to_jpeg_gives_what_preparing_the_source_as_jpeg_gives(cli, raw_and_jpeg, tmp_path):
    shutil.copytree(raw_and_jpeg / "raw", tmp_path / "raw")
    source = tmp_path / "raw"
    got = prepare(cli, source, tmp_path / "conv", "--encoding", "jpeg", "--jobs", "2")
    assert got["encoding"] == "jpeg" and got["quality"] == 90 and not got["up_to_date"]
    assert _records(tmp_path / "conv") == _records(raw_and_jpeg / "jpeg")
    old, new = open_data_dir(source), open_data_dir(tmp_path / "conv")
    for key in ("classes", "size", "skipped", "converted", "layout", "source"):
        assert new.manifest[key] == old.manifest[key], key
    assert new.manifest["reencoded_from"]["fingerprint"] == old.fingerprint
    assert new.fingerprint not in (
        old.fingerprint,
        open_data_dir(raw_and_jpeg / "jpeg").fingerprint,
    )
    again = prepare(cli, source, tmp_path / "conv", "--encoding", "jpeg")
    assert again["up_to_date"]
    r = cli("stats", tmp_path / "conv")  # downstream it is a DATA_DIR like any other
    assert r.code == 0, r.err


def test_jpeg_to_raw_is_exactly_what_readers_of_the_jpeg_records_saw(cli, raw_and_jpeg, tmp_path):
    got = prepare(cli, raw_and_jpeg / "jpeg", tmp_path / "back", "--encoding", "raw")
    assert got["encoding"] == "raw" and got["quality"] is None
    jpeg, back = open_data_dir(raw_and_jpeg / "jpeg"), open_data_dir(tmp_path / "back")
    for split in ("train", "val"):
        a, b = jpeg.shard_set(split), back.shard_set(split)
        assert len(a) == len(b) > 0 and list(a.labels()) == list(b.labels())
        for i in range(len(a)):
            np.testing.assert_array_equal(a.image(i), b.image(i))
            assert a.source(i) == b.source(i)


def test_a_rerun_after_a_kill_keeps_finished_shards_and_verify_rewrites_damaged(
    cli, raw_and_jpeg, tmp_path
):
    out = tmp_path / "conv"
    first = prepare(cli, raw_and_jpeg / "raw", out, "--encoding", "jpeg", "--quality", "80")
    shards = sorted(out.glob("*/*.h5"))
    (out / "manifest.json").unlink()  # as a kill before the manifest leaves it
    shards[1].unlink()
    again = prepare(cli, raw_and_jpeg / "raw", out, "--encoding", "jpeg", "--quality", "80")
    assert again["shards_written"] == 1 and again["shards_reused"] == first["shards_written"] - 1
    data = bytearray(shards[0].read_bytes())
    data[-100] ^= 0xFF
    shards[0].write_bytes(bytes(data))
    verified = prepare(
        cli, raw_and_jpeg / "raw", out, "--encoding", "jpeg", "--quality", "80", "--verify"
    )
    assert verified["shards_written"] == 1 and not verified["up_to_date"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{raw}", "{raw}", "--encoding", "jpeg"), "SOURCE is this DATA_DIR"),
        (("{raw}", "{out}"), "holds raw images already: nothing to convert"),
        (("{jpeg}", "{out}", "--encoding", "jpeg"), "JPEG records at quality 90 already"),
        (("{raw}", "{out}", "--encoding", "jpeg", "--classes", "2"), "--classes: SOURCE"),
        (("{raw}", "{out}", "--encoding", "jpeg", "--size", "64"), "--size: SOURCE"),
    ],
)
def test_what_a_conversion_cannot_do_is_one_line(cli, raw_and_jpeg, tmp_path, args, message):
    paths = {"raw": raw_and_jpeg / "raw", "jpeg": raw_and_jpeg / "jpeg", "out": tmp_path / "o"}
    r = cli("prepare", *(a.format(**paths) for a in args))
    assert r.code == 2 and message in r.err.splitlines()[0], r.err
    assert not (tmp_path / "o").exists()


def test_jpeg_to_jpeg_warns_of_the_second_loss(cli, raw_and_jpeg, tmp_path):
    r = cli(
        "prepare",
        raw_and_jpeg / "jpeg",
        tmp_path / "q75",
        "--encoding",
        "jpeg",
        "--quality",
        "75",
        "--jobs",
        "1",
    )
    assert r.code == 0 and "loses detail a second time" in r.err
