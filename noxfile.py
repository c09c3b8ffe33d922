"""Developer sessions. `nox` alone runs tests, collect_bare, lint, typecheck and wheel
(what CI runs).

torch is installed first, from ALEXCLI_TORCH (default `torch==2.13.0`, the CPU
build on our machines), so that the project's `torch>=2.10` is already met and no
multi-GB CUDA build is pulled. On a GPU machine, e.g.:
    ALEXCLI_TORCH="torch --index-url https://download.pytorch.org/whl/cu128" nox -s bench
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "collect_bare", "lint", "typecheck", "wheel"]
nox.options.default_venv_backend = "venv"

TORCH = os.environ.get("ALEXCLI_TORCH", "torch==2.13.0")


def _has_avx2() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return platform.machine() in ("x86_64", "AMD64") and (
        cpuinfo.exists() and " avx2" in cpuinfo.read_text()
    )


def _install_runtime(session: nox.Session) -> None:
    """torch (ALEXCLI_TORCH) and pillow-simd, before alexcli, so that neither a CUDA torch
    nor plain pillow is pulled in by its requirements."""
    session.install(*shlex.split(TORCH))
    if _has_avx2():
        # pillow-simd's default build stops at SSE4; its AVX2 resize is faster
        # (docs/prepare.md). Built fresh (no wheel cache) so the flag takes effect.
        session.install("--no-cache-dir", "pillow-simd", env={"CC": "cc -mavx2"})
    else:
        session.install("pillow-simd")


def _install(session: nox.Session, extras: str = "dev") -> None:
    _install_runtime(session)
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pytest); pass pytest arguments after `--`."""
    _install(session)
    session.run("pytest", *session.posargs)


# Fails when an optional extra (or protobuf, which they bring) is importable after all.
_NONE_OF_THE_EXTRAS = """
import importlib.util
extras = ("onnx", "onnxruntime", "onnxscript", "tensorboardX", "google.protobuf")
def present(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False
found = [name for name in extras if present(name)]
assert not found, f"not a bare environment: {found} installed"
"""


@nox.session
def collect_bare(session: nox.Session) -> None:
    """The suite collects without the optional extras (onnx, tensorboardX, protobuf), as on
    a GPU machine's image: torch, pillow-simd, alexcli and pytest alone; every test of an
    absent extra skips instead of ending collection (`pytest -m gpu` would run none)."""
    _install_runtime(session)
    session.install("-e", ".", "pytest")
    session.run("python", "-c", _NONE_OF_THE_EXTRAS)
    session.run("pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests")
    session.run("pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import-direction contracts."""
    session.install("ruff", "import-linter")
    session.install("--no-deps", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on alexcli/."""
    _install(session)
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """`alexcli demo`: the whole chain on embedded synthetic data (minutes on a CPU)."""
    _install(session, extras="dev")
    session.run("alexcli", "demo", *(session.posargs or ["alexcli-demo"]))


@nox.session
def bench(session: nox.Session) -> None:
    """`alexcli bench --json`, written to bench.json (slow; opt-in)."""
    _install(session, extras="dev")
    with open("bench.json", "w") as f:
        session.run("alexcli", "bench", "--json", *session.posargs, stdout=f)


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the sdist and the wheel, install the wheel (not the checkout) and run
    `alexcli --version`, `alexcli demo`, `alexcli export` and `alexcli.load` from a
    folder outside the checkout."""
    session.install("build")
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), ".")
    wheels = sorted(dist.glob("alexcli-*.whl"))
    if not wheels or not sorted(dist.glob("alexcli-*.tar.gz")):
        session.error(f"no wheel and sdist in {dist}")
    _install_runtime(session)
    session.install("--force-reinstall", "--no-deps", str(wheels[-1]))
    session.install(str(wheels[-1]))  # its requirements, torch and pillow-simd already met
    elsewhere = tmp / "elsewhere"
    shutil.rmtree(elsewhere, ignore_errors=True)
    elsewhere.mkdir()
    session.chdir(elsewhere)
    session.run(
        "python",
        "-c",
        "import alexcli, sys; assert 'site-packages' in alexcli.__file__, "
        "alexcli.__file__; print(alexcli.__file__)",
    )
    session.run("alexcli", "--version")
    session.run("alexcli", "demo", "demo-out")
    # the Python API and export from the wheel: a run → safetensors → alexcli.load
    session.run("alexcli", "export", "demo-out/run", "model.safetensors")
    session.run(
        "python",
        "-c",
        "import alexcli, numpy as np; net = alexcli.load("
        "'model.safetensors', devices='cpu'); grey = np.full((60, 80, 3), 128, np.uint8); "
        "print(net.predict([grey], views=1)[0][0])",
    )
