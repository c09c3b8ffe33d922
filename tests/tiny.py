"""The one tiny network of the tests: the `small` preset's network (two towers, LRN,
overlapping pooling, conv1 11×11 stride 4) at toy widths, small enough to train in
seconds. Tests that run the network take `TINY_MODEL`; tests that run `alexcli train`
take `tiny_sets()`, the same shape as `--set` strings. A test that needs another shape
says why beside it.

Its widths differ from layer to layer (conv3 and conv4 24 maps, conv5 16), so a layer
wired to the wrong input fails on its shape; 7 classes split unevenly over the towers'
fc8 (4 and 3); 64-px crops are the smallest the 11×11/4 conv1 takes with round sides
(conv1 15, then 7, 3, 1 after the pools).
"""

from __future__ import annotations

import dataclasses

from alexcli.config import PRESETS, ModelConfig

TINY_MODEL: ModelConfig = dataclasses.replace(
    PRESETS["small"].model,
    num_classes=7,
    crop=64,
    conv_channels=(8, 16, 24, 24, 16),
    fc_features=(32, 32),
)

# What `tiny_sets` writes: the network's shape. Its recipe (init, LRN constants,
# dropout) stays the preset's and its classes the data's.
SHAPE = ("conv_channels", "fc_features", "conv1_kernel", "conv1_stride", "conv1_padding")


def tiny_sets(model: ModelConfig = TINY_MODEL) -> list[str]:
    """`model`'s shape as `--set` values (`alexcli train --set …`)."""
    sets = []
    for name in SHAPE:
        value = getattr(model, name)
        text = f"[{', '.join(map(str, value))}]" if isinstance(value, tuple) else str(value)
        sets.append(f"model.{name}={text}")
    return [*sets, f"crop={model.crop}"]
