"""What `alexcli ablate` measures of one finished run (docs/ablations.md "What is
measured"): its final weights on val (10 and 1 views) and on the training split (1
view), the LRN's load on val — how far α·Σa² is from k — and what its metrics.jsonl
says over the epochs: the training-error curve, the epochs and seconds to the
threshold (Figure 1), the epoch of the best val error. `run_ablate` caches them
per run in measures.json."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexcli.config import AblateConfig, EvalConfig, TrainConfig
from alexcli.core.progress import SILENT, Progress
from alexcli.core.rundir import RunDir
from alexcli.errors import UserError
from alexcli.workflows.ablate.claims import finite


def measure(
    data_dir: Path,
    run_dir: Path,
    study: AblateConfig,
    progress: Progress = SILENT,
    *,
    full: bool = True,
) -> dict[str, Any]:
    """One finished run's numbers: its final weights on val (10 and 1 views) and on the
    training split (1 view), the LRN's load on val, and what its metrics.jsonl says over
    the epochs (`full=False`: that alone)."""
    from alexcli.stages.eval import run_eval

    run = RunDir(run_dir)
    last = run.last
    cfg = saved_config_or_fail(run)
    out = curve_measures(run.metrics().records, study.threshold, cfg.model.num_classes)
    if not full:
        return out
    ev = EvalConfig(batch_size=study.batch_size, devices=cfg.devices.split(",")[0], amp=cfg.amp)
    for views in (10, 1):
        r = run_eval(last, data_dir, dataclasses.replace(ev, views=views), progress)
        suffix = "" if views == 10 else "_1"
        out[f"val_top1_error{suffix}"] = r.top1_error
        out[f"val_top5_error{suffix}"] = r.top5_error
    train = run_eval(last, data_dir, dataclasses.replace(ev, views=1, split="train"), progress)
    out["train_top1_error"] = train.top1_error
    out["gap"] = out["val_top1_error_1"] - train.top1_error
    if cfg.model.lrn:
        out["lrn_load"] = lrn_load(data_dir, last, dataclasses.replace(ev, workers=0))
    return out


LRN_IMAGES = 256  # the val images whose centre crops `lrn_load` reads


def lrn_load(data_dir: Path, checkpoint: Path, ev: EvalConfig) -> dict[str, dict[str, float]]:
    """α·Σa²/k at the LRN after conv1 and after conv2 (`core.nn.lrn.window_load`) of the
    checkpoint's network, over every position, map and tower of the centre crops of the
    first `LRN_IMAGES` val images: its median and 99th percentile per layer."""
    import numpy as np
    import torch

    from alexcli.core.data.transforms import iter_views
    from alexcli.core.nn.lrn import Lrn, local_response_norm, window_load
    from alexcli.stages.classifier import Classifier
    from alexcli.stages.datadir import open_data_dir

    net = Classifier.load(checkpoint, ev)
    seen: dict[int, list[np.ndarray]] = {}  # by map side: conv1's maps are the larger

    def recording(
        x: torch.Tensor, size: int, alpha: float, beta: float, k: float, convention: str
    ) -> torch.Tensor:
        load = window_load(x, size, alpha, k, convention)
        seen.setdefault(x.shape[-1], []).append(load.flatten().cpu().numpy())
        return local_response_norm(x, size, alpha, beta, k, convention)

    lrn: Lrn = recording
    model = net.ckpt.build_model(net.devices, lrn=lrn)
    count = 0
    with torch.no_grad():
        for batch in net.loader(open_data_dir(data_dir).shard_set("val"), ev):
            images = batch.images[: LRN_IMAGES - count].to(net.normalize.mean.device)
            model(next(iter_views(net.normalize, images, net.crop, 1)))
            count += len(images)
            if count >= LRN_IMAGES:
                break
    out = {}
    for layer, side in zip(("conv1", "conv2"), sorted(seen, reverse=True), strict=False):
        values = np.concatenate(seen[side])
        out[layer] = {
            "median": float(np.median(values)),
            "p99": float(np.percentile(values, 99)),
        }
    return out


def saved_config_or_fail(run: RunDir) -> TrainConfig:
    from alexcli.stages.train import saved_config

    cfg = saved_config(run.root)
    if cfg is None:
        raise UserError(f"{run.config}: missing", hint="rerun `alexcli ablate`")
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


def lrn_flags(baseline: dict[int, dict[str, Any]]) -> list[str]:
    """The LRN's α·Σa² against k on the trained baselines' activations: where it is far
    below k, the LRN divides by nearly the constant k^β and `no-lrn` mostly tests that
    constant."""
    loads = [r["lrn_load"] for r in baseline.values() if r.get("lrn_load")]
    if not loads:
        return []
    parts, small = [], True
    for layer in ("conv1", "conv2"):
        median = max(x[layer]["median"] for x in loads)
        high = max(x[layer]["p99"] for x in loads)
        parts.append(f"{layer} median {median:.2g}, 99th percentile {high:.2g}")
        small = small and high < LRN_CONSTANT
    text = f"α·Σa²/k on the trained baseline's val activations: {'; '.join(parts)}"
    if small:
        text += (
            " — the LRN divides by nearly the constant k^β here, so no-lrn mostly tests a "
            "fixed rescaling of conv1 and conv2"
        )
    return [text]


# Below this α·Σa²/k, (1 + α·Σa²/k)^−β is within 4 % of 1: a constant divisor, in effect.
LRN_CONSTANT = 0.05
