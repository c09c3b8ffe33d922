"""`alexcli import-weights torchvision|caffe FILE RUN_DIR`: weights trained elsewhere as a
run that `eval`, `predict`, `export`, `viz-kernels` and `alexcli.load` read
(core/nn/imports.py, core/nn/caffe.py; docs/import.md).

The class list says what label i is. torchvision's and Caffe's ImageNet label i is the
i-th wnid in sorted order (ImageFolder's order, Caffe's synsets.txt, and prepare's), so
the list comes from a prepared DATA_DIR of all 1000 classes or Kaggle's
`LOC_synset_mapping.txt`, sorted by wnid.
Without one the classes are named by their index, and `eval` on an ImageNet DATA_DIR
refuses the run (its classes differ).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from alexcli.config import to_dict
from alexcli.core.atomic import write_json
from alexcli.core.fingerprint import file_digest
from alexcli.core.rundir import RunDir
from alexcli.errors import UserError
from alexcli.stages.results import Result
from alexcli.stages.runner import owner

KINDS = ("torchvision", "caffe")
# What `train` (and `run`) leave in a RUN_DIR beside checkpoints/*.pt.
_RUN_FILES = (
    "manifest.json",
    "metrics.jsonl",
    "config.json",
    "imported.json",
    "tensorboard",
    "eval",
    "kernels.png",
    "curves.png",
)


@dataclass(frozen=True)
class ImportReport(Result):
    run: Path
    checkpoint: Path
    kind: str
    source: Path
    sha256: str
    num_classes: int
    classes_from: str | None  # the class list's file or DATA_DIR; None: named by index
    published: dict[str, float]  # the weights' published ILSVRC-2012 val errors


def run_import_weights(
    kind: str,
    file: Path,
    run: Path,
    classes: Path | None = None,
    force: bool = False,
    mean: Path | None = None,
) -> ImportReport:
    """Write `file` (a torchvision state dict, or a Caffe .caffemodel with its `mean`
    .binaryproto) as RUN_DIR `run`: checkpoints/last.pt, config.json and imported.json
    (where it came from)."""
    from alexcli.core.nn import caffe
    from alexcli.core.nn.checkpoint import save_checkpoint
    from alexcli.core.nn.imports import TORCHVISION_VAL, from_torchvision, read_state_dict

    if kind not in KINDS:
        raise UserError(f"{kind}: alexcli imports {', '.join(KINDS)} weights")
    file, run = Path(file), Path(run)
    if not file.is_file():
        raise UserError(f"{file}: no such file")
    if mean is not None and kind != "caffe":
        raise UserError("--mean is for Caffe's weights (torchvision's carry no mean image)")
    if mean is not None and not Path(mean).is_file():
        raise UserError(f"--mean {mean}: no such file")
    if run.exists() and not run.is_dir():
        raise UserError(f"{run} is a file; RUN_DIR is the directory to write")
    if run.is_dir() and owner(run) == "prepare":
        raise UserError(f"{run} is a DATA_DIR (`alexcli prepare` wrote it), not a RUN_DIR")
    target = RunDir(run).last
    earlier = [run / f for f in _RUN_FILES if (run / f).exists()]
    earlier += sorted(RunDir(run).checkpoints.glob("*.pt")) if run.is_dir() else []
    if earlier and not force:
        raise UserError(
            f"{run} already holds a run ({earlier[0].relative_to(run)})",
            hint="choose another RUN_DIR, or add --force to replace it",
        )
    class_list = read_class_list(classes) if classes is not None else None
    if kind == "caffe":
        mean_bgr = caffe.read_binaryproto(Path(mean)) if mean is not None else None
        ckpt = caffe.from_caffe(caffe.read_caffemodel(file), mean_bgr, class_list, file)
        published = dict(caffe.CAFFE_VAL)
    else:
        ckpt = from_torchvision(read_state_dict(file), class_list, file)
        published = dict(TORCHVISION_VAL)
    for path in earlier:  # --force: nothing of the earlier run may pass for this one's
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    save_checkpoint(target, ckpt)
    write_json(RunDir(run).config, to_dict(ckpt.config))
    sha = file_digest(file)
    write_json(
        run / "imported.json",
        {
            "kind": kind,
            "file": str(file.resolve()),
            "sha256": sha,
            "classes": None if classes is None else str(classes),
            "mean": None if mean is None else str(mean),
        },
    )
    return ImportReport(
        run=run,
        checkpoint=target,
        kind=kind,
        source=file,
        sha256=sha,
        num_classes=len(ckpt.classes),
        classes_from=None if classes is None else str(classes),
        published=published,
    )


def read_class_list(source: Path) -> list[dict[str, str]]:
    """Label i's name and words: a DATA_DIR's classes as they are, or a
    `LOC_synset_mapping.txt`'s ("wnid words" per line) sorted by wnid."""
    from alexcli.core.data.labels import WNID, read_synset_mapping
    from alexcli.stages.datadir import open_data_dir

    source = Path(source)
    if source.is_dir():
        return open_data_dir(source).classes
    if not source.is_file():
        raise UserError(f"--classes {source}: no such file or DATA_DIR")
    words = read_synset_mapping(source)
    odd = next((name for name in words if not WNID.fullmatch(name)), None)
    if not words or odd is not None:
        raise UserError(
            f"--classes {source}: not a class list"
            + (f" ({odd!r} is not a wnid)" if odd is not None else " (empty)"),
            hint="give a prepared DATA_DIR, or LOC_synset_mapping.txt: `wnid words` per line",
        )
    return [{"name": wnid, "words": words[wnid]} for wnid in sorted(words)]
