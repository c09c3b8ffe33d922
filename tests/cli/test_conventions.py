"""What PyTorch users expect of a command line: fixed choices listed and checked, shell
completion, environment fallbacks a cluster sets, and status lines through `logging`
(`-v`/`-q` in the CLI; a Python caller's own handlers otherwise)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import typing

import pytest

from alexcli.config import PRESETS, EvalConfig, PrepareConfig, TrainConfig
from alexcli.config.recipe import STAGE_NAMES
from alexcli.core.progress import SILENT
from alexcli.stages.stats import run_stats
from tests.train_helpers import make_data_dir


def _literal(cls, name):
    return list(typing.get_args(typing.get_type_hints(cls)[name]))


@pytest.mark.parametrize(
    ("command", "flag", "choices"),
    [
        (["train"], "--amp", _literal(TrainConfig, "amp")),
        (["eval"], "--amp", _literal(EvalConfig, "amp")),
        (["train"], "--preset", list(PRESETS)),
        (["prepare"], "--resample", _literal(PrepareConfig, "resample")),
        (["prepare"], "--encoding", _literal(PrepareConfig, "encoding")),
        (["eval"], "--views", ["1", "10"]),
        (["run"], "--until", list(STAGE_NAMES)),
        (["export"], "--format", ["safetensors", "torchscript", "pt2", "onnx"]),
    ],
)
def test_fixed_choices_are_listed_and_checked(cli, monkeypatch, command, flag, choices):
    """The choices --help lists are the configuration's own, and anything else is a
    one-line usage error naming them (Typer checks before any work starts)."""
    monkeypatch.setenv("COLUMNS", "300")  # rich's help: one line per option
    r = cli(*command, "--help")
    assert "<" + "|".join(choices) + ">" in r.out, r.out
    args = {
        "train": ["d", "r"],
        "eval": ["r", "d"],
        "prepare": ["s", "d"],
        "run": ["demo"],
        "export": ["r", "o"],
    }[command[0]]
    r = cli(*command, *args, flag, "nonsense")
    assert r.code == 2 and "nonsense" in r.err and choices[0] in r.err, r.err
    assert len(r.err.strip().splitlines()) <= 2


def test_shell_completion_offers_commands_and_choices():
    env = os.environ | {"_ALEXCLI_COMPLETE": "complete_bash", "COMP_CWORD": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "alexcli"],
        env=env | {"COMP_WORDS": "alexcli im"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # python -m runs as prog "alexcli" (main's prog_name), so the variable is the same
    assert out.stdout.split() == ["import-weights"], out.stderr
    env |= {"COMP_WORDS": "alexcli eval --amp ", "COMP_CWORD": "3"}
    out = subprocess.run(
        [sys.executable, "-m", "alexcli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["off", "bf16", "fp16"]
    r = subprocess.run(
        [sys.executable, "-m", "alexcli", "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "_ALEXCLI_COMPLETE" in r.stdout


def test_devices_and_workers_fall_back_to_the_environment(cli, tmp_path, monkeypatch):
    """ALEXCLI_DEVICES / ALEXCLI_WORKERS stand in for --devices / --workers; a flag wins."""
    monkeypatch.setenv("ALEXCLI_DEVICES", "cuda:7")
    r = cli("summary", "--json")
    assert r.code != 0 and "cuda:7" in r.err  # the environment's device was the one tried
    r = cli("summary", "--json", "--devices", "cpu")
    assert r.code == 0 and set(json.loads(r.out)["devices"]) == {"cpu"}
    monkeypatch.setenv("ALEXCLI_DEVICES", "cpu")
    monkeypatch.setenv("ALEXCLI_WORKERS", "-3")
    r = cli("eval", tmp_path, tmp_path)
    assert r.code == 2 and "ALEXCLI_WORKERS" in r.err and "greater than" in r.err, r.err
    monkeypatch.setenv("COLUMNS", "300")
    for command in ("train", "eval", "neighbors"):
        assert "env var: ALEXCLI_WORKERS" in cli(command, "--help").out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"), train=4, val=2)


def test_quiet_hides_status_lines_and_verbose_adds_debug(cli, data, tmp_path):
    r = cli("stats", data)
    assert r.code == 0
    assert "up to date" in cli("stats", data).err  # a status line, by default
    r = cli("stats", data, "-q")  # typed after the command: still alexcli's own
    assert r.code == 0 and r.err == "" and r.out.strip(), r.err
    # -v: the debug lines of loading a run appear too
    from tests.eval_helpers import save_run

    save_run(tmp_path / "run.pt")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (50, 40), (200, 30, 30)).save(image)
    quiet_run = cli("predict", tmp_path / "run.pt", image, "--devices", "cpu")
    loud = cli("-v", "predict", tmp_path / "run.pt", image, "--devices", "cpu")
    assert "epoch 3 on cpu" in loud.err and "epoch 3 on cpu" not in quiet_run.err


def test_a_python_caller_sees_and_silences_status_lines_through_logging(data, caplog):
    logger = logging.getLogger("alexcli")
    propagate = logger.propagate
    logger.propagate = True  # (a CLI test in this process may have turned it off)
    logger.setLevel(logging.NOTSET)
    try:
        with caplog.at_level(logging.INFO, logger="alexcli"):
            run_stats(data, progress=SILENT)
        assert any("up to date" in r.getMessage() and r.name == "alexcli" for r in caplog.records)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="alexcli"):
            run_stats(data, progress=SILENT)
        assert caplog.records == []
    finally:
        logger.propagate = propagate
