"""`alexcli ablate DATA_DIR OUT_DIR`: the paper's claims, measured (docs/ablations.md).

For each seed, the baseline (a preset) and each variant that switches one of the
paper's choices off (`VARIANTS`) are trained as ordinary runs under
`OUT_DIR/<variant>/seed-<k>/` by `stages.train.run_train`, so each is cached and
resumed as any run is: a killed study continues where it stopped, and a rerun with
more seeds trains only the new ones. A run's seed is k for every variant: the same
data order and augmentation draws in each (a paired comparison; the weights'
initial draws differ where the shapes do). Each finished run is then measured once —
final weights (last.pt), validation at 10 and 1 views, the training split at 1 view,
the curves of metrics.jsonl — into `measures.json` beside it, a small cached stage
keyed by the run's fingerprint. `stages/claims.py` judges the claims; OUT_DIR gets
claims.json, claims.md and the figures.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexcli.config import AblateConfig, EvalConfig, TrainConfig, to_dict
from alexcli.core.progress import SILENT, Progress, Silent, emit
from alexcli.errors import ConfigError, UserError
from alexcli.stages.claims import Claim, assess, claims_named, finite
from alexcli.stages.results import Result, jsonable
from alexcli.stages.runner import owner, read_manifest, run_stage

STAGE = "ablate-measures"
VERSION = 1
MEASURES = "measures.json"


def _one_tower(cfg: TrainConfig) -> TrainConfig:
    """The paper's one-GPU net (section 3.2's footnote): half the kernels of every conv
    layer but the last, whose kernels and the FC layers stay whole."""
    c = cfg.model.conv_channels
    return _model(cfg, towers=1, conv_channels=(*(w // 2 for w in c[:4]), c[4]))


def _model(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes))


# Each variant switches one of the paper's choices off (docs/ablations.md).
VARIANTS: dict[str, Callable[[TrainConfig], TrainConfig]] = {
    "baseline": lambda c: c,
    "tanh": lambda c: _model(c, activation="tanh"),
    "no-lrn": lambda c: _model(c, lrn=False),
    "pool-2x2": lambda c: _model(c, pool_kernel=2, pool_stride=2),
    "one-tower": _one_tower,
    "no-pca": lambda c: dataclasses.replace(c, lighting_std=0.0),
    "no-crop-flip": lambda c: dataclasses.replace(c, random_crop=False, flip=False),
    "no-dropout": lambda c: _model(c, dropout=0.0),
    "no-weight-decay": lambda c: dataclasses.replace(c, weight_decay=0.0),
    "no-conv3": lambda c: _model(c, omit="conv3"),
    "no-conv4": lambda c: _model(c, omit="conv4"),
    "no-conv5": lambda c: _model(c, omit="conv5"),
}


def variant_config(base: TrainConfig, variant: str, seed: int) -> TrainConfig:
    """The configuration of `variant` at `seed`: the base with one choice switched off.
    A one-tower net on two named devices runs on the first."""
    cfg = dataclasses.replace(VARIANTS[variant](base), seed=seed)
    if cfg.model.towers == 1 and "," in cfg.devices:
        cfg = dataclasses.replace(cfg, devices=cfg.devices.split(",")[0].strip())
    return cfg


def check_variants(base: TrainConfig, variants: set[str]) -> None:
    """Refuse a study whose baseline already has a variant's choice off: the variant
    would train the baseline again and its claim would compare it with itself."""
    from alexcli.stages.train import fingerprint_params

    same = fingerprint_params(base)
    for v in sorted(variants - {"baseline"}):
        again = base.model.towers == 1 and v == "one-tower"  # would halve it once more
        if again or fingerprint_params(VARIANTS[v](base)) == same:
            raise ConfigError(
                f"variant {v!r} changes nothing: the baseline already has that choice off",
                hint="ablate a baseline with the paper's choices on (drop the --set that "
                "turns it off), or leave its claim out with --only",
            )


@dataclass(frozen=True)
class StudyResult(Result):
    out_dir: Path
    claims: list[dict[str, Any]]
    study: dict[str, Any]
    trained: int  # runs trained (or continued) in this call
    up_to_date: bool
    files: dict[str, Path]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = jsonable({
            "out_dir": self.out_dir, "up_to_date": self.up_to_date, "trained": self.trained,
            "study": self.study, "claims": self.claims, "files": self.files,
        })  # fmt: skip
        return data


def plan(claims: Sequence[Claim], seeds: int) -> list[tuple[str, int]]:
    """(variant, seed) of every run, seed by seed so that a study stopped early has
    whole seeds; the baseline first in each."""
    variants = ["baseline", *(v for c in claims for v in c.variants if v != "baseline")]
    return [(v, s) for s in range(seeds) for v in dict.fromkeys(variants)]


def run_ablate(
    data_dir: Path,
    out_dir: Path,
    base: TrainConfig,
    study: AblateConfig = AblateConfig(),
    *,
    force: bool = False,
    progress: Progress = SILENT,
) -> StudyResult:
    """Train and measure every run the claims need, then judge and report them."""
    from alexcli.stages.ablate_report import write_report

    try:
        claims = claims_named(study.only)
    except ValueError as e:
        raise ConfigError(str(e), hint="`alexcli ablate --help` lists the claims") from None
    if study.seeds < 1:
        raise ConfigError(f"--seeds {study.seeds}: must be at least 1")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, Path(data_dir))
    runs = plan(claims, study.seeds)
    check_variants(base, {v for v, _ in runs})
    task = progress.task("ablate", total=len(runs), unit="runs")
    measured: dict[str, dict[int, dict[str, Any]]] = {}
    trained = 0
    for variant, seed in runs:
        run_dir = out_dir / variant / f"seed-{seed}"
        cfg = variant_config(base, variant, seed)
        start = time.perf_counter()
        fresh, values = _run_one(Path(data_dir), run_dir, cfg, study, force, progress)
        trained += fresh
        measured.setdefault(variant, {})[seed] = values
        if fresh:
            progress.log(
                f"ablate: {variant} seed {seed}: val top-1 error "
                f"{values['val_top1_error']:.4f} (10 views), "
                f"{time.perf_counter() - start:.0f} s"
            )
        task.advance(1)
    task.close()
    info = _study_info(Path(data_dir), base, study, measured)
    rows = assess(claims, measured)
    files = write_report(out_dir, rows, measured, info)
    return StudyResult(out_dir, rows, info, trained, trained == 0, files)


class _Inner(Silent):
    """A run's own status lines (epochs, evals) at debug level (`-v` shows them);
    warnings as warnings, naming the run. A study of 36 runs would otherwise print
    ~1,000 lines."""

    def __init__(self, run: str) -> None:
        self.run = run

    def log(self, message: str) -> None:
        if message.startswith("warning:"):
            emit(f"warning: {self.run}: {message.removeprefix('warning:').strip()}")
        else:
            logging.getLogger("alexcli").debug("%s: %s", self.run, message)


def _run_one(
    data_dir: Path,
    run_dir: Path,
    cfg: TrainConfig,
    study: AblateConfig,
    force: bool,
    progress: Progress,
) -> tuple[bool, dict[str, Any]]:
    """Train (or continue, or find up to date) one run, then its measurements."""
    from alexcli.stages.train import run_train
    from alexcli.stages.train.checks import check_same_data

    _check_same_settings(run_dir, cfg, force)
    if not force and (run_dir / "checkpoints" / "last.pt").exists():
        check_same_data(run_dir, data_dir, fix="a new OUT_DIR for the new data, or --force")
    inner = _Inner(f"{run_dir.parent.name} {run_dir.name}")
    result = run_train(data_dir, run_dir, cfg, resume=not force, force=force, progress=inner)
    fp = (read_manifest(run_dir / "manifest.json") or {}).get("fingerprint", "")
    params = {"train": fp, "threshold": study.threshold, "views": [10, 1], "train_views": 1}

    def build() -> dict[str, Any]:
        return {"outputs": [], "measures": jsonable(measure(data_dir, run_dir, study, inner))}

    stage = run_stage(
        stage=STAGE, version=VERSION, params=params, manifest_path=run_dir / MEASURES,
        build=build,
        upstream={"train": fp}, force=force or not result.up_to_date, progress=inner,
    )  # fmt: skip
    return not result.up_to_date, dict(stage.manifest["measures"])


def _check_same_settings(run_dir: Path, cfg: TrainConfig, force: bool) -> None:
    """A run left by a study with other settings (epochs, preset, …) is not continued
    under the new ones: say so, unless --force starts it over."""
    from alexcli.stages.train import fingerprint_params, saved_config

    saved = None if force else saved_config(run_dir)
    if saved is None:
        return
    classes = saved.model.num_classes  # the data's, set by train; the data are checked there
    want = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=classes))
    if fingerprint_params(want) != fingerprint_params(saved):
        raise UserError(
            f"{run_dir} was trained with other settings than this study's",
            hint="rerun with the study's own --preset/--epochs/--set, or --force to start "
            "every run over",
        )


def measure(
    data_dir: Path, run_dir: Path, study: AblateConfig, progress: Progress = SILENT
) -> dict[str, Any]:
    """One finished run's numbers: its final weights on val (10 and 1 views) and on the
    training split (1 view), and what its metrics.jsonl says over the epochs."""
    from alexcli.stages.eval import run_eval
    from alexcli.stages.train import read_run_metrics

    last = run_dir / "checkpoints" / "last.pt"
    cfg = saved_config_or_fail(run_dir)
    ev = EvalConfig(batch_size=study.batch_size, devices=cfg.devices.split(",")[0], amp=cfg.amp)
    out: dict[str, Any] = {}
    for views in (10, 1):
        r = run_eval(last, data_dir, dataclasses.replace(ev, views=views), progress)
        suffix = "" if views == 10 else "_1"
        out[f"val_top1_error{suffix}"] = r.top1_error
        out[f"val_top5_error{suffix}"] = r.top5_error
    train = run_eval(last, data_dir, dataclasses.replace(ev, views=1, split="train"), progress)
    out["train_top1_error"] = train.top1_error
    out["gap"] = out["val_top1_error_1"] - train.top1_error
    out.update(curve_measures(read_run_metrics(run_dir), study.threshold, cfg.model.num_classes))
    return out


def saved_config_or_fail(run_dir: Path) -> TrainConfig:
    from alexcli.stages.train import saved_config

    cfg = saved_config(run_dir)
    if cfg is None:
        raise UserError(f"{run_dir}: no config.json", hint="rerun `alexcli ablate`")
    return cfg


def curve_measures(
    metrics: Sequence[dict[str, Any]], threshold: float, classes: int
) -> dict[str, Any]:
    """From the epoch lines: the training-error curve, the epochs (and seconds) it took
    to fall to `threshold` — linear between epoch ends, from chance at epoch 0; the
    run's length when it never did (`censored`) — and the epoch of the best val error."""
    errors = [finite(m.get("train_top1_error")) for m in metrics]
    seconds = [float(m.get("seconds", 0.0)) for m in metrics]
    val = [float(m["val_top1_error"]) for m in metrics]
    clock = [0.0]
    for s in seconds:
        clock.append(clock[-1] + s)
    # (epoch, training error) where known: an epoch resumed from a checkpoint older than
    # the count has none, and the line runs from the last known point
    known = [(0, 1.0 - 1.0 / classes)] + [(i + 1, e) for i, e in enumerate(errors) if e is not None]
    epochs, censored = float(len(metrics)), True
    for (e0, before), (e1, now) in itertools.pairwise(known):
        if now <= threshold:
            frac = 1.0 if before <= now else (before - threshold) / (before - now)
            epochs, censored = e0 + (e1 - e0) * min(max(frac, 0.0), 1.0), False
            break
    whole = int(epochs)
    at = clock[whole] + (epochs - whole) * (clock[min(whole + 1, len(clock) - 1)] - clock[whole])
    return {
        "train_curve": errors,
        "val_curve": val,
        "epochs_to_threshold": epochs,
        "seconds_to_threshold": at,
        "threshold_censored": censored,
        "epochs_to_best": 1 + min(range(len(val)), key=val.__getitem__) if val else None,
        "seconds": clock[-1],
        "epochs": len(metrics),
        "classes": classes,
    }


