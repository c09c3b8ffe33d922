"""Recipes: the stages chained, each skipped when up to date (`alexcli run`, `alexcli demo`).

A recipe (pipelines/*.toml, `config.Recipe`) names a source, DATA_DIR, RUN_DIR, the
stages to run and each stage's configuration. `run_recipe` calls the same stage
functions as the single commands, in order: prepare → stats → train → eval →
viz-kernels → viz-curves. Each stage keeps its own "up to date" rule; eval, which
has none of its own, is cached here by the checkpoint, the data and the views.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from alexcli.config import (
    STAGE_NAMES,
    Recipe,
    SyntheticConfig,
    find_recipe,
    load_recipe,
    to_dict,
)
from alexcli.core.atomic import write_json
from alexcli.core.fingerprint import file_digest
from alexcli.core.progress import SILENT, Progress
from alexcli.core.rundir import RunDir
from alexcli.errors import ConfigError, UserError
from alexcli.stages.results import Result, jsonable
from alexcli.stages.runner import read_manifest, run_stage

_SYNTHETIC_STAMP = ".alexcli-synthetic.json"

Done = tuple[bool, dict[str, Path], str]  # up to date, artefacts, notes


@dataclass(frozen=True)
class Step(Result):
    """One stage as the chain ran it."""

    stage: str
    up_to_date: bool
    seconds: float
    artefacts: dict[str, Path] = field(default_factory=dict)
    notes: str = ""  # what a user should see of it: skipped files, epochs, speed


@dataclass(frozen=True)
class PipelineResult(Result):
    recipe: Recipe
    source: Path
    data_dir: Path
    run_dir: Path
    steps: list[Step]
    evals: dict[int, dict[str, Any]]  # views → the eval report, as eval's --json writes it
    classes: int

    @property
    def chance_top1_error(self) -> float:
        return 1 - 1 / self.classes if self.classes else float("nan")

    @property
    def chance_top5_error(self) -> float:
        return max(0.0, 1 - 5 / self.classes) if self.classes else float("nan")

    def to_json(self) -> dict[str, Any]:
        return jsonable(
            {
                "classes": self.classes,
                "chance": {
                    "top1_error": self.chance_top1_error,
                    "top5_error": self.chance_top5_error,
                },
                "evals": {str(v): e for v, e in self.evals.items()},
                "steps": [s.to_json() for s in self.steps],
            }
        )


def run_recipe(
    path: Path | str,
    sets: list[str] | tuple[str, ...] = (),
    *,
    base: Path | None = None,
    until: str | None = None,
    force: bool = False,
    progress: Progress = SILENT,
) -> PipelineResult:
    """`alexcli run RECIPE`: a TOML file, or a shipped recipe's name; load, override, run."""
    path = find_recipe(path)
    recipe = load_recipe(path, sets)
    return run_chain(
        recipe,
        base=base or Path.cwd(),
        until=until,
        force=force,
        progress=progress,
        where=str(path),
    )


def run_demo(
    work_dir: Path,
    sets: list[str] | tuple[str, ...] = (),
    *,
    force: bool = False,
    progress: Progress = SILENT,
) -> PipelineResult:
    """`alexcli demo`: the shipped demo recipe, with every path under WORK_DIR."""
    if Path(work_dir).exists() and not Path(work_dir).is_dir():
        raise UserError(f"{work_dir}: exists and is not a directory", hint="name a WORK_DIR folder")
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return run_recipe("demo", sets, base=Path(work_dir), force=force, progress=progress)


