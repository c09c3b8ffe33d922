"""Configuration: frozen dataclasses whose defaults are the paper's values
(`schema`), resolved once from layers (`layering`), chained into recipes (`recipe`).

One configuration per stage, resolved once and never mutated:

    defaults  <  preset  <  recipe (TOML)  <  --set key=value  <  named flags

This package is a leaf: it imports nothing from alexcli but `errors`, and never torch.
"""

from alexcli.config.layering import (
    FLAGS,
    describe_batch_rule,
    describe_bound,
    fingerprint_view,
    follow_batch,
    from_dict,
    load_toml,
    merge,
    parse_sets,
    to_dict,
    train_config,
    with_values,
)
from alexcli.config.recipe import (
    STAGE_NAMES,
    Recipe,
    find_recipe,
    load_recipe,
    shipped_recipes,
)
from alexcli.config.schema import (
    PRESETS,
    AblateConfig,
    BenchConfig,
    EvalConfig,
    ModelConfig,
    PrepareConfig,
    StatsConfig,
    SyntheticConfig,
    TrainConfig,
    bounded,
    preset,
    runtime,
)

__all__ = [
    "FLAGS",
    "PRESETS",
    "STAGE_NAMES",
    "AblateConfig",
    "BenchConfig",
    "EvalConfig",
    "ModelConfig",
    "PrepareConfig",
    "Recipe",
    "StatsConfig",
    "SyntheticConfig",
    "TrainConfig",
    "bounded",
    "describe_batch_rule",
    "describe_bound",
    "find_recipe",
    "fingerprint_view",
    "follow_batch",
    "from_dict",
    "load_recipe",
    "load_toml",
    "merge",
    "parse_sets",
    "preset",
    "runtime",
    "shipped_recipes",
    "to_dict",
    "train_config",
    "with_values",
]