def _check_out_dir(out_dir: Path, data_dir: Path) -> None:
    """OUT_DIR holds runs of its own: never a DATA_DIR or a RUN_DIR."""
    kind = owner(out_dir) if out_dir.is_dir() else None
    if kind is not None or out_dir.resolve() == data_dir.resolve():
        what = "a RUN_DIR" if kind == "train" else "a DATA_DIR"
        raise UserError(
            f"{out_dir} is {what}: a study writes its runs into a directory of its own",
            hint="`alexcli ablate DATA_DIR OUT_DIR` with a new OUT_DIR",
        )


def _study_info(
    data_dir: Path,
    base: TrainConfig,
    study: AblateConfig,
    measured: dict[str, dict[int, dict[str, Any]]],
) -> dict[str, Any]:
    from alexcli.stages.datadir import open_data_dir

    data = open_data_dir(data_dir)
    return {
        "data_dir": str(data_dir),
        "classes": len(data.classes),
        "train_images": data.images("train"),
        "val_images": data.images("val"),
        "preset": base.preset,
        "epochs": base.epochs,
        "seeds": study.seeds,
        "threshold": study.threshold,
        "variants": sorted(measured),
        "base_config": to_dict(
            dataclasses.replace(
                base, model=dataclasses.replace(base.model, num_classes=len(data.classes))
            )
        ),
    }