def run_chain(
    recipe: Recipe,
    *,
    base: Path,
    until: str | None = None,
    force: bool = False,
    progress: Progress = SILENT,
    where: str = "recipe",
) -> PipelineResult:
    """Run the recipe's stages in order (up to `until`); paths are relative to `base`."""
    stages = _stages_to_run(recipe, until, where)
    source, data_dir, run_dir = (
        base / recipe.source,
        base / recipe.data_dir,
        base / recipe.run_dir,
    )
    steps: list[Step] = []
    evals: dict[int, dict[str, Any]] = {}

    def timed(stage: str, work: Callable[[], Done]) -> None:
        progress.log(f"── {stage}")
        start = time.perf_counter()
        up_to_date, artefacts, notes = work()
        steps.append(Step(stage, up_to_date, time.perf_counter() - start, artefacts, notes))

    if "prepare" in stages:
        if recipe.source == "synthetic":
            source = base / "source"
            timed("synthetic", lambda: _synthetic(source, recipe.synthetic, force, progress))
        elif not recipe.source:
            raise ConfigError(f"{where}: 'source' is not set", hint="--set source=/data/imagenet")
        elif not source.exists():
            raise UserError(f"{where}: source {str(source)!r} does not exist")
        timed("prepare", lambda: _prepare(recipe, source, data_dir, force, progress))
    if "stats" in stages:
        timed("stats", lambda: _stats(recipe, data_dir, force, progress))
    if "train" in stages:
        timed("train", lambda: _train(recipe, data_dir, run_dir, force, progress))
    if "eval" in stages:
        for views in dict.fromkeys((1, recipe.eval.views)):  # the centre crop, then the recipe's
            label = f"eval ({views} view{'s' if views > 1 else ''})"
            timed(label, partial(_eval, recipe, views, data_dir, run_dir, force, progress, evals))
    if "viz-kernels" in stages:
        timed("viz-kernels", lambda: _viz("kernels", run_dir, progress))
    if "viz-curves" in stages:
        timed("viz-curves", lambda: _viz("curves", run_dir, progress))
    if "ablate" in stages:
        study = base / recipe.study_dir
        timed("ablate", lambda: _ablate(recipe, data_dir, study, force, progress))
    return PipelineResult(recipe, source, data_dir, run_dir, steps, evals, _class_count(data_dir))


def _stages_to_run(recipe: Recipe, until: str | None, where: str) -> list[str]:
    stages = list(recipe.stages)
    if until is None:
        return stages
    if until not in STAGE_NAMES:
        raise UserError(f"--until {until!r}: not a stage", hint=f"stages: {', '.join(STAGE_NAMES)}")
    if until not in stages:
        raise ConfigError(f"{where}: --until {until!r}, but the recipe does not run it")
    return stages[: stages.index(until) + 1]


# --------------------------------------------------------------------------- steps


def _synthetic(root: Path, cfg: SyntheticConfig, force: bool, progress: Progress) -> Done:
    """Generate the synthetic tree once; a whole tree is renamed into place with its stamp."""
    from alexcli.core.data.synthetic import make_tree

    if root.exists() and not _generated_or_empty(root):
        raise UserError(
            f"{root}: exists and was not generated by alexcli (no {_SYNTHETIC_STAMP}): "
            "not replacing it with a synthetic tree",
            hint="move it away, or run from another directory (the demo: another WORK_DIR)",
        )
    stamp = to_dict(cfg)
    if not force and _read_json(root / _SYNTHETIC_STAMP) == stamp:
        progress.log(f"synthetic: up to date ({root})")
        return True, {"source": root}, ""
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    progress.log(f"synthetic: {cfg.classes} classes × {cfg.train_per_class} + {cfg.val_per_class}")
    make_tree(
        tmp,
        classes=cfg.classes,
        train_per_class=cfg.train_per_class,
        val_per_class=cfg.val_per_class,
        seed=cfg.seed,
        traps=cfg.traps,
    )
    if cfg.archives:  # packed as downloaded; the tree itself is not kept
        from alexcli.core.data.archives import write_archives

        packed = tmp.with_name(tmp.name + ".archives")
        shutil.rmtree(packed, ignore_errors=True)
        write_archives(tmp, packed)
        shutil.rmtree(tmp)
        os.replace(packed, tmp)
        progress.log("synthetic: packed as ILSVRC-2012's archives (read in place by prepare)")
    write_json(tmp / _SYNTHETIC_STAMP, stamp)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return False, {"source": root}, ""


def _generated_or_empty(root: Path) -> bool:
    return root.is_dir() and ((root / _SYNTHETIC_STAMP).is_file() or not any(root.iterdir()))


def _prepare(recipe: Recipe, source: Path, data_dir: Path, force: bool, progress: Progress) -> Done:
    from alexcli.stages.prepare import run_prepare

    r = run_prepare(source, data_dir, recipe.prepare, force=force, progress=progress)
    notes = [f"{r.classes} classes, " + ", ".join(f"{n} {k}" for k, n in r.images.items())]
    notes += [f"converted {n}: {what}" for what, n in r.converted.items()]
    notes += [f"skipped {n}: {why}" for why, n in sorted(r.skipped.items())]
    artefacts = {"shards": data_dir / "train", "manifest": data_dir / "manifest.json"}
    return r.up_to_date, artefacts, "\n".join(notes)


def _stats(recipe: Recipe, data_dir: Path, force: bool, progress: Progress) -> Done:
    from alexcli.stages.stats import run_stats

    r = run_stats(data_dir, recipe.stats, force=force, progress=progress)
    notes = f"{r.stats.images} images; RGB mean " + "/".join(f"{v:.1f}" for v in r.stats.rgb_mean)
    return r.up_to_date, {"stats": r.stats_path, "mean image": r.mean_png}, notes


