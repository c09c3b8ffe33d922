"""Recipes: the stages chained (pipelines/*.toml), run by `alexcli run` and `alexcli demo`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alexcli.config.layering import load_toml, merge, parse_sets
from alexcli.config.schema import (
    EvalConfig,
    PrepareConfig,
    StatsConfig,
    SyntheticConfig,
    TrainConfig,
    preset,
)
from alexcli.errors import ConfigError

STAGE_NAMES = ("prepare", "stats", "train", "eval", "viz-kernels", "viz-curves")


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
    stages: tuple[str, ...] = STAGE_NAMES
    prepare: PrepareConfig = PrepareConfig()
    stats: StatsConfig = StatsConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    synthetic: SyntheticConfig = SyntheticConfig()


def load_recipe(path: Path, sets: Sequence[str] = ()) -> Recipe:
    """Read a recipe file, apply `--set key=value` overrides, validate every key."""
    data = load_toml(path)
    where = str(path)
    overrides = parse_sets(sets)
    train = data.get("train", {})
    preset_name = overrides.get("train", {}).get("preset", train.get("preset", "paper"))
    base = Recipe(train=preset(str(preset_name)))
    recipe = merge(merge(base, data, where), overrides, "--set")
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
