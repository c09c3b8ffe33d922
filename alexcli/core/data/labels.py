"""ImageNet's label files, read and written: docs/paper.md "Data" (the 1000 classes).

- `LOC_synset_mapping.txt` (Kaggle): "n01440764 tench, Tinca tinca" per line;
- `LOC_val_solution.csv` (Kaggle): the validation images' boxes, the first token of
  PredictionString is the image's wnid;
- the ILSVRC-2012 devkit: `meta.mat` (the synsets, their ILSVRC2012_IDs in the devkit's
  own order, not sorted-wnid order) and `ILSVRC2012_validation_ground_truth.txt` (line n:
  the ID of `ILSVRC2012_val_<n>.JPEG`);
- Tiny ImageNet: `val/val_annotations.txt` and `words.txt`.

The readers are what `prepare` uses (core/data/sources.py); the writers make the same
files for the generated trees of the tests and the demo (core/data/synthetic.py), so a
reader is always tested against its writer and against files shaped like the real ones.
A malformed line is a one-line FormatError naming the file and line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from alexcli.errors import FormatError, UserError

WNID = re.compile(r"n\d{8}")
KAGGLE_CSV = "LOC_val_solution.csv"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
DEVKIT_META = "meta.mat"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_DIR = "ILSVRC2012_devkit_t12/data"  # where the devkit keeps both
TINY_ANNOTATIONS = "val_annotations.txt"  # Tiny ImageNet: val/images/<file> → wnid
TINY_WORDS = "words.txt"  # Tiny ImageNet: "wnid<TAB>words", every WordNet noun
# Where the devkit's files are looked for, under SOURCE (and Kaggle's nesting)
DEVKIT_DIRS = ("ILSVRC2012_devkit_t12/data", "ILSVRC2012_devkit_t12", "devkit/data", "")

# --------------------------------------------------------------------------- readers


def read_tiny_labels(path: Path) -> dict[str, str]:
    """Tiny ImageNet's `val_annotations.txt`: "val_0.JPEG<TAB>n03444034<TAB>0 32 44 62"
    per line → {file stem: wnid}. An image listed again with another wnid is an error."""
    out: dict[str, str] = {}
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not WNID.fullmatch(fields[1]):
            raise FormatError(f"{path}:{n}: expected `val_<n>.JPEG wnid x0 y0 x1 y1`")
        _label(out, Path(fields[0]).stem, fields[1], f"{path}:{n}")
    return out


def read_synset_mapping(path: Path) -> dict[str, str]:
    """`LOC_synset_mapping.txt`: "n01440764 tench, Tinca tinca" per line → {wnid: words}
    (Tiny ImageNet's `words.txt` is the same with a tab)."""
    out: dict[str, str] = {}
    for line in _read_text(path).splitlines():
        parts = line.split(maxsplit=1)  # after a space, or Tiny ImageNet's tab
        if parts:
            out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out


def read_kaggle_labels(path: Path) -> dict[str, str]:
    """`LOC_val_solution.csv` → {image id (file stem): wnid}, the wnid being the first
    token of PredictionString (the first box's class; every box has the same one)."""
    out: dict[str, str] = {}
    rows = csv.reader(_read_text(path).splitlines())
    header = next(rows, [])
    if header[:2] != ["ImageId", "PredictionString"]:
        raise FormatError(f"{path}: not a LOC_val_solution.csv (header {header[:2]})")
    for n, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line (a trailing one, mostly)
        tokens = row[1].split() if len(row) >= 2 else []
        if not tokens or not WNID.fullmatch(tokens[0]):
            raise FormatError(f"{path}:{n}: expected `ImageId,wnid x0 y0 x1 y1 ...`")
        _label(out, row[0].strip(), tokens[0], f"{path}:{n}")
    return out


def _label(labels: dict[str, str], image: str, wnid: str, where: str) -> None:
    """One image's label; a second, different one for it is an error (which is right?)."""
    if labels.setdefault(image, wnid) != wnid:
        raise FormatError(
            f"{where}: {image} labelled {wnid}, but {labels[image]} on an earlier line",
            hint="each validation image has one class: fix the label file",
        )


def read_devkit_meta(path: Path | str, data: bytes | None = None) -> dict[str, tuple[int, str]]:
    """The devkit's meta.mat → {wnid: (ILSVRC2012_ID, words)} for the leaf classes
    (num_children == 0). Read with scipy; IDs are in meta.mat's order. `data`: the
    file's bytes, when it was read out of the devkit's tar (`path` then names it)."""
    import scipy.io  # deferred: only devkit trees need it

    try:
        source = io.BytesIO(data) if data is not None else path
        synsets = np.atleast_1d(scipy.io.loadmat(source, squeeze_me=True)["synsets"])
        out: dict[str, tuple[int, str]] = {}
        for s in synsets:
            if int(s["num_children"]) == 0:
                out[str(s["WNID"])] = (int(s["ILSVRC2012_ID"]), str(s["words"]))
    except (
        KeyError,
        ValueError,
        TypeError,
        IndexError,
        OSError,
        EOFError,
        NotImplementedError,
        scipy.io.matlab.MatReadError,
    ) as e:
        # (NotImplementedError: a MATLAB v7.3 file, re-saved; MatReadError: a cut one)
        raise FormatError(f"{path}: not the ILSVRC-2012 devkit's meta.mat ({e})") from None
    return out


def read_devkit_labels(
    meta: Path | str,
    truth: Path | str,
    meta_data: bytes | None = None,
    truth_data: bytes | None = None,
) -> dict[str, str]:
    """{`ILSVRC2012_val_<n>`: wnid}: line n of the ground truth is an ILSVRC2012_ID,
    mapped to its wnid through meta.mat. `*_data`: the files' bytes, read out of the
    devkit's tar."""
    by_id = {i: wnid for wnid, (i, _) in read_devkit_meta(meta, meta_data).items()}
    out: dict[str, str] = {}
    text = _read_text(Path(truth)) if truth_data is None else _decode(truth_data, truth)
    for n, line in enumerate(text.split(), start=1):
        try:
            out[f"ILSVRC2012_val_{n:08d}"] = by_id[int(line)]
        except (KeyError, ValueError):
            raise FormatError(f"{truth}:{n}: {line!r} is not an ILSVRC2012_ID of {meta}") from None
    return out


def _read_text(path: Path) -> str:
    """A label file's text; a byte-order mark (spreadsheets and editors add one) dropped."""
    return _decode(path.read_bytes(), path)


def _decode(data: bytes, path: Path | str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start})",
            hint="save it as UTF-8 (ILSVRC-2012's own files are ASCII)",
        ) from None


