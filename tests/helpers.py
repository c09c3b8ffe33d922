"""A prepared DATA_DIR made from arrays, for the tests of the stages after prepare."""

from __future__ import annotations


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
