"""Shared fixtures: run the CLI in-process, small synthetic data made on the spot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from alexcli.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """`cli("prepare", src, dst)` runs alexcli in this process and captures its output."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def synthetic_tree(tmp_path_factory):
    """A small ILSVRC-2012-shaped tree (Kaggle labels) with ImageNet's traps, shared by
    the tests that only read it: 4 classes × 6 training and 3 validation images of
    100–250 px (so `prepare --size 64` never drafts them), plus the trap files."""
    from alexcli.core.data.synthetic import make_tree

    root = tmp_path_factory.mktemp("ilsvrc")
    return make_tree(
        root, classes=4, train_per_class=6, val_per_class=3, size_range=(100, 250), traps=True
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A DATA_DIR with stats of the training tests' images (tests/train_helpers.py):
    4 classes × 24 training and 8 validation images in shards of 8, so 12 training and
    4 validation shards: a damaged one can be first, in the middle or last. Tests that
    damage it damage a copy."""
    from tests.train_helpers import make_data_dir

    return make_data_dir(tmp_path_factory.mktemp("tiny") / "data", shard_size=8)


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """A finished run on `tiny_data`: one epoch of the tests' tiny network. Read only."""
    from tests.train_helpers import TINY

    out = tmp_path_factory.mktemp("tiny") / "run"
    sets = [a for s in (*TINY, "epochs=1") for a in ("--set", s)]
    assert main(["train", str(tiny_data), str(out), "--preset", "small", *sets]) == 0
    return out
