"""`alexcli demo` and `alexcli run`: the stages chained, numbers carried through, reruns
up to date, recipe errors in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# A demo shrunk to seconds: 3 classes, 8 + 4 images each, 72 px, 2 epochs at 64 px crops
# (the small preset's 11×11/4 conv1 needs crops ≥ 63).
TINY = [
    "synthetic.classes=3",
    "synthetic.train_per_class=8",
    "synthetic.val_per_class=4",
    "prepare.size=72",
    "train.crop=64",
    "train.epochs=2",
    "train.batch_size=8",
]


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """The shrunken demo, run once for this module: (work_dir, JSON of the first run)."""
    from alexcli.cli import main

    work = tmp_path_factory.mktemp("demo")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", str(work), *_sets(*TINY), "--json"])
    assert code == 0
    return work, json.loads(buf.getvalue())


def test_demo_runs_every_stage_and_writes_every_artefact(tiny_demo):
    work, result = tiny_demo
    stages = [s["stage"] for s in result["steps"]]
    assert stages == [
        "synthetic",
        "prepare",
        "stats",
        "train",
        "eval (1 view)",
        "eval (10 views)",
        "viz-kernels",
        "viz-curves",
    ]
    for step in result["steps"]:
        for path in step["artefacts"].values():
            assert Path(path).exists(), path
    for rel in (
        "data/manifest.json",
        "data/stats.h5",
        "run/checkpoints/best.pt",
        "run/metrics.jsonl",
        "run/kernels.png",
        "run/curves.png",
    ):
        assert (work / rel).is_file(), rel


def test_demo_numbers_are_the_stages_own(tiny_demo):
    work, result = tiny_demo
    for views in (1, 10):
        own = json.loads((work / "run" / "eval" / f"val-{views}view.json").read_text())
        shown = result["evals"][str(views)]
        assert shown["top1_error"] == own["top1_error"]
        assert shown["top5_error"] == own["top5_error"]
        assert shown["views"] == views
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    assert result["evals"]["1"]["images"] == manifest["splits"]["val"]["images"]
    # eval's 1-view error of best.pt is training's own validation error at its best epoch
    metrics = [
        json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert result["evals"]["1"]["top1_error"] == pytest.approx(
        min(m["val_top1_error"] for m in metrics)
    )
    assert result["classes"] == 3
    assert result["chance"]["top1_error"] == pytest.approx(2 / 3)


def test_demo_shows_the_traps_handled(tiny_demo):
    work, _ = tiny_demo
    skipped = json.loads((work / "data" / "manifest.json").read_text())["skipped"]
    reasons = " ".join(s["reason"] for s in skipped)
    assert skipped and "truncated" in reasons


def test_a_second_demo_is_up_to_date(tiny_demo, cli):
    work, _ = tiny_demo
    r = cli("demo", work, *_sets(*TINY), "--json")
    assert r.code == 0
    steps = {s["stage"]: s["up_to_date"] for s in json.loads(r.out)["steps"]}
    assert all(
        steps[s]
        for s in ("synthetic", "prepare", "stats", "train", "eval (1 view)", "eval (10 views)")
    )
    assert "up to date" in r.err


def test_a_changed_setting_reruns_from_that_stage_on(tiny_demo, cli, tmp_path):
    work, _ = tiny_demo
    r = cli("demo", work, *_sets(*TINY, "eval.views=1"), "--json")
    assert r.code == 0
    steps = {s["stage"]: s["up_to_date"] for s in json.loads(r.out)["steps"]}
    assert "eval (10 views)" not in steps and steps["eval (1 view)"]


def test_the_demo_table(tiny_demo, cli):
    work, result = tiny_demo
    r = cli("demo", work, *_sets(*TINY))
    assert r.code == 0
    top1 = f"{100 * result['evals']['10']['top1_error']:.1f} %"
    assert "Results" in r.out and top1 in r.out and "chance" in r.out
    assert "66.7 %" in r.out  # chance top-1 for 3 classes


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_run_until_stops_after_that_stage(tiny_demo, cli, tmp_path, monkeypatch):
    work, _ = tiny_demo
    monkeypatch.chdir(tmp_path)
    recipe = _recipe(
        tmp_path, f'source = "{work / "source"}"\ndata_dir = "d"\n[prepare]\nsize = 40\n'
    )
    r = cli("run", recipe, "--until", "stats", "--json")
    assert r.code == 0, r.err
    assert [s["stage"] for s in json.loads(r.out)["steps"]] == ["prepare", "stats"]
    assert (tmp_path / "d" / "stats.h5").is_file() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "args", "needle"),
    [
        ("[train]\nepohcs = 3\n", [], "r.toml: unknown key 'train.epohcs'"),
        ("[train]\nepochs = 'many'\n", [], "r.toml: 'train.epochs' must be an integer"),
        ('source = "/no/such/dir"\n', [], "r.toml: source '/no/such/dir' does not exist"),
        ("[prepare]\nsize = 40\n", [], "r.toml: 'source' is not set"),
        ('source = "x"\n', ["--until", "fly"], "'--until': 'fly' is not one of 'prepare'"),
        ('source = "x"\n', ["--set", "train.lr=fast"], "--set: 'train.lr' must be a number"),
        ("[train\n", [], "not valid TOML"),
        ('source = "x"\nstages = []\n', [], "r.toml: `stages` is empty"),
        ('source = "x"\nstages = ["stats", "prepare"]\n', [], "`stages` out of order"),
    ],
)
def test_recipe_errors_are_one_line_naming_key_and_file(
    cli, tmp_path, monkeypatch, text, args, needle
):
    monkeypatch.chdir(tmp_path)
    r = cli("run", _recipe(tmp_path, text), *args)
    assert r.code == 2
    assert r.err.startswith("error: ") and needle in r.err.splitlines()[0]
    assert "Traceback" not in r.err


def test_missing_recipe(cli, tmp_path, monkeypatch):
    r = cli("run", tmp_path / "nope.toml")
    assert r.code == 2 and "no such recipe file" in r.err
    monkeypatch.chdir(tmp_path)
    r = cli("run", "papr")  # a name that is not a shipped recipe lists those that are
    assert r.code == 2 and "demo, imagenet100, paper" in r.err


def test_shipped_recipes_are_named_without_a_path(cli, tmp_path, monkeypatch):
    """From any folder (as after a wheel install): `alexcli run paper` is the packaged
    recipe; a file of that name in the folder wins, as a path always does."""
    from alexcli.config import find_recipe, load_recipe, shipped_recipes

    monkeypatch.chdir(tmp_path)
    assert set(shipped_recipes()) == {"demo", "paper", "imagenet100", "ablations"}
    assert find_recipe("paper") == find_recipe("paper.toml") == shipped_recipes()["paper"]
    assert load_recipe(find_recipe("paper")).train.preset == "paper"
    r = cli("run", "paper", "--until", "prepare")  # its source is yours to set: one line
    assert r.code == 2 and "source '/data/imagenet' does not exist" in r.err
    (tmp_path / "paper.toml").write_text('source = "mine"\n')
    assert find_recipe("paper") == Path("paper.toml")


@pytest.mark.parametrize("force", [False, True])
def test_a_synthetic_source_never_replaces_a_folder_it_did_not_make(
    cli, tmp_path, monkeypatch, force
):
    """`source = "synthetic"` generates into ./source (WORK_DIR/source for the demo): a
    folder of the user's there is refused, not deleted."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "main.c").write_text("int main(void) { return 0; }\n")
    recipe = _recipe(tmp_path, 'source = "synthetic"\nstages = ["prepare"]\n')
    r = cli("run", recipe, *(["--force"] if force else []))
    assert r.code == 2 and "Traceback" not in r.err
    assert "was not generated by alexcli" in r.err.split("error: ")[1].splitlines()[0], r.err
    assert (tmp_path / "source" / "main.c").is_file()
    assert [p.name for p in (tmp_path / "source").iterdir()] == ["main.c"]


