"""`alexcli neighbors` and core/nn/retrieval.py: Figure 4's retrieval against brute force,
whatever the chunk size, and the grid it draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from alexcli.core.figures.retrieval_grid import RetrievalLayout
from alexcli.core.nn.retrieval import RunningNearest
from alexcli.stages.neighbors import choose_queries
from tests.eval_helpers import (
    CROP,
    class_list,
    colourful,
    reference_features,
    reference_probs,
    save_run,
)
from tests.helpers import write_data_dir

FAST = ("--devices", "cpu", "--workers", "0")


def brute_force(queries: np.ndarray, database: np.ndarray, k: int):
    """Every distance, by direct differences, sorted (ties: lower index first)."""
    d = np.sqrt(((queries[:, None, :] - database[None, :, :]) ** 2).sum(-1))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 23, 100])
def test_running_nearest_is_brute_force_for_any_chunk_size(chunk):
    rng = np.random.default_rng(0)
    database = rng.normal(size=(23, 16)).astype(np.float32)
    database[17] = database[4]  # an exact tie: the lower index must come first
    queries = rng.normal(size=(4, 16)).astype(np.float32)
    queries[2] = database[4] + 1e-3
    search = RunningNearest(torch.from_numpy(queries), k=5)
    for lo in range(0, len(database), chunk):
        search.add(torch.from_numpy(database[lo : lo + chunk]))
        assert search._dist.shape[1] <= 5  # memory: k per query, whatever was seen
    index, dist = search.result()
    want_index, want_dist = brute_force(queries.astype(np.float64), database.astype(np.float64), 5)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-9, atol=1e-9)
    assert list(index[2, :2]) == [4, 17] and search.seen == 23


def test_queries_are_spread_through_the_split_or_named():
    assert choose_queries(10, 3, (), "val") == [0, 4, 9]
    assert choose_queries(100, None, (), "val") == [0, 25, 50, 74, 99]  # 5 by default
    assert choose_queries(3, 8, (), "val") == [0, 1, 2]
    assert choose_queries(10, None, (7, 2, 7), "val") == [7, 2]


@pytest.fixture
def data_and_run(tmp_path):
    """20 training images (each a noisy copy of one of 5 colours), 6 validation images."""
    model, mean = save_run(tmp_path / "run" / "checkpoints" / "last.pt")
    train = colourful(20, seed=2)
    val = colourful(6, seed=3)
    rng = np.random.default_rng(4)
    train_labels, val_labels = rng.integers(0, 8, 20), rng.integers(0, 8, 6)
    val_labels[0] = train_labels[
        np.argmin(
            (
                (
                    reference_features(model, train, mean, CROP)
                    - reference_features(model, val[:1], mean, CROP)
                )
                ** 2
            ).sum(1)
        )
    ]
    write_data_dir(
        tmp_path / "data",
        {"train": (train, train_labels), "val": (val, val_labels)},
        classes=class_list(8),
        shard_size=4,
    )
    return model, mean, train, val, train_labels, val_labels


def test_neighbors_are_the_brute_force_nearest_in_fc7_and_drawn(cli, tmp_path, data_and_run):
    model, mean, train, val, train_labels, val_labels = data_and_run
    out = tmp_path / "fig4.png"
    r = cli(
        "neighbors",
        tmp_path / "run",
        tmp_path / "data",
        "--out",
        out,
        "--index",
        0,
        "--index",
        5,
        "--index",
        2,
        "--k",
        4,
        "--batch-size",
        3,
        "--json",
        *FAST,
    )
    assert r.code == 0, r.err
    report = json.loads(r.out)
    chosen = [0, 5, 2]
    feats_train = reference_features(model, train, mean, CROP)
    feats_val = reference_features(model, val[chosen], mean, CROP)
    want_index, want_dist = brute_force(feats_val, feats_train, 4)
    gaps = np.diff(np.sort(((feats_val[:, None] - feats_train[None]) ** 2).sum(-1) ** 0.5), axis=1)
    assert gaps[:, :4].min() > 1e-5, "the reference's order must not hinge on rounding"
    assert report["searched"] == 20 and report["k"] == 4 and report["features"] == 32
    probs = reference_probs(model, val[chosen], mean, CROP, 10)
    for q, result in enumerate(report["results"]):
        assert result["index"] == chosen[q] and result["path"] == f"val/{chosen[q]}.JPEG"
        assert result["name"] == f"n{val_labels[chosen[q]]:08d}"
        got = [n["index"] for n in result["neighbours"]]
        assert got == list(want_index[q])
        np.testing.assert_allclose(
            [n["distance"] for n in result["neighbours"]], want_dist[q], rtol=1e-4, atol=1e-6
        )
        assert [n["path"] for n in result["neighbours"]] == [f"train/{j}.JPEG" for j in got]
        assert [n["name"] for n in result["neighbours"]] == [f"n{train_labels[j]:08d}" for j in got]
        assert [g["index"] for g in result["top5"]] == list(np.argsort(-probs[q])[:5])
    # the grid: the query, then its neighbours nearest first, pixel for pixel
    picture = np.asarray(Image.open(out).convert("RGB"))
    layout = RetrievalLayout(tile=train.shape[1], k=4, rows=3)
    assert picture.shape[:2] == layout.shape == (report["height"], report["width"])
    s = train.shape[1]
    for q in range(3):
        y, x = layout.query_origin(q)
        np.testing.assert_array_equal(picture[y : y + s, x : x + s], val[chosen[q]])
        for j, n in enumerate(want_index[q]):
            y, x = layout.neighbour_origin(q, j)
            np.testing.assert_array_equal(picture[y : y + s, x : x + s], train[n])
    # a neighbour of the query's own class is framed green: query 0 has one by construction
    y, x = layout.neighbour_origin(0, 0)
    assert tuple(picture[y - 1, x + s // 2]) == (40, 160, 60)


def test_neighbors_table_without_json(cli, tmp_path, data_and_run):
    out = tmp_path / "sub" / "fig4.png"
    r = cli(
        "neighbors",
        tmp_path / "run",
        tmp_path / "data",
        "--out",
        out,
        "--queries",
        2,
        "--k",
        3,
        *FAST,
    )
    assert r.code == 0, r.err
    assert out.is_file() and "fig4.png" in r.out and "3 nearest of 20 training images" in r.out
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_queries_from_the_training_split_find_themselves(cli, tmp_path, data_and_run):
    run, data, out = tmp_path / "run", tmp_path / "data", tmp_path / "f.png"
    r = cli(
        "neighbors",
        run,
        data,
        "--out",
        out,
        "--split",
        "train",
        "--index",
        "7",
        "--k",
        "1",
        "--json",
        *FAST,
    )
    assert r.code == 0, r.err
    report = json.loads(r.out)
    (query,) = report["results"]
    assert report["split"] == "train" and query["index"] == 7
    assert query["neighbours"][0]["index"] == 7  # itself (fc7 of another batch: ~1e-7 away)


def test_bad_neighbors_requests_are_one_line(cli, tmp_path, data_and_run):
    run, data, out = tmp_path / "run", tmp_path / "data", tmp_path / "f.png"
    (tmp_path / "a-file").write_text("")
    unwritable = ("--out", tmp_path / "a-file" / "f.png")  # found before the fc7 pass
    for args in [("--index", 6), ("--k", 21), ("--out", tmp_path / "f.jpg"), unwritable]:
        extra = args if args[0] == "--out" else ("--out", out, *args)
        r = cli("neighbors", run, data, *extra, *FAST)
        assert r.code == 2 and sum(x.startswith("error:") for x in r.err.splitlines()) == 1, r.err
    other = class_list(8, prefix="m")
    two = (colourful(2), np.arange(2))
    write_data_dir(tmp_path / "other", {"train": two, "val": two}, classes=other)
    r = cli("neighbors", run, tmp_path / "other", "--out", out, *FAST)
    assert r.code == 2 and "class 0" in r.err and "m00000000" in r.err
    assert not out.exists()
