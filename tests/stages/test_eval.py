"""`alexcli eval` and core/nn/loops.py: the paper's ten views, softmax averaging, top-k
error, and each bad input as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alexcli.config import PRESETS, EvalConfig, merge
from alexcli.core.data.transforms import Normalizer, iter_views, view_offsets
from alexcli.core.nn.loops import Tally, average_softmax, view_probabilities
from alexcli.stages.classifier import Classifier
from alexcli.stages.eval import PAPER_VAL, paper_reference
from tests.eval_helpers import (
    CROP,
    SIZE,
    class_list,
    colourful,
    reference_probs,
    reference_views,
    save_run,
    tiny_config,
    write_bad_checkpoints,
)
from tests.helpers import write_data_dir

FAST = ("--devices", "cpu", "--workers", "0")


# --------------------------------------------------------------------------- the views


def test_view_offsets_are_the_four_corners_and_centre_then_their_reflections():
    assert view_offsets(256, 224, 1) == [(16, 16, False)]
    five = [(16, 16), (0, 0), (0, 32), (32, 0), (32, 32)]
    assert view_offsets(256, 224, 10) == [(y, x, False) for y, x in five] + [
        (y, x, True) for y, x in five
    ]
    with pytest.raises(ValueError):
        view_offsets(256, 224, 5)


@pytest.mark.parametrize("views", [1, 10])
def test_views_cut_reflect_and_subtract_the_mean_where_each_patch_was(views):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    norm = Normalizer.create(mean, np.ones(3), np.eye(3), torch.device("cpu"))
    got = torch.stack(list(iter_views(norm, torch.from_numpy(images), CROP, views))).numpy()
    want = reference_views(images, mean, CROP, views)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # the top-left pixel of the reflected top-right corner patch is the image's last column
    if views == 10:
        y, x = 0, SIZE - 1
        np.testing.assert_allclose(got[7, 0, :, 0, 0], images[0, y, x] - mean[y, x], atol=1e-4)


def test_views_are_averaged_as_probabilities_not_logits():
    # one view very sure of class 0, two fairly sure of class 1
    logits = torch.tensor([[[30.0, 0, 0]], [[0, 5.0, 0]], [[0, 5.0, 0]]])
    probs = average_softmax(logits)
    e = np.exp(logits.double().numpy())
    want = (e / e.sum(-1, keepdims=True)).mean(0)
    np.testing.assert_allclose(probs.numpy(), want, rtol=1e-6)
    assert int(probs.argmax()) == 1  # the paper's average
    assert int(logits.mean(0).argmax()) == 0  # what averaging logits would have said


@pytest.mark.parametrize("views", [1, 10])
def test_view_probabilities_match_a_direct_computation(tmp_path, views):
    cfg = tiny_config(input_scale=0.5)
    model, mean = save_run(tmp_path / "run.pt", cfg)
    images = colourful(5)
    net = Classifier.load(tmp_path / "run.pt", EvalConfig(devices="cpu"))
    got = view_probabilities(net.model, torch.from_numpy(images), net.normalize, CROP, views)
    want = reference_probs(model, images, mean, CROP, views, scale=0.5)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


# --------------------------------------------------------------------------- top-k


def test_tally_against_a_hand_computed_example():
    probs = torch.tensor(
        [
            [0.50, 0.20, 0.10, 0.08, 0.07, 0.05],  # label 0: rank 1
            [0.50, 0.20, 0.10, 0.08, 0.07, 0.05],  # label 4: rank 5
            [0.05, 0.07, 0.08, 0.10, 0.20, 0.50],  # label 0: rank 6
            [0.05, 0.07, 0.08, 0.10, 0.50, 0.20],  # label 3: rank 4
        ]
    )
    tally = Tally(6)
    tally.add(probs[:3], torch.tensor([0, 4, 0]))
    tally.add(probs[3:], torch.tensor([3]))
    assert (tally.images, tally.top1, tally.top5) == (4, 1, 3)
    assert tally.top1_error == 0.75 and tally.top5_error == 0.25
    per_class = tally.class_top1_error()
    assert per_class[0] == 0.5 and per_class[3] == 1.0 and per_class[4] == 1.0
    assert np.isnan(per_class[1])  # no image of class 1
    assert list(tally.class_images) == [2, 0, 0, 1, 1, 0]


@pytest.mark.parametrize("views", [1, 10])
def test_eval_reports_the_errors_of_a_known_answer(cli, tmp_path, views):
    """Labels chosen from the reference's own ranking: image i's label is its
    (i mod 7)-th most probable class, so 2 of 14 are right at top-1 and 10 at top-5."""
    model, mean = save_run(tmp_path / "run" / "checkpoints" / "best.pt")
    images = colourful(14)
    probs = reference_probs(model, images, mean, CROP, views)
    ranked = np.argsort(-probs, axis=1)
    gaps = -np.diff(np.sort(probs, axis=1)[:, ::-1][:, :8], axis=1)
    assert gaps.min() > 1e-6, "the reference's ranking must not hinge on rounding"
    labels = np.array([ranked[i, i % 7] for i in range(14)])
    write_data_dir(tmp_path / "data", {"val": (images, labels)}, classes=class_list(8))
    out = tmp_path / "eval.json"
    r = cli(
        "eval",
        tmp_path / "run",
        tmp_path / "data",
        "--views",
        views,
        "--json-out",
        out,
        "--batch-size",
        4,
        *FAST,
    )
    assert r.code == 0, r.err
    report = json.loads(out.read_text())
    assert report["images"] == 14 and report["views"] == views
    assert report["top1_error"] == pytest.approx(12 / 14)
    assert report["top5_error"] == pytest.approx(4 / 14)
    assert report["checkpoint"].endswith("best.pt")
    right = np.array([i % 7 == 0 for i in range(14)])
    for c in report["per_class_top1"]:
        mine = labels == c["index"]
        assert c["images"] == int(mine.sum())
        want = None if not mine.any() else 1 - right[mine].mean()
        assert c["top1_error"] == pytest.approx(want)
    assert f"{100 * 12 / 14:.2f} %" in r.out and f"{100 * 4 / 14:.2f} %" in r.out
    assert "paper" not in r.out  # a toy run on 8 classes is not comparable


def test_one_view_agrees_with_trainings_own_validation(tmp_path):
    """`--views 1` is what `train` measures each epoch (`validate` on centre crops)."""
    from alexcli.core.data.batches import CropDataset, EpochSampler
    from alexcli.core.data.loader import make_loader
    from alexcli.core.nn.loops import validate
    from alexcli.stages.datadir import open_data_dir
    from alexcli.stages.eval import run_eval

    model, mean = save_run(tmp_path / "run.pt")
    images = colourful(12, seed=5)
    labels = np.random.default_rng(5).integers(0, 8, 12)
    write_data_dir(tmp_path / "data", {"val": (images, labels)}, classes=class_list(8))
    shards = open_data_dir(tmp_path / "data").shard_set("val")
    sampler = EpochSampler(12, 5, size=SIZE, crop=CROP, train=False)
    loader = make_loader(CropDataset(shards, CROP), sampler, workers=0, pin_memory=False)
    norm = Normalizer.create(mean, np.ones(3), np.eye(3), torch.device("cpu"))
    counts = validate(model, loader, norm, torch.device("cpu"), num_classes=8)
    ours = run_eval(tmp_path / "run.pt", tmp_path / "data", EvalConfig(views=1, devices="cpu"))
    assert (ours.top1_error, ours.top5_error) == (counts.top1_error, counts.top5_error)


def test_eval_is_the_same_on_two_towers_placed_apart_and_under_bf16(tmp_path):
    from alexcli.stages.eval import run_eval

    model, mean = save_run(tmp_path / "run.pt")
    images = colourful(6)
    labels = reference_probs(model, images, mean, CROP, 10).argmax(1)
    write_data_dir(tmp_path / "data", {"val": (images, labels)}, classes=class_list(8))
    one = run_eval(tmp_path / "run.pt", tmp_path / "data", EvalConfig(devices="cpu", workers=0))
    two = run_eval(tmp_path / "run.pt", tmp_path / "data", EvalConfig(devices="cpu,cpu", workers=1))
    bf16 = run_eval(
        tmp_path / "run.pt", tmp_path / "data", EvalConfig(devices="cpu", workers=0, amp="bf16")
    )
    assert one.top1_error == two.top1_error == 0.0
    assert two.devices == ["cpu", "cpu"] and bf16.amp == "bf16"
    assert 0.0 <= bf16.top1_error <= 1.0 and bf16.images == 6


def test_the_paper_numbers_are_attached_only_to_the_paper_network_on_imagenet():
    paper = merge(PRESETS["paper"], {}, "x")
    wnids = [{"name": f"n{i:08d}", "words": ""} for i in range(1000)]
    assert paper_reference(paper, wnids) == PAPER_VAL == {"top1_error": 0.407, "top5_error": 0.182}
    assert paper_reference(paper, wnids[:100]) is None  # a subset is easier
    assert paper_reference(paper, wnids, views=1) is None  # the paper's test is 10 views
    assert paper_reference(PRESETS["small"], wnids) is None
    one_tower = merge(paper, {"model": {"towers": 1}}, "x")
    assert paper_reference(one_tower, wnids) is None
    named = [{"name": f"class{i}", "words": ""} for i in range(1000)]
    assert paper_reference(paper, named) is None


# --------------------------------------------------------------------------- bad input


def _one_line(r) -> None:
    assert r.code == 2, (r.out, r.err)
    lines = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.err, r.err


@pytest.fixture
def small_run(tmp_path):
    run = tmp_path / "run.pt"
    save_run(run)
    images = colourful(8)
    labels = np.arange(8) % 8
    write_data_dir(
        tmp_path / "data",
        {"train": (images, labels), "val": (images, labels)},
        classes=class_list(8),
    )
    return run, tmp_path / "data"


@pytest.mark.parametrize("kind", ["foreign", "truncated", "payload", "raw-pickle"])
@pytest.mark.parametrize("command", ["eval", "predict", "neighbors"])
def test_a_bad_checkpoint_is_one_line_and_never_runs_its_payload(
    cli, tmp_path, small_run, kind, command
):
    run, data = small_run
    bad, target = write_bad_checkpoints(tmp_path / "bad", run)[kind]
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(colourful(1)[0]).save(image)
    args = {
        "eval": ("eval", bad, data, *FAST),
        "predict": ("predict", bad, image, "--devices", "cpu"),
        "neighbors": ("neighbors", bad, data, "--out", tmp_path / "f.png", *FAST),
    }[command]
    r = cli(*args)
    _one_line(r)
    assert str(bad) in r.err
    if target is not None:
        assert not target.exists(), "the pickle payload ran"


def test_a_data_dir_with_other_classes_is_named(cli, tmp_path, small_run):
    run, _ = small_run
    images, labels = colourful(4), np.arange(4)
    other = class_list(8)
    other[3] = {"name": "n99999999", "words": "something else"}
    write_data_dir(tmp_path / "swapped", {"val": (images, labels)}, classes=other)
    r = cli("eval", run, tmp_path / "swapped", *FAST)
    _one_line(r)
    assert "class 3" in r.err and "n99999999" in r.err and "n00000003" in r.err
    write_data_dir(tmp_path / "fewer", {"val": (images, labels)}, classes=class_list(5))
    r = cli("eval", run, tmp_path / "fewer", *FAST)
    _one_line(r)
    assert "5 classes" in r.err and "trained on 8" in r.err


def test_missing_paths_and_bad_flags_are_one_line(cli, tmp_path, small_run):
    run, data = small_run
    _one_line(cli("eval", tmp_path / "nowhere", data, *FAST))
    (tmp_path / "empty-run-dir").mkdir()
    _one_line(cli("eval", tmp_path / "empty-run-dir", data, *FAST))  # no checkpoints/
    _one_line(cli("eval", run, tmp_path / "no-data", *FAST))
    _one_line(cli("eval", run, data, "--split", "test", *FAST))
    _one_line(cli("eval", run, data, "--views", "5", *FAST))
    _one_line(cli("eval", run, data, "--amp", "fp16", *FAST))
    _one_line(cli("eval", run, data, "--devices", "cuda:7", "--workers", "0"))


def test_a_json_report_that_cannot_be_written_is_refused_before_evaluating(
    cli, tmp_path, small_run
):
    run, data = small_run
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target in (tmp_path, blocker / "eval.json"):  # a directory; under a file
        r = cli("eval", run, data, "--json-out", target, *FAST)
        _one_line(r)
        assert str(target) in r.err and "evaluating" not in r.err


def test_a_data_dir_of_another_image_size_is_refused(cli, tmp_path, small_run):
    run, _ = small_run
    images = np.zeros((2, SIZE + 8, SIZE + 8, 3), np.uint8)
    write_data_dir(tmp_path / "big", {"val": (images, np.arange(2))}, classes=class_list(8))
    r = cli("eval", run, tmp_path / "big", *FAST)
    _one_line(r)
    assert f"{SIZE + 8}×{SIZE + 8}" in r.err and f"--size {SIZE}" in r.err


def test_json_prints_to_stdout_json_out_writes_and_the_old_form_still_works(
    cli, tmp_path, small_run
):
    run, data = small_run
    r = cli("eval", run, data, "--json", *FAST)
    assert r.code == 0, r.err
    printed = json.loads(r.out)  # nothing but the report on stdout
    assert printed["images"] == 8 and printed["views"] == 10
    r = cli("eval", run, data, "--json-out", tmp_path / "a.json", *FAST)
    assert r.code == 0 and "top-1 error" in r.out and "deprecated" not in r.err
    assert json.loads((tmp_path / "a.json").read_text())["top1_error"] == printed["top1_error"]
    for args in (
        (run, data, "--json", tmp_path / "b.json", *FAST),
        (run, "--json", tmp_path / "b.json", data, *FAST),
    ):
        (tmp_path / "b.json").unlink(missing_ok=True)
        r = cli("eval", *args)
        assert r.code == 0, r.err
        assert "--json FILE` is deprecated" in r.err and "--json-out FILE" in r.err
        timings = ("seconds", "images_per_s")
        old, new = (json.loads((tmp_path / n).read_text()) for n in ("b.json", "a.json"))
        assert {k: v for k, v in old.items() if k not in timings} == {
            k: v for k, v in new.items() if k not in timings
        }
    r = cli("eval", "--json", run, data, *FAST)  # a flag before the paths: the new form
    assert r.code == 0 and json.loads(r.out)["images"] == 8 and "deprecated" not in r.err
