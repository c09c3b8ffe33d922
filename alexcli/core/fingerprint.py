"""Content fingerprints: what a stage's outputs depend on, as one short hash.

A fingerprint covers the stage's name and version, the parameters that change
its results, the fingerprints of the outputs it reads, and (for `prepare`) the
listing of the source files. Devices, worker counts and paths stay out, so a
rerun elsewhere with more workers is still up to date.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def fingerprint(data: Any) -> str:
    """sha256 of the canonical JSON of `data`, 16 hex digits (64 bits)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stage_fingerprint(
    stage: str,
    version: int,
    params: Mapping[str, Any],
    upstream: Mapping[str, str] | None = None,
    listing: str | None = None,
) -> str:
    return fingerprint(
        {
            "stage": stage,
            "version": version,
            "params": params,
            "upstream": dict(upstream or {}),
            "listing": listing,
        }
    )


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (full hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def differing_files(
    expected: Mapping[Path, str], jobs: int = 1, done: Callable[[Path], None] | None = None
) -> list[Path]:
    """The files of `expected` whose sha256 is not the one given (missing ones too),
    hashed by `jobs` threads (hashlib lets go of the GIL on large blocks); `done(path)`
    after each file."""
    from alexcli.core import pool

    def check(path: Path) -> Path | None:
        try:
            same = file_digest(path) == expected[path]
        except OSError:
            same = False
        if done is not None:
            done(path)
        return None if same else path

    found = pool.threads(check, ((p,) for p in expected), jobs)
    return sorted(p for p in found if p is not None)
