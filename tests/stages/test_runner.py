"""The stage runner: fingerprints, "up to date", --force, and interrupted runs."""

from __future__ import annotations

import json

import pytest

from alexcli.core.fingerprint import fingerprint, stage_fingerprint
from alexcli.core.progress import Recorder
from alexcli.errors import FormatError, UserError
from alexcli.stages.runner import read_manifest, require_manifest, run_stage


class Counter:
    def __init__(self, out):
        self.calls = 0
        self.out = out

    def __call__(self):
        self.calls += 1
        self.out.write_text(f"run {self.calls}")
        return {"outputs": [self.out.name], "images": 3}


def _run(tmp_path, build, params=None, force=False, progress=None):
    return run_stage(
        stage="toy",
        version=1,
        params=params or {"size": 256},
        manifest_path=tmp_path / "manifest.json",
        build=build,
        force=force,
        progress=progress or Recorder(),
    )


def test_second_run_is_up_to_date_and_does_nothing(tmp_path):
    build = Counter(tmp_path / "out.txt")
    first = _run(tmp_path, build)
    assert not first.up_to_date and build.calls == 1
    rec = Recorder()
    second = _run(tmp_path, build, progress=rec)
    assert second.up_to_date and build.calls == 1
    assert any("up to date" in line for line in rec.lines)
    assert second.fingerprint == first.fingerprint


def test_manifest_records_stage_version_fingerprint_and_body(tmp_path):
    result = _run(tmp_path, Counter(tmp_path / "out.txt"))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stage"] == "toy" and manifest["version"] == 1
    assert manifest["fingerprint"] == result.fingerprint
    assert manifest["images"] == 3 and manifest["outputs"] == ["out.txt"]
    assert manifest["config"] == {"size": 256}


def test_force_redoes_the_work(tmp_path):
    build = Counter(tmp_path / "out.txt")
    _run(tmp_path, build)
    _run(tmp_path, build, force=True)
    assert build.calls == 2


def test_a_changed_parameter_changes_the_fingerprint_and_reruns(tmp_path):
    build = Counter(tmp_path / "out.txt")
    a = _run(tmp_path, build, params={"size": 256})
    b = _run(tmp_path, build, params={"size": 128})
    assert a.fingerprint != b.fingerprint and build.calls == 2


def test_a_missing_output_reruns(tmp_path):
    build = Counter(tmp_path / "out.txt")
    _run(tmp_path, build)
    (tmp_path / "out.txt").unlink()
    _run(tmp_path, build)
    assert build.calls == 2


def test_an_interrupted_run_is_never_taken_for_a_whole_one(tmp_path):
    build = Counter(tmp_path / "out.txt")
    _run(tmp_path, build, params={"size": 256})

    def dies():
        (tmp_path / "out.txt").write_text("half of size 128")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, dies, params={"size": 128})
    assert read_manifest(tmp_path / "manifest.json") is None
    _run(tmp_path, build, params={"size": 256})  # the old parameters: must redo, not skip
    assert build.calls == 2


def test_fingerprint_is_order_independent_and_sensitive():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    base = stage_fingerprint("s", 1, {"a": 1})
    assert base != stage_fingerprint("s", 2, {"a": 1})
    assert base != stage_fingerprint("s", 1, {"a": 1}, upstream={"prepare": "abc"})
    assert base != stage_fingerprint("s", 1, {"a": 1}, listing="x")


def test_require_manifest_names_the_fix(tmp_path):
    with pytest.raises(UserError, match="has not run") as e:
        require_manifest(tmp_path / "manifest.json", "prepare", "alexcli prepare SRC DIR")
    assert "alexcli prepare" in (e.value.hint or "")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(FormatError):
        require_manifest(tmp_path / "manifest.json", "prepare", "alexcli prepare SRC DIR")
