"""Which classes and which files: docs/paper.md "Data" (the 1000 classes of ILSVRC-2012,
and the subsets a smaller machine trains on).

A subset is `--classes N` (a seeded choice), or `--wnids FILE`; per-class caps keep a
seeded choice of each class's files that depends only on the seed and the class, so a
class keeps the same images in any subset. Labels index the sorted chosen names.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from alexcli.errors import UserError

F = TypeVar("F")


def read_wnids(path: Path) -> tuple[str, ...]:
    """A class list: one name per line (the first word; `#` comments, blanks ignored),
    so a trimmed LOC_synset_mapping.txt works too."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"--wnids {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--wnids {path}: unreadable ({e})") from None
    names = [line.split("#")[0].split() for line in text.splitlines()]
    out = tuple(dict.fromkeys(words[0] for words in names if words))
    if not out:
        raise UserError(f"--wnids {path}: no class names in it", hint="one wnid per line")
    return out


def choose_classes(
    available: Sequence[str], *, count: int | None, wnids: Sequence[str], seed: int
) -> list[str]:
    """The chosen class names, sorted (label i is element i): all of them, the named
    ones (`wnids`), or a seeded choice of `count`."""
    if wnids:
        known = set(available)
        unknown = [w for w in wnids if w not in known]
        if unknown:
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise UserError(
                f"--wnids: {', '.join(unknown[:3])}{more} not among SOURCE's "
                f"{len(available)} classes",
                hint="names must match the train/<class>/ folders",
            )
        return sorted(set(wnids))
    if count is None:
        return sorted(available)
    if not 1 <= count <= len(available):
        raise UserError(
            f"--classes {count}: SOURCE has {len(available)} classes",
            hint=f"choose 1 to {len(available)}",
        )
    rng = np.random.default_rng([seed, 0])
    picked = rng.choice(len(available), size=count, replace=False)
    return sorted(available[int(i)] for i in picked)


def cap_per_class(files: Sequence[F], cap: int | None, seed: int, key: str) -> list[F]:
    """At most `cap` of one class's files: a seeded choice that depends only on the seed
    and `key` (split/class), so a class keeps the same images in any subset."""
    if cap is None or len(files) <= cap:
        return list(files)
    rng = np.random.default_rng([seed, 1, zlib.crc32(key.encode())])
    keep = np.sort(rng.choice(len(files), size=cap, replace=False))
    return [files[int(i)] for i in keep]
