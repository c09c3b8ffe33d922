"""A DATA_DIR of JPEG records (`prepare --encoding jpeg`) through every stage after it,
by the CLI: stats (within 2 grey levels of the raw DATA_DIR's mean image), train with a
loader worker decoding, eval, neighbors and `prepare --verify`; and a damaged record is
one line naming its shard and image in train and eval, in a worker or not."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from alexcli.core.data.stats import read_stats
from tests.train_helpers import TINY

SETS = [a for s in (*TINY, "epochs=1") for a in ("--set", s)]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """The same tree prepared raw and as JPEG records, each with its stats; and a run
    trained on the JPEG one."""
    from alexcli.cli import main
    from alexcli.core.data.synthetic import make_tree

    root = tmp_path_factory.mktemp("jpeg")
    tree = make_tree(
        root / "src", classes=4, train_per_class=16, val_per_class=4, size_range=(80, 140)
    )
    for name, extra in (("raw", []), ("jpeg", ["--encoding", "jpeg", "--quality", "90"])):
        assert main(["prepare", str(tree.root), str(root / name), "--size", "72", *extra]) == 0
        assert main(["stats", str(root / name)]) == 0
    assert main(["train", str(root / "jpeg"), str(root / "run"), "--preset", "small", *SETS]) == 0
    return tree.root, root


def test_prepare_records_the_encoding_and_the_shards_are_a_fraction_of_raw(dirs):
    _, root = dirs
    raw = json.loads((root / "raw" / "manifest.json").read_text())
    jpeg = json.loads((root / "jpeg" / "manifest.json").read_text())
    assert raw["encoding"] == "raw" and "quality" not in raw
    assert jpeg["encoding"] == "jpeg" and jpeg["quality"] == 90
    assert jpeg["fingerprint"] != raw["fingerprint"]
    assert jpeg["splits"]["train"]["images"] == raw["splits"]["train"]["images"] == 64
    for split in ("train", "val"):  # the same images, in the same order, with the same labels
        for a, b in zip(
            raw["splits"][split]["shards"], jpeg["splits"][split]["shards"], strict=True
        ):
            with (
                h5py.File(root / "raw" / a["path"]) as fa,
                h5py.File(root / "jpeg" / b["path"]) as fb,
            ):
                assert list(fa["paths"].asstr()[:]) == list(fb["paths"].asstr()[:])
                assert list(fa["labels"][:]) == list(fb["labels"][:])
    assert jpeg["bytes"] < raw["bytes"] / 3


def test_stats_of_jpeg_records_are_within_two_grey_levels_of_raw(dirs):
    _, root = dirs
    raw, jpeg = read_stats(root / "raw" / "stats.h5"), read_stats(root / "jpeg" / "stats.h5")
    assert jpeg.images == raw.images == 64
    # Each image's JPEG error averages out over the images: on 64 noisy ones a few edge
    # pixels of the mean still differ by ~3 (on 10,000, none by 0.4: docs/prepare.md).
    differ = np.abs(jpeg.mean - raw.mean)
    assert differ.mean() < 0.5 and np.percentile(differ, 99) <= 2.0
    np.testing.assert_allclose(jpeg.rgb_mean, raw.rgb_mean, atol=0.5)
    np.testing.assert_allclose(jpeg.eigval[0], raw.eigval[0], rtol=0.05)


def test_eval_neighbors_and_verify_read_jpeg_records(cli, dirs, tmp_path):
    source, root = dirs
    data, run = root / "jpeg", root / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and np.isfinite(metrics[0]["train_loss"])
    r = cli("eval", run, data, "--devices", "cpu", "--workers", "1", "--views", "10", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["images"] == 16
    out = tmp_path / "grid.png"
    r = cli(
        "neighbors",
        run,
        data,
        "--out",
        out,
        "--queries",
        "2",
        "--k",
        "3",
        "--devices",
        "cpu",
        "--workers",
        "0",
        "--json",
    )
    assert r.code == 0, r.err and out.stat().st_size > 0
    r = cli("prepare", source, data, "--size", "72", "--encoding", "jpeg", "--verify", "--json")
    assert r.code == 0 and json.loads(r.out)["up_to_date"], r.err


def _record(path, i):
    """The byte range of JPEG record i in the shard file."""
    with h5py.File(path, "r") as f:
        base, offsets = f["jpeg"].id.get_offset(), f["offsets"][:]
    return base + int(offsets[i]), base + int(offsets[i + 1])


def _in_place(path, i, change):
    a, b = _record(path, i)
    data = bytearray(path.read_bytes())
    data[a:b] = change(bytes(data[a:b]))
    path.write_bytes(bytes(data))


def _cut_short(path, i):
    """Record i loses its last 20 bytes; the offsets after it follow (a consistent shard)."""
    with h5py.File(path, "r+") as f:
        data, offsets = f["jpeg"][:], f["offsets"][:]
        kept = np.concatenate([data[: offsets[i + 1] - 20], data[offsets[i + 1] :]])
        offsets[i + 1 :] -= 20
        del f["jpeg"]
        f.create_dataset("jpeg", data=kept)
        f["offsets"][:] = offsets


DAMAGE = {
    "cut short": _cut_short,
    "flipped": lambda path, i: _in_place(
        path, i, lambda r: r[:30] + bytes(x ^ 0xFF for x in r[30:34]) + r[34:]
    ),
    "zeroed": lambda path, i: _in_place(path, i, lambda r: bytes(len(r))),
}


@pytest.mark.parametrize("workers", ["0", "1"])
@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_record_is_one_line_naming_shard_and_image(
    cli, dirs, tmp_path, damage, command, workers
):
    _, root = dirs
    copy = tmp_path / "data"
    shutil.copytree(root / "jpeg", copy)
    split = "val" if command == "eval" else "train"
    bad = sorted((copy / split).glob("*.h5"))[-1]
    with h5py.File(bad) as f:
        last = int(f.attrs["count"]) - 1
    DAMAGE[damage](bad, last)
    args = {
        "train": (
            "train",
            copy,
            tmp_path / "run",
            "--preset",
            "small",
            *SETS,
            "--set",
            f"workers={workers}",
        ),
        "eval": (
            "eval",
            root / "run",
            copy,
            "--devices",
            "cpu",
            "--workers",
            workers,
            "--views",
            "1",
        ),
    }[command]
    r = cli(*args)
    assert r.code != 0 and "Traceback" not in r.err, r.err
    errors = [ln for ln in r.err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.err
    assert bad.name in errors[0] and f"unreadable image {last}" in errors[0], errors[0]
    assert "--verify" in r.err
