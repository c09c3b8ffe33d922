"""`alexcli ablate DATA_DIR OUT_DIR`: the paper's claims, measured (docs/ablations.md).

For each seed, the baseline (a preset), each variant that switches one of the paper's
choices off and the reference networks some claims need (variants.py) are
trained as ordinary runs under `OUT_DIR/<variant>/seed-<k>/` by
`stages.train.run_train`, so each is cached and resumed as any run is: a killed study
continues where it stopped, and a rerun with more seeds trains only the new ones. A
run's seed is k for every network: the same data order and augmentation draws in each
(a paired comparison; the weights' initial draws differ where the shapes do). Figure
1's two networks first get their lr: each activation's fastest of a small grid, on a
seed of its own (`OUT_DIR/figure1-lr/`). Each finished run is then measured once —
final weights (last.pt), validation at 10 and 1 views, the training split at 1 view,
the LRN's load, the curves of metrics.jsonl — into `measures.json` beside it, a small
cached stage keyed by the run's fingerprint. `claims.py` judges the claims;
OUT_DIR gets claims.json, claims.md and the figures.

The package, from the study down: this module runs it (`run_ablate`); variants.py
names its networks; measures.py measures a finished run; claims.py holds the paper's
claims and judges them with the statistics of verdicts.py (numpy and scipy, no
torch); report.py writes claims.json, claims.md and the figures.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexcli.config import AblateConfig, TrainConfig, to_dict
from alexcli.core.progress import SILENT, Progress, Silent, emit
from alexcli.core.rundir import RunDir
from alexcli.errors import ConfigError, UserError
from alexcli.stages.results import Result, jsonable
from alexcli.stages.runner import owner, read_manifest, run_stage
from alexcli.workflows.ablate.claims import CENSORED, Claim, assess, claims_named, measurements
from alexcli.workflows.ablate.measures import LRN_IMAGES, lrn_flags, measure
from alexcli.workflows.ablate.variants import (
    FIGURE1,
    VARIANTS,
    check_variants,
    network,
    same_as_baseline,
    variant_config,
)

STAGE = "ablate-measures"
VERSION = 2
MEASURES = "measures.json"
# Figure 1's lr is chosen on a seed of its own, apart from every study's 0…999,999: the
# comparison's seeds do not pick the lr they are then compared at.
TUNING_SEED = 1_000_000
TUNING_DIR = "figure1-lr"


@dataclass(frozen=True)
class StudyResult(Result):
    out_dir: Path
    claims: list[dict[str, Any]]
    study: dict[str, Any]
    trained: int  # runs trained (or continued) in this call
    up_to_date: bool
    files: dict[str, Path]
    measurements: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = jsonable(
            {
                "out_dir": self.out_dir,
                "up_to_date": self.up_to_date,
                "trained": self.trained,
                "study": self.study,
                "claims": self.claims,
                "measurements": self.measurements,
                "files": self.files,
            }
        )
        return data


def plan(claims: Sequence[Claim], seeds: int, first_seed: int = 0) -> list[tuple[str, int]]:
    """(network, seed) of every run, seed by seed so that a study stopped early has
    whole seeds; the baseline first in each (the ten-views measurement reads it)."""
    names = ["baseline", *(n for c in claims for n in c.variants)]
    return [(n, s) for s in range(first_seed, first_seed + seeds) for n in dict.fromkeys(names)]


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
    from alexcli.workflows.ablate.report import write_report

    try:
        claims = claims_named(study.only)
    except ValueError as e:
        raise ConfigError(str(e), hint="`alexcli ablate --help` lists the claims") from None
    _check_study(study)
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    _check_out_dir(out_dir, data_dir)
    runs = plan(claims, study.seeds, study.first_seed)
    check_variants(base, {n for n, _ in runs})
    aliases = {n for n, _ in runs if same_as_baseline(base, n)}
    figure1 = any(n in FIGURE1 for n, _ in runs)
    grid = [(a, base.lr * f) for a in FIGURE1.values() for f in study.figure1_lrs]
    task = progress.task("ablate", total=len(runs) + len(grid) * figure1, unit="runs")
    trained, tuning = 0, []
    if figure1:  # each activation's lr first: Figure 1's runs train at it
        for activation, lr in grid:
            run_dir = out_dir / TUNING_DIR / f"{activation}-lr{lr:g}" / f"seed-{TUNING_SEED}"
            cfg = dataclasses.replace(
                variant_config(
                    base, f"fig1-{activation}", TUNING_SEED, figure1_epochs=study.figure1_epochs
                ),
                lr=lr,
            )
            fresh, values = _run_one(data_dir, run_dir, cfg, study, force, progress, full=False)
            trained += fresh
            tuning.append({"activation": activation, "lr": lr, **_speed(values)})
            task.advance(1)
    lrs = choose_lrs(tuning)
    measured: dict[str, dict[int, dict[str, Any]]] = {}
    for name, seed in runs:
        if name in aliases:  # the baseline itself (its runs come first in each seed)
            measured.setdefault(name, {})[seed] = measured["baseline"][seed]
            task.advance(1)
            continue
        run_dir = out_dir / name / f"seed-{seed}"
        cfg = variant_config(base, name, seed, lrs, study.figure1_epochs)
        start = time.perf_counter()
        fresh, values = _run_one(data_dir, run_dir, cfg, study, force, progress)
        trained += fresh
        measured.setdefault(name, {})[seed] = values
        if fresh:
            progress.log(
                f"ablate: {name} seed {seed}: val top-1 error "
                f"{values['val_top1_error']:.4f} (10 views), "
                f"{time.perf_counter() - start:.0f} s"
            )
        task.advance(1)
    task.close()
    info = _study_info(data_dir, base, study, measured, aliases)
    if figure1:
        info["figure1"] = {
            "lr_grid": list(study.figure1_lrs),
            "tuning_seed": TUNING_SEED,
            "epochs": study.figure1_epochs or base.epochs,
            "lr": lrs,
            "tuning": tuning,
        }
    rows = assess(claims, measured, study_flags(claims, measured, info))
    for row in rows:
        row["parameters"] = {n: info["networks"][n]["parameters"] for n in row["variants"]}
    extra = measurements(measured)
    files = write_report(out_dir, rows, measured, info, extra)
    return StudyResult(out_dir, rows, info, trained, trained == 0, files, extra)


def _check_study(study: AblateConfig) -> None:
    if study.first_seed + study.seeds > TUNING_SEED:
        raise ConfigError(
            f"seeds {study.first_seed}…{study.first_seed + study.seeds - 1}: a study's "
            f"seeds stay below {TUNING_SEED:,}, which picks Figure 1's lr",
            hint="fewer --seeds or a lower --first-seed",
        )
    if not study.figure1_lrs or min(study.figure1_lrs) <= 0:
        raise ConfigError(
            f"figure1_lrs {list(study.figure1_lrs)}: one or more multiples above 0",
            hint="e.g. --set figure1_lrs=[0.5,1,2] in a recipe's [ablate]",
        )


def _speed(values: dict[str, Any]) -> dict[str, Any]:
    curve = [e for e in values.get("train_curve", []) if e is not None]
    return {
        "epochs_to_threshold": values["epochs_to_threshold"],
        "censored": bool(values["threshold_censored"]),
        "final_train_error": curve[-1] if curve else None,
    }


def choose_lrs(tuning: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each activation's fastest lr to the threshold (the paper: "chosen independently to
    make training as fast as possible"); among runs that never reached it, the lowest
    final training error."""
    best: dict[str, tuple[tuple[bool, float, float], float]] = {}
    for t in tuning:
        final = t["final_train_error"]
        key = (t["censored"], t["epochs_to_threshold"], 1.0 if final is None else final)
        if t["activation"] not in best or key < best[t["activation"]][0]:
            best[t["activation"]] = (key, t["lr"])
    return {a: lr for a, (_, lr) in best.items()}