def test_demo_into_a_file_is_one_line(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    r = cli("demo", tmp_path / "notes.txt")
    assert r.code == 2 and "not a directory" in r.err.splitlines()[0], r.err
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_a_run_trained_on_other_data_is_not_resumed(tiny_demo, cli, tmp_path):
    """docs/pipelines.md reruns the demo with other seeds: a RUN_DIR whose model was trained
    on the old data must not be "resumed" on the new (the old model would be evaluated on
    the new data, or fail to load when the class count differs)."""
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tiny_demo[0], work, symlinks=True)
    last = work / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    r = cli("demo", work, *_sets(*TINY, "synthetic.seed=1"))
    assert r.code == 2, r.err
    assert "was trained on other data" in r.err and "Traceback" not in r.err
    assert last.read_bytes() == before
    r = cli("demo", work, *_sets(*TINY, "synthetic.seed=1"), "--force", "--json")
    assert r.code == 0, r.err
    assert not {s["stage"]: s["up_to_date"] for s in json.loads(r.out)["steps"]}["train"]


@pytest.mark.parametrize("command", ["run", "demo"])
def test_the_set_example_in_help_is_a_recipe_key(cli, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "200")
    r = cli(command, "--help")
    assert r.code == 0 and "--set train.model.towers=1" in r.out, r.out


def test_the_demo_source_can_be_ilsvrc2012_as_downloaded(cli, tmp_path, monkeypatch):
    """`alexcli demo --archives` (here `run demo` with its key): the generated tree is
    packed as the tars ILSVRC-2012 ships, and prepare reads them in place."""
    from alexcli.core.data import archives

    monkeypatch.chdir(tmp_path)
    sets = [
        "synthetic.archives=true",
        "synthetic.classes=3",
        "synthetic.train_per_class=6",
        "synthetic.val_per_class=2",
        "prepare.size=40",
    ]
    r = cli("run", "demo", "--until", "prepare", "--json", *[a for s in sets for a in ("--set", s)])
    assert r.code == 0, r.err
    names = {p.name for p in (tmp_path / "source").iterdir()}
    assert {archives.TRAIN_TAR, archives.VAL_TAR, "LOC_val_solution.csv"} <= names
    assert not (tmp_path / "source" / "train").exists()  # no extracted tree anywhere
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert set(manifest["archives"]) == {archives.TRAIN_TAR, archives.VAL_TAR}
    assert manifest["splits"]["train"]["images"] > 0 and manifest["splits"]["val"]["images"] > 0


def test_a_demo_stopped_before_its_first_checkpoint_continues(tiny_demo, cli, tmp_path):
    """Ctrl-C or SIGTERM in the train stage before last.pt exists leaves RUN_DIR with
    config.json alone: rerunning the demo trains it (demo has no --resume to pass)."""
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tiny_demo[0], work, symlinks=True)
    run = work / "run"
    for path in [run / "manifest.json", *(run / "checkpoints").iterdir(), run / "metrics.jsonl"]:
        path.unlink()
    assert (run / "config.json").exists()
    r = cli("demo", work, *_sets(*TINY), "--json")
    assert r.code == 0, r.err
    steps = {s["stage"]: s["up_to_date"] for s in json.loads(r.out)["steps"]}
    assert not steps["train"] and (run / "checkpoints" / "last.pt").exists()
