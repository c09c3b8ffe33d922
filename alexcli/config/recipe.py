"""Recipes: the stages chained, run by `alexcli run` and `alexcli demo`.

The recipes alexcli ships live inside the package (`alexcli/pipelines/*.toml`, read
through importlib.resources, so a wheel install has them); `alexcli run paper` names one
without a path. The repository's top-level `pipelines/` is a link to the same folder.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alexcli.config.layering import follow_batch, layers_given, load_toml, merge, parse_sets
from alexcli.config.schema import (
    AblateConfig,
    EvalConfig,
    PrepareConfig,
    StatsConfig,
    SyntheticConfig,
    TrainConfig,
    preset,
)
from alexcli.errors import ConfigError

STAGE_NAMES = ("prepare", "stats", "train", "eval", "viz-kernels", "viz-curves", "ablate")


@dataclass(frozen=True)
class Recipe:
    """A chain of stages and each stage's configuration.

    Paths are relative to the directory the command runs in (`alexcli demo`: WORK_DIR).
    `source = "synthetic"` generates the tree described by `[synthetic]` under
    `source/` there first. The eval stage reports the centre crop and `eval.views`.
    """

    source: str = ""
    data_dir: str = "data"
    run_dir: str = "run"
    study_dir: str = "study"  # `ablate`'s OUT_DIR
    stages: tuple[str, ...] = STAGE_NAMES[:-1]  # all but ablate, unless a recipe names it
    prepare: PrepareConfig = PrepareConfig()
    stats: StatsConfig = StatsConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    ablate: AblateConfig = AblateConfig()
    synthetic: SyntheticConfig = SyntheticConfig()


def shipped_recipes() -> dict[str, Path]:
    """The recipes inside the package, by name (`demo`, `paper`, `imagenet100`)."""
    folder = Path(str(importlib.resources.files("alexcli") / "pipelines"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def find_recipe(name_or_path: Path | str) -> Path:
    """A recipe file as given, else the shipped recipe of that name (`paper`, `paper.toml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if not path.suffix and path.with_suffix(".toml").is_file():  # a file here wins
        return path.with_suffix(".toml")
    shipped = shipped_recipes()
    name = path.name.removesuffix(".toml")
    if path.parent == Path(".") and name in shipped:
        return shipped[name]
    raise ConfigError(
        f"{path}: no such recipe file",
        hint=f"a path to a TOML recipe, or one shipped with alexcli: {', '.join(shipped)}",
    )


def load_recipe(path: Path, sets: Sequence[str] = ()) -> Recipe:
    """Read a recipe file, apply `--set key=value` overrides, validate every key."""
    data = load_toml(path)
    where = str(path)
    overrides = parse_sets(sets)
    train = data.get("train", {})
    preset_name = overrides.get("train", {}).get("preset", train.get("preset", "paper"))
    base = Recipe(train=preset(str(preset_name)))
    recipe = merge(merge(base, data, where), overrides, "--set")
    train_cfg = follow_batch(
        recipe.train, base.train, given=layers_given(train, overrides.get("train", {}))
    )
    recipe = dataclasses.replace(recipe, train=train_cfg)
    unknown = [s for s in recipe.stages if s not in STAGE_NAMES]
    if unknown:
        raise ConfigError(
            f"{where}: unknown stage {unknown[0]!r} in `stages`",
            hint=f"stages are: {', '.join(STAGE_NAMES)}",
        )
    if not recipe.stages:
        raise ConfigError(
            f"{where}: `stages` is empty", hint=f"list some of {', '.join(STAGE_NAMES)}"
        )
    order = [s for s in STAGE_NAMES if s in recipe.stages]
    if list(recipe.stages) != order:  # they always run in the chain's order
        raise ConfigError(
            f"{where}: `stages` out of order ({', '.join(recipe.stages)})",
            hint=f"list them as they run: {', '.join(order)}",
        )
    return recipe
