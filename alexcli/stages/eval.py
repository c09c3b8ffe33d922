"""`alexcli eval RUN_DIR DATA_DIR`: the paper's test on a split of a DATA_DIR
(core/nn/loops.py `evaluate_views`): top-1 and top-5 error, 1 or 10 views, per-class
top-1, and the paper's 40.7 % / 18.2 % beside them when the run is the paper's network
on the 1000 ImageNet classes. Keeps no manifest: the output is a report, and rerunning
is the way to refresh it (`alexcli run` caches it by checkpoint and data).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexcli.config import PRESETS, EvalConfig, TrainConfig
from alexcli.core.machine import sleeping_openmp_threads
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import UserError
from alexcli.stages.classifier import Classifier, check_order
from alexcli.stages.datadir import open_data_dir
from alexcli.stages.results import Result

# docs/paper.md "Results to reproduce": 1 CNN, ILSVRC-2012 validation set, 10 views.
PAPER_VAL = {"top1_error": 0.407, "top5_error": 0.182}
_WNID = re.compile(r"n\d{8}")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassError:
    """Top-1 error of one class (None when the split has no image of it)."""

    index: int
    name: str
    words: str
    images: int
    top1_error: float | None


@dataclass(frozen=True)
class EvalReport(Result):
    checkpoint: Path
    epoch: int
    split: str
    views: int
    images: int
    top1_error: float
    top5_error: float
    per_class_top1: list[ClassError]
    paper: dict[str, float] | None  # the paper's errors, when this run is comparable
    # what was published for these weights and this test, with its `source`: the paper's
    # errors (a paper run, 10 views) or torchvision's (its imported weights, 1 view)
    published: dict[str, Any] | None
    devices: list[str]
    amp: str
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return super().to_json() | {"images_per_s": self.images_per_s}


# --------------------------------------------------------------------------- eval


def run_eval(
    run: Path, data_dir: Path, cfg: EvalConfig = EvalConfig(), progress: Progress = SILENT
) -> EvalReport:
    """Top-1 / top-5 error of `run` on DATA_DIR's `cfg.split`, with `cfg.views` views."""
    sleeping_openmp_threads()  # before torch loads: OpenMP reads it then
    from alexcli.core.nn.loops import evaluate_views

    check_order(run, data_dir, "eval")
    data = open_data_dir(data_dir)
    net = Classifier.load(run, cfg)
    net.check_data(data)
    shards = data.shard_set(cfg.split)
    if len(shards) == 0:
        raise UserError(f"{data.root}: the {cfg.split!r} split has no images")
    progress.log(
        f"evaluating {net.ckpt.source} (epoch {net.ckpt.epoch}) on {len(shards)} "
        f"{cfg.split} images, {cfg.views} view(s)"
    )
    task = progress.task(f"eval, {cfg.views} view(s)", total=len(shards), unit="images")
    start = time.perf_counter()
    tally = evaluate_views(
        net.network,
        net.loader(shards, cfg),
        net.normalize,
        crop=net.crop,
        views=cfg.views,
        num_classes=len(data.classes),
        amp=cfg.amp,
        threads=net.threads,
        task=task,
    )
    seconds = time.perf_counter() - start
    task.close()
    if net.threads is not None:
        log.debug("eval: %s", net.threads.describe())
    errors = tally.class_top1_error()
    per_class = [
        ClassError(
            index=i,
            name=c["name"],
            words=c.get("words", ""),
            images=int(tally.class_images[i]),
            top1_error=None if np.isnan(errors[i]) else float(errors[i]),
        )
        for i, c in enumerate(data.classes)
    ]
    return EvalReport(
        checkpoint=net.ckpt.source,
        epoch=net.ckpt.epoch,
        split=cfg.split,
        views=cfg.views,
        images=tally.images,
        top1_error=tally.top1_error,
        top5_error=tally.top5_error,
        per_class_top1=per_class,
        paper=paper_reference(net.cfg, data.classes, cfg.views),
        published=published_reference(net.cfg, data.classes, cfg.views),
        devices=[str(d) for d in net.devices],
        amp=cfg.amp,
        seconds=seconds,
    )


def paper_reference(
    cfg: TrainConfig, classes: Sequence[dict[str, str]], views: int = 10
) -> dict[str, float] | None:
    """The paper's errors when `cfg` is the paper's network and recipe on 1000 ImageNet
    classes (wnids), tested as the paper tested (10 views); None otherwise, since
    nothing else is comparable."""
    if views != 10:
        return None
    paper = PRESETS["paper"]
    same_net = cfg.preset == "paper" and cfg.model == paper.model and cfg.crop == paper.crop
    return dict(PAPER_VAL) if same_net and _imagenet(classes) else None


def published_reference(
    cfg: TrainConfig, classes: Sequence[dict[str, str]], views: int
) -> dict[str, Any] | None:
    """The published errors this evaluation should reproduce, with where they are from:
    the paper's (`paper_reference`), or torchvision's or Caffe's for their weights
    imported (`alexcli import-weights`) and tested as they test them, on one centre crop
    of the 1000 ILSVRC-2012 classes."""
    paper = paper_reference(cfg, classes, views)
    if paper is not None:
        return {"source": "paper, 1 CNN (ILSVRC-2012 val)", **paper}
    if views != 1 or not _imagenet(classes):
        return None
    if cfg.preset == "torchvision":
        from alexcli.core.nn.imports import TORCHVISION_VAL

        return {"source": "torchvision's weights (ILSVRC-2012 val, 1 crop)", **TORCHVISION_VAL}
    if cfg.preset == "caffe":
        from alexcli.core.nn.caffe import CAFFE_VAL

        return {"source": "Caffe's bvlc_alexnet (ILSVRC-2012 val, 1 crop)", **CAFFE_VAL}
    return None


def _imagenet(classes: Sequence[dict[str, str]]) -> bool:
    return len(classes) == 1000 and all(_WNID.fullmatch(c["name"]) for c in classes)
