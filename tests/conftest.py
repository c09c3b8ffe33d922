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
