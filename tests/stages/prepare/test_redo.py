"""A redo of `prepare` (--force, or new settings) that fails: the DATA_DIR it leaves.

The old manifest stays on disk until the new one replaces it, marked unfinished
(`manifest.json.unfinished`) meanwhile. A redo that fails with an error while the shards
the old manifest lists are still those shards (untouched, or written again the same)
leaves the DATA_DIR as it was: stats and train read it. One that changed a shard, or was
stopped, leaves it unfinished: they refuse it in one line, and a rerun finishes it.
"""

from __future__ import annotations

import errno

import pytest

from alexcli.config import PrepareConfig
from alexcli.core.data.synthetic import make_tree
from alexcli.errors import UserError
from alexcli.stages.datadir import open_data_dir
from alexcli.stages.prepare import run_prepare
from alexcli.stages.prepare import source as prepare

CONFIG = PrepareConfig(size=32, shard_size=8, jobs=1)


@pytest.fixture
def prepared(tmp_path):
    tree = make_tree(
        tmp_path / "src", classes=3, train_per_class=16, val_per_class=4, size_range=(40, 60)
    )
    out = tmp_path / "data"
    run_prepare(tree.root, out, CONFIG)
    return tree.root, out


def _failing_after(monkeypatch, shards: int, error: BaseException) -> None:
    """The redo writes `shards` shards, then meets `error` (a full disk: ENOSPC)."""
    real = prepare.pack_shard
    calls = []

    def pack(*args):
        if len(calls) == shards:
            raise error
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(prepare, "pack_shard", pack)


_FULL = OSError(errno.ENOSPC, "No space left on device", "train/00002.h5")


@pytest.mark.parametrize("written", [0, 2])
def test_a_forced_redo_that_fails_keeps_the_data_dir(prepared, monkeypatch, written):
    """`prepare --force` on a full disk: the shards it wrote again are the same bytes
    (same plan), so the manifest still tells the truth and stays."""
    source, out = prepared
    before = (out / "manifest.json").read_bytes()
    _failing_after(monkeypatch, written, _FULL)
    with pytest.raises(OSError, match="No space"):
        run_prepare(source, out, CONFIG, force=True)
    assert (out / "manifest.json").read_bytes() == before
    assert not (out / "manifest.json.unfinished").exists()
    assert open_data_dir(out).manifest["size"] == 32  # what stats and train read


def test_a_redo_that_changed_a_shard_leaves_the_data_dir_unfinished(prepared, monkeypatch):
    source, out = prepared
    bigger = PrepareConfig(size=40, shard_size=8, jobs=1)
    _failing_after(monkeypatch, 1, _FULL)  # one shard now holds 40-pixel images
    with pytest.raises(OSError):
        run_prepare(source, out, bigger)
    assert (out / "manifest.json.unfinished").exists()
    with pytest.raises(UserError, match="did not finish"):
        open_data_dir(out)
    monkeypatch.undo()
    result = run_prepare(source, out, bigger)
    assert result.shards_reused == 1 and not (out / "manifest.json.unfinished").exists()
    assert open_data_dir(out).manifest["size"] == 40


def test_a_stopped_redo_is_never_taken_for_a_finished_one(prepared, monkeypatch):
    """Ctrl-C (or a kill) is not an error to recover from: the mark stays, as the old
    manifest's deletion did before."""
    source, out = prepared
    _failing_after(monkeypatch, 0, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_prepare(source, out, CONFIG, force=True)
    with pytest.raises(UserError, match="did not finish"):
        open_data_dir(out)
    monkeypatch.undo()
    assert not run_prepare(source, out, CONFIG).up_to_date  # not taken as up to date
    assert open_data_dir(out).manifest["size"] == 32