def study_flags(
    claims: Sequence[Claim], runs: dict[str, dict[int, dict[str, Any]]], info: dict[str, Any]
) -> dict[str, list[str]]:
    """What this study found it could not make like the paper's test, per claim: an LRN
    that divides by nearly a constant at this input scale; a Figure 1 lr at the grid's
    edge; runs that never reached the threshold."""
    flags: dict[str, list[str]] = {c.name: [] for c in claims}
    if "lrn" in flags:
        flags["lrn"] += lrn_flags(runs.get("baseline", {}))
    figure1 = info.get("figure1")
    if "relu" in flags and figure1:
        grid = [f * info["base_config"]["lr"] for f in figure1["lr_grid"]]
        for activation, lr in figure1["lr"].items():
            if len(grid) > 1 and lr in (min(grid), max(grid)):
                flags["relu"].append(
                    f"{activation}'s lr {lr:g} is at the edge of the grid "
                    f"({', '.join(f'{x:g}' for x in grid)}): a wider one might train faster"
                )
        censored = sorted(
            f"{n} seed {s}" for n in FIGURE1 for s, r in runs.get(n, {}).items() if r.get(CENSORED)
        )
        if censored:
            flags["relu"].append(
                f"never reached the threshold: {', '.join(censored)} (a lower bound: the sign "
                "test decides; raise --threshold or figure1_epochs)"
            )
    return flags


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
    *,
    full: bool = True,
) -> tuple[bool, dict[str, Any]]:
    """Train (or continue, or find up to date) one run, then its measurements: all of
    them, or (`full=False`, Figure 1's lr search) the curves alone."""
    from alexcli.stages.train import run_train
    from alexcli.stages.train.checks import check_same_data

    _check_same_settings(run_dir, cfg, force)
    if not force and RunDir(run_dir).last.exists():
        check_same_data(run_dir, data_dir, fix="a new OUT_DIR for the new data, or --force")
    inner = _Inner(f"{run_dir.parent.name} {run_dir.name}")
    result = run_train(data_dir, run_dir, cfg, resume=not force, force=force, progress=inner)
    fp = (read_manifest(RunDir(run_dir).manifest) or {}).get("fingerprint", "")
    params: dict[str, Any] = {"train": fp, "threshold": study.threshold}
    if full:
        params |= {"views": [10, 1], "train_views": 1, "lrn_images": LRN_IMAGES}

    def build() -> dict[str, Any]:
        values = measure(data_dir, run_dir, study, inner, full=full)
        return {"outputs": [], "measures": jsonable(values)}

    stage = run_stage(
        stage=STAGE,
        version=VERSION,
        params=params,
        manifest_path=run_dir / MEASURES,
        build=build,
        upstream={"train": fp},
        force=force or not result.up_to_date,
        progress=inner,
    )
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
    aliases: set[str],
) -> dict[str, Any]:
    from alexcli.stages.datadir import open_data_dir

    data = open_data_dir(data_dir)
    classes = len(data.classes)

    def model(name: str) -> Any:
        cfg = variant_config(base, name, 0)
        return dataclasses.replace(cfg.model, num_classes=classes)

    networks = {
        name: {
            **network(model(name)).to_json(),
            "what": VARIANTS[name].what,
            "reference": VARIANTS[name].reference,
            "same_as_baseline": name in aliases,
        }
        for name in sorted(measured, key=list(VARIANTS).index)
    }
    return {
        "data_dir": str(data_dir),
        "classes": classes,
        "train_images": data.images("train"),
        "val_images": data.images("val"),
        "preset": base.preset,
        "epochs": base.epochs,
        "seeds": study.seeds,
        "first_seed": study.first_seed,
        "threshold": study.threshold,
        "variants": sorted(measured),
        "networks": networks,
        "base_config": to_dict(
            dataclasses.replace(base, model=dataclasses.replace(base.model, num_classes=classes))
        ),
    }