# --------------------------------------------------------------------------- finding


def find_flat_val_labels(
    metas: Sequence[Path], val_dir: Path
) -> tuple[str, dict[str, str], list[Path]]:
    """A flat val/'s labels, from the first of `metas` holding Kaggle's CSV or the devkit's
    files: the form ("kaggle", "devkit"), {file stem: wnid}, the files read."""
    kaggle = first_file(metas, [KAGGLE_CSV])
    if kaggle is not None:
        return "kaggle", read_kaggle_labels(kaggle), [kaggle]
    devkit_dirs = [d / sub for d in metas for sub in DEVKIT_DIRS]
    truth = first_file(devkit_dirs, [DEVKIT_TRUTH])
    meta = truth.parent / DEVKIT_META if truth is not None else None
    if truth is not None and meta is not None and meta.is_file():
        return "devkit", read_devkit_labels(meta, truth), [meta, truth]
    if truth is not None:
        raise UserError(
            f"{truth} is there but not meta.mat beside it: its IDs cannot be mapped to wnids",
            hint=f"copy the devkit's data/{DEVKIT_META} next to {DEVKIT_TRUTH}",
        )
    raise UserError(
        f"{val_dir}: flat validation images but no labels for them",
        hint=f"put {KAGGLE_CSV} or the devkit ({DEVKIT_TRUTH} + {DEVKIT_META}) in SOURCE, "
        "or sort the images into val/<wnid>/",
    )


def no_labels_error(label_file: Path | str, images: Path) -> FormatError:
    """A label file that labels nothing, beside images, would give an empty val split."""
    return FormatError(
        f"{label_file}: no labels in it, though {images} holds images",
        hint="it is empty or cut short: copy it again",
    )


def first_file(dirs: Iterable[Path], names: Iterable[str]) -> Path | None:
    """The first of `names` found in the first of `dirs` holding one."""
    for d in dirs:
        for name in names:
            if (d / name).is_file():
                return d / name
    return None


# --------------------------------------------------------------------------- writers


def write_synset_mapping(root: Path, words: dict[str, str]) -> None:
    """Kaggle's `LOC_synset_mapping.txt`: "wnid words" per line, sorted by wnid."""
    lines = [f"{w} {words[w]}\n" for w in sorted(words)]
    _write(Path(root) / "LOC_synset_mapping.txt", "".join(lines).encode())


def write_kaggle(root: Path, val: Sequence[tuple[str, str]], words: dict[str, str]) -> None:
    """`LOC_val_solution.csv` (ImageId, PredictionString of "wnid x0 y0 x1 y1" boxes) for
    the flat val images, and `LOC_synset_mapping.txt`."""
    rows = ["ImageId,PredictionString\n"]
    for rel, wnid in val:
        image_id = Path(rel).stem
        rows.append(f"{image_id},{wnid} 10 12 200 180 {wnid} 30 40 120 160 \n")
    _write(Path(root) / "LOC_val_solution.csv", "".join(rows).encode())
    write_synset_mapping(root, words)


def write_devkit(
    root: Path, val: Sequence[tuple[str, str]], words: dict[str, str], *, seed: int = 0
) -> None:
    """The ILSVRC-2012 devkit's `data/meta.mat` and `data/ILSVRC2012_validation_ground_truth.txt`.

    meta.mat's `synsets` struct array lists the leaf classes first, with
    ILSVRC2012_ID 1..N in an order that is NOT sorted-wnid order (as in the real
    devkit), then a few inner WordNet nodes (num_children > 0). The ground truth
    holds, line n, the ILSVRC2012_ID of `ILSVRC2012_val_<n>.JPEG`.
    """
    import scipy.io  # deferred: only the devkit form needs it

    wnids = sorted(words)
    order = [wnids[i] for i in np.random.default_rng([seed, 11]).permutation(len(wnids))]
    if len(order) > 1 and order == wnids:
        order = order[::-1]
    ids = {w: n + 1 for n, w in enumerate(order)}
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children"]
    fields += ["wordnet_height", "num_train_images"]
    none = np.zeros((1, 0))
    rows: list[tuple[object, ...]] = [
        (ids[w], w, words[w], f"a synthetic {words[w]}", 0, none, 0, 20) for w in order
    ]
    n = len(order)
    rows.append((n + 1, "n00001740", "entity", "the root", n, np.arange(1, n + 1)[None], 2, 0))
    rows.append((n + 2, "n00002137", "abstraction", "an inner node", 0, none, 1, 0))
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        synsets[i, 0] = row
    data = Path(root) / DEVKIT_DIR
    data.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(data / "meta.mat", {"synsets": synsets})
    by_name = {Path(rel).name: wnid for rel, wnid in val}
    lines = []
    for name in sorted(by_name):
        lines.append(f"{ids[by_name[name]]}\n")
    _write(data / "ILSVRC2012_validation_ground_truth.txt", "".join(lines).encode())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
