"""A prepared DATA_DIR as downstream stages see it: classes, size, shards per split.

`prepare` writes `DATA_DIR/manifest.json` (docs/formats.md); `stats`, `train`,
`eval` and `neighbors` read it through `open_data_dir`, never by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexcli.core.data.shards import ShardSet
from alexcli.core.data.stats import Stats, read_stats
from alexcli.core.fingerprint import fingerprint
from alexcli.errors import FormatError, StaleInputError, UserError
from alexcli.stages.runner import require_manifest


@dataclass(frozen=True)
class ShardEntry:
    path: str  # relative to DATA_DIR
    images: int
    sha256: str


@dataclass(frozen=True)
class DataDir:
    root: Path
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def encoding(self) -> str:
        """How the shards store their images: "raw" (also a manifest from before
        encodings) or "jpeg"."""
        return str(self.manifest.get("encoding", "raw"))

    @property
    def quality(self) -> int | None:
        """The JPEG records' quality; None for raw."""
        quality = self.manifest.get("quality")
        return int(quality) if self.encoding == "jpeg" and quality is not None else None

    @property
    def classes(self) -> list[dict[str, str]]:
        """Index order: label i is `classes[i]`, each with `name` (wnid) and `words`."""
        return list(self.manifest["classes"])

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.manifest["classes"]]

    def check_classes(self, run_classes: Sequence[dict[str, str]], hint: str | None = None) -> None:
        """One line naming how these classes differ from a run's, if they do."""
        ours, theirs = [c["name"] for c in run_classes], self.class_names
        if ours == theirs:
            return
        root = self.root
        pairs = zip(ours, theirs, strict=False)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        if len(ours) != len(theirs):
            message = f"{root}: {len(theirs)} classes, the run was trained on {len(ours)}"
            if first is not None:
                message += f" (first difference: class {first} is {theirs[first]!r} here, "
                message += f"{ours[first]!r} in the run)"
        else:  # same count, different lists: some class differs
            assert first is not None
            message = (
                f"{root}: class {first} is {theirs[first]!r} here but {ours[first]!r} in the run"
            )
        raise UserError(
            message,
            hint=hint
            or "use the DATA_DIR the run was trained on (or one prepared with the same classes)",
        )

    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def shards(self, split: str) -> list[ShardEntry]:
        splits = self.manifest["splits"]
        if split not in splits:
            raise UserError(
                f"{self.root}: no {split!r} split (it has: {', '.join(splits) or 'none'})"
            )
        return [
            ShardEntry(str(s["path"]), int(s["images"]), str(s.get("sha256", "")))
            for s in splits[split]["shards"]
        ]

    def images(self, split: str) -> int:
        return sum(s.images for s in self.shards(split))

    def images_all(self) -> int:
        """Images in every split."""
        return sum(self.images(split) for split in self.splits())

    def shard_set(self, split: str) -> ShardSet:
        entries = self.shards(split)
        return ShardSet(
            [self.root / s.path for s in entries],
            [s.images for s in entries],
            split=split,
            classes=len(self.classes),
        )


def open_data_dir(root: Path) -> DataDir:
    """Read and check DATA_DIR's manifest; a one-line error names the fix."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory", hint="run `alexcli prepare SOURCE DATA_DIR`")
    fix = f"alexcli prepare SOURCE {root}"
    manifest = require_manifest(root / "manifest.json", "prepare", fix)
    try:
        classes, splits = manifest["classes"], manifest["splits"]
        str(manifest["fingerprint"])
        ok = isinstance(manifest["size"], int) and manifest["size"] >= 1
        ok = ok and isinstance(classes, list) and all("name" in c for c in classes)
        ok = ok and isinstance(splits, dict) and all("shards" in v for v in splits.values())
        shards = [s for v in splits.values() for s in v["shards"]] if ok else []
        ok = ok and all(
            isinstance(s["path"], str) and isinstance(s["images"], int) and s["images"] >= 0
            for s in shards
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise FormatError(
            f"{root / 'manifest.json'}: malformed manifest", hint=f"run `{fix} --force`"
        )
    return DataDir(root, manifest)


# --------------------------------------------------------------------------- stats.h5
# What `stats` writes in DATA_DIR and every later stage reads: the mean image and the RGB
# eigen data, refused when the shards changed since (stages/stats.py computes it).

STATS_FILE = "stats.h5"


def check_stats_current(data_dir: Path) -> Stats:
    """DATA_DIR's stats.h5, refused unless it was computed from DATA_DIR's shards as they are."""
    data = open_data_dir(data_dir)
    path = data.root / STATS_FILE
    fix = f"run `alexcli stats {data.root}`"
    if not path.exists():
        raise UserError(f"{path} not found: `stats` has not run on {data.root}", hint=fix)
    stats = read_stats(path)
    changed = stats.data_fingerprint != data.fingerprint or (
        stats.shards_digest and stats.shards_digest != shards_digest(data)
    )
    if changed:
        raise StaleInputError(
            f"{path} was computed from other shards than {data.root}'s "
            f"(prepare fingerprint {stats.data_fingerprint}, now {data.fingerprint})",
            hint=fix,
        )
    if stats.size != data.size:
        raise FormatError(f"{path}: {stats.size} px stats for {data.size} px shards", hint=fix)
    return stats


def shards_digest(data: DataDir) -> str:
    """A fingerprint of the training shards as the manifest lists them (name, count, sha256)."""
    return fingerprint([[s.path, s.images, s.sha256] for s in data.shards("train")])
