"""`alexcli predict RUN_DIR IMAGE...`: any image files, through prepare's own decode and
resize (`core.data.decode.load_image`), then the test views: the top-5 classes of each.
A file that cannot be read gets an error line; the others are still answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexcli.config import EvalConfig
from alexcli.core.machine import sleeping_openmp_threads
from alexcli.core.progress import SILENT, Progress, Task
from alexcli.stages.classifier import Classifier, Guess
from alexcli.stages.results import Result


@dataclass(frozen=True)
class Prediction:
    """One image's answer; `error` (and no guesses) when it could not be read."""

    path: Path
    top5: list[Guess]
    error: str | None = None


@dataclass(frozen=True)
class PredictReport(Result):
    checkpoint: Path
    views: int
    predictions: list[Prediction]

    @property
    def failed(self) -> list[Prediction]:
        return [p for p in self.predictions if p.error is not None]


def run_predict(
    run: Path,
    paths: Sequence[Path],
    cfg: EvalConfig = EvalConfig(),
    progress: Progress = SILENT,
) -> PredictReport:
    """The top-5 classes of each image file (prepare's resize, then `cfg.views` views).

    A file that cannot be read gets an `error` instead; the others are still answered.
    """
    sleeping_openmp_threads()  # before torch loads: OpenMP reads it then
    net = Classifier.load(run, cfg)
    task = progress.task("predict", total=len(paths), unit="images")
    with net.running():
        answers = _answers(net, paths, cfg, task)
    task.close()
    return PredictReport(net.ckpt.source, cfg.views, answers)


def _answers(
    net: Classifier, paths: Sequence[Path], cfg: EvalConfig, task: Task
) -> list[Prediction]:
    """Each file's guesses or error, a batch at a time."""
    from alexcli.core.data.decode import Unreadable

    answers: list[Prediction] = []
    for lo in range(0, len(paths), cfg.batch_size):  # decode a batch at a time: memory bound
        chunk = [Path(p) for p in paths[lo : lo + cfg.batch_size]]
        decoded: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for i, path in enumerate(chunk):
            try:
                decoded[i] = net.preprocess(path)
            except Unreadable as e:
                errors[i] = str(e)
        guesses: dict[int, list[Guess]] = {}
        if decoded:
            probs = net.classify(np.stack(list(decoded.values())), cfg.views)
            guesses = dict(zip(decoded, net.guesses(probs), strict=True))
        answers += [Prediction(p, guesses.get(i, []), errors.get(i)) for i, p in enumerate(chunk)]
        task.advance(len(chunk))
    return answers