def _train(recipe: Recipe, data_dir: Path, run_dir: Path, force: bool, progress: Progress) -> Done:
    from alexcli.stages.train import run_train
    from alexcli.stages.train.checks import check_same_data

    # A recipe rerun continues an interrupted run rather than refusing it, but never one
    # trained on other data. Stopped before its first checkpoint, a run has config.json
    # and nothing trained: resuming it starts it.
    last = RunDir(run_dir).last
    begun = RunDir(run_dir).config.exists() and not RunDir(run_dir).manifest.exists()
    resume = not force and (last.exists() or begun)
    if resume and last.exists():
        check_same_data(
            run_dir,
            data_dir,
            fix="--set run_dir=NEW trains a new run beside it "
            "(the demo: another WORK_DIR); --force redoes every stage",
        )
    r = run_train(data_dir, run_dir, recipe.train, resume=resume, force=force, progress=progress)
    notes = f"{len(r.metrics)} epochs, preset {r.config.preset}"
    if r.best_top1_error is not None:
        notes += f", best val top-1 error {100 * r.best_top1_error:.1f} %"
    if r.epochs_run:
        notes += f", {r.images_per_s:.0f} images/s"
    artefacts = {"checkpoint": r.checkpoints["best"], "metrics": RunDir(run_dir).metrics_file}
    return r.up_to_date, artefacts, notes


def _eval(
    recipe: Recipe,
    views: int,
    data_dir: Path,
    run_dir: Path,
    force: bool,
    progress: Progress,
    evals: dict[int, dict[str, Any]],
) -> Done:
    """eval, cached by (the checkpoint's bytes, the data, split, views) in RUN_DIR/eval/."""
    from alexcli.core.nn.checkpoint import resolve_checkpoint
    from alexcli.stages.datadir import open_data_dir
    from alexcli.stages.eval import run_eval

    cfg = dataclasses.replace(recipe.eval, views=views)  # type: ignore[arg-type]
    name = f"{cfg.split}-{views}view"
    report_path = run_dir / "eval" / f"{name}.json"
    checkpoint = resolve_checkpoint(run_dir)

    def build() -> dict[str, Any]:
        report = run_eval(run_dir, data_dir, cfg, progress).to_json()
        write_json(report_path, report)
        return {"outputs": [report_path.name]}

    result = run_stage(
        stage="eval",
        version=1,
        params={"split": cfg.split, "views": views},
        manifest_path=run_dir / "eval" / f"{name}.manifest.json",
        build=build,
        upstream={
            "checkpoint": file_digest(checkpoint)[:16],
            "prepare": open_data_dir(data_dir).fingerprint,
        },
        force=force,
        progress=progress,
    )
    evals[views] = report = json.loads(report_path.read_text())
    notes = f"{report['images']} images, {report['images_per_s']:.0f} images/s"
    return result.up_to_date, {f"eval, {views} view(s)": report_path}, notes


def _viz(kind: str, run_dir: Path, progress: Progress) -> Done:
    """Redrawn every time: a second or two, from one file."""
    from alexcli.stages.viz import run_viz_curves, run_viz_kernels

    if kind == "kernels":
        out = run_dir / "kernels.png"
        k = run_viz_kernels(run_dir, out, progress=progress)
        colour = ", ".join(f"tower {t.tower} {t.mean:.2f}" for t in k.colour)
        return False, {"kernels": out}, f"colour measure: {colour}"
    out = run_dir / "curves.png"
    c = run_viz_curves(run_dir, out, progress=progress)
    return (
        False,
        {"curves": out},
        f"lower lr from epochs {', '.join(str(d.epoch) for d in c.drops)}",
    )


def _ablate(recipe: Recipe, data_dir: Path, out_dir: Path, force: bool, progress: Progress) -> Done:
    from alexcli.workflows.ablate import run_ablate

    r = run_ablate(data_dir, out_dir, recipe.train, recipe.ablate, force=force, progress=progress)
    verdicts = [
        f"{c['claim']}: direction {c['direction']}, "
        + ("no size figure" if c["size"] is None else f"size {c['size']}")
        for c in r.claims
    ]
    return r.up_to_date, {"claims": r.files["markdown"]}, "; ".join(verdicts)


def _class_count(data_dir: Path) -> int:
    manifest = read_manifest(data_dir / "manifest.json")
    return len(manifest["classes"]) if manifest else 0


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
