"""The command-line surface and its single error boundary."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from alexcli.cli import main
from alexcli.errors import ConfigError, UserError

ROOT = Path(__file__).resolve().parents[2]
SPEC_COMMANDS = [
    "prepare",
    "stats",
    "train",
    "eval",
    "viz-kernels",
    "viz-curves",
    "predict",
    "neighbors",
    "export",
    "import-weights",
    "summary",
    "demo",
    "run",
    "ablate",
    "bench",
]


def test_help_lists_every_spec_command(cli):
    r = cli("--help")
    assert r.code == 0
    listed = set(re.findall(r"^│ ([a-z][a-z-]+) ", r.out, flags=re.M))
    assert listed == set(SPEC_COMMANDS)


@pytest.mark.parametrize("command", SPEC_COMMANDS)
def test_every_command_has_help_with_an_example(cli, command):
    r = cli(command, "--help")
    assert r.code == 0
    assert f"alexcli {command}" in " ".join(r.out.split()), "help must show an example"


def test_every_command_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for command in SPEC_COMMANDS:
        assert f"alexcli {command}" in readme, command


def test_help_does_not_import_torch():
    code = (
        "import sys; from alexcli.cli import main; main(['--help']); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().endswith("False")


def test_python_dash_m_runs(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "alexcli", "--version"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.startswith("alexcli ")


def _toy_app(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def boom(n: int = 1) -> None:
        raise exc

    @app.command()
    def fine() -> None:
        print("ok")

    return app


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (UserError("no such directory: /x", hint="check the path"), 2),
        (ConfigError("recipe.toml: unknown key 'lrr'"), 2),
        (RuntimeError("something broke"), 1),
    ],
)
def test_errors_are_one_line_and_exit_codes(capsys, exc, code):
    assert main(["boom"], application=_toy_app(exc)) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and str(exc) in lines[0]
    assert "Traceback" not in err
    if getattr(exc, "hint", None):
        assert lines[1] == f"hint: {exc.hint}"


def test_ctrl_c_says_interrupted_and_exits_130(capsys):
    assert main(["boom"], application=_toy_app(KeyboardInterrupt())) == 130
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted") and "--resume" in err
    assert "Traceback" not in err


def test_a_refusal_of_the_system_is_one_line_naming_the_file(capsys, tmp_path):
    full = OSError(28, "No space left on device", str(tmp_path / "run" / "last.pt.tmp"))
    assert main(["boom"], application=_toy_app(full)) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[0] == f"error: No space left on device ({tmp_path / 'run' / 'last.pt.tmp'})"
    assert lines[1].startswith("hint: ") and len(lines) == 2


def test_usage_error_exits_2_in_one_line(capsys):
    assert main(["boom", "--n", "abc"], application=_toy_app(RuntimeError())) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[0].startswith("error: ") and "--n" in err.splitlines()[0]


def test_success_exits_0(capsys):
    assert main(["fine"], application=_toy_app(RuntimeError())) == 0
    assert capsys.readouterr().out == "ok\n"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_wherever_it_is_typed(tmp_path, where):
    args = ["stats", str(tmp_path / "missing")]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    r = subprocess.run([sys.executable, "-m", "alexcli", *args], capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "UserError: " in r.stderr  # the error, not a usage one


def test_real_commands_fail_in_one_line_without_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "alexcli", "stats", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ")


def test_pil_is_pillow_simd():
    from importlib import metadata

    names = {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert "pillow-simd" in names
    assert "pillow" not in names, "plain pillow would replace pillow-simd's PIL"


def test_a_bad_flag_value_is_named_as_typed(cli, tmp_path):
    r = cli("eval", tmp_path / "run", tmp_path / "data", "--views", "5")
    first = r.err.splitlines()[0]
    assert r.code == 2 and first.startswith("error: Invalid value for '--views'"), r.err
    assert "'5' is not one of '1', '10'" in first
