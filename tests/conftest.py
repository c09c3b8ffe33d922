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


def write_data_dir(
    root,
    splits,
    *,
    classes=None,
    size=None,
    shard_size=4,
    fingerprint="test-data",
):
    """A DATA_DIR as `prepare` lays it out, from arrays: `splits` maps a split name to
    (images uint8 (n, s, s, 3), labels (n,)). For tests of the stages downstream of
    prepare; prepare's own tests build real image trees instead."""
    from pathlib import Path

    import numpy as np

    from alexcli.core.data.shards import write_shard
    from alexcli.core.fingerprint import file_digest
    from alexcli.stages.runner import run_stage

    root = Path(root)
    n_classes = 1 + max(int(np.max(lab)) for _, lab in splits.values())
    classes = classes or [{"name": f"n{i:08d}", "words": f"class {i}"} for i in range(n_classes)]
    size = size or next(iter(splits.values()))[0].shape[1]

    def build():
        body = {"splits": {}, "outputs": []}
        for split, (images, labels) in splits.items():
            shards = []
            for k, start in enumerate(range(0, len(images), shard_size)):
                rel = f"{split}/{k:05d}.h5"
                sl = slice(start, start + shard_size)
                n = len(images[sl])
                names = [f"{split}/{i}.JPEG" for i in range(start, start + n)]
                write_shard(root / rel, images[sl], labels[sl], names, split=split)
                shards.append({"path": rel, "images": n, "sha256": file_digest(root / rel)})
                body["outputs"].append(rel)
            body["splits"][split] = {"images": len(images), "shards": shards}
        return {"classes": classes, "size": size, "skipped": [], **body}

    return run_stage(
        stage="prepare",
        version=1,
        params={"fingerprint": fingerprint},
        manifest_path=root / "manifest.json",
        build=build,
        force=True,
    )


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
