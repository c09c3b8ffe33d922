"""`alexcli train DATA_DIR RUN_DIR`: the paper's recipe on the shards, resumable.

Configuration: preset < --config FILE.toml < --set key=value < named flags
(`resolve_config`); with --resume the run's own saved configuration replaces the
preset. The number of classes comes from the data.

RUN_DIR after it: `config.json` (the resolved configuration), `metrics.jsonl`
(one line per epoch), `checkpoints/last.pt` (every epoch and every
`checkpoint_minutes` inside one), `checkpoints/best.pt` (lowest validation top-1),
`manifest.json` last (`stages/runner.py`): a finished run rerun says "up to date".
An unfinished one needs --resume (continue exactly) or --force (start over).

Under torchrun every process runs this; rank 0 alone writes files and reports.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexcli.config import TrainConfig, from_dict, to_dict, train_config
from alexcli.config import fingerprint_view as config_view
from alexcli.core.atomic import check_writable, remove_stale_temps, write_json
from alexcli.core.fingerprint import stage_fingerprint
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import ConfigError, UserError
from alexcli.stages.runner import read_manifest, run_stage

STAGE = "train"
VERSION = 1
OUTPUTS = ("config.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt")


@dataclass(frozen=True)
class TrainResult:
    """What a `train` call did; `rank` > 0 under torchrun means: print nothing."""

    run_dir: Path
    up_to_date: bool
    config: TrainConfig
    epochs_run: int  # in this call
    metrics: list[dict[str, Any]]  # every epoch so far
    best_top1_error: float | None
    images_per_s: float  # training throughput over this call's epochs (all ranks)
    checkpoints: dict[str, Path]
    rank: int = 0

    @property
    def final(self) -> dict[str, Any] | None:
        return self.metrics[-1] if self.metrics else None


# --------------------------------------------------------------------------- config


def train_with_flags(
    data_dir: Path,
    run_dir: Path,
    *,
    preset_name: str | None = None,
    config_file: Path | None = None,
    sets: tuple[str, ...] | list[str] = (),
    resume: bool = False,
    force: bool = False,
    progress: Progress = SILENT,
    **flags: Any,
) -> TrainResult:
    """`alexcli train`: resolve the configuration from the command line, then `train`.

    With --resume (and no --preset) the run's saved configuration is the base, so
    `alexcli train DATA RUN --resume` needs none of the original flags again.
    """
    base = saved_config(Path(run_dir)) if resume and not preset_name else None
    cfg = train_config(
        preset_name=preset_name, config_file=config_file, sets=sets, base=base, **flags
    )
    return train(data_dir, run_dir, cfg, resume=resume, force=force, progress=progress)


def saved_config(run_dir: Path) -> TrainConfig | None:
    """The configuration of the run in RUN_DIR: config.json (rewritten with the resolved
    configuration at every start), else last.pt's; None for a new RUN_DIR."""
    path = run_dir / "config.json"
    if path.is_file():
        try:
            return from_dict(TrainConfig, json.loads(path.read_text()), where=str(path))
        except (json.JSONDecodeError, ConfigError) as e:
            raise UserError(f"{path}: unreadable ({e})", hint="start over with --force") from None
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        from alexcli.core.nn.checkpoint import load_checkpoint  # torch: only when needed

        return load_checkpoint(last).config
    return None


# --------------------------------------------------------------------------- stage


def train(
    data_dir: Path,
    run_dir: Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    progress: Progress = SILENT,
) -> TrainResult:
    """Train per `cfg` on DATA_DIR's shards into RUN_DIR (see the module docstring)."""
    if resume and force:
        raise ConfigError(
            "--resume and --force together: one continues last.pt, the other starts over",
            hint="choose one",
        )
    from alexcli.core.nn.distributed import setup_distributed  # torch: only when training
    from alexcli.stages import _train_run as run

    dist = setup_distributed(cfg.devices)
    progress = progress if dist.rank == 0 else SILENT
    inputs = run.open_inputs(Path(data_dir))
    data = inputs.data
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, num_classes=len(data.classes))
    )
    run_dir = Path(run_dir)
    upstream = {"prepare": data.fingerprint, "stats": inputs.stats_fingerprint}
    params = config_view(cfg)
    fp = stage_fingerprint(STAGE, VERSION, params, upstream)
    # An existing run refused first: a run of another preset is a missing --resume,
    # not a crop that does not fit.
    up_to_date = dist.decide(lambda: _decide(run_dir, fp, resume=resume, force=force))
    run.check_fits(cfg, data, dist)
    loop = run.TrainLoop(cfg, inputs, run_dir, dist, progress)
    if resume and not up_to_date:
        loop.check_resume()  # before config.json is rewritten

    def build() -> dict[str, Any]:
        if dist.rank == 0:
            _prepare_run_dir(run_dir, cfg, fresh=not resume)
        dist.barrier()
        summary = loop.run(resume=resume)
        return {"outputs": list(OUTPUTS), **summary}

    try:
        if up_to_date:
            progress.log(f"train: up to date ({run_dir / 'manifest.json'})")
        elif dist.rank != 0:
            build()
        else:
            run_stage(
                stage=STAGE,
                version=VERSION,
                params=params,
                upstream=upstream,
                manifest_path=run_dir / "manifest.json",
                build=build,
                config=to_dict(cfg),
                force=True,  # the up-to-date check was made above, agreed by every rank
                progress=progress,
            )
    finally:
        dist.close()
    return _result(run_dir, cfg, up_to_date, loop, dist.rank)


def _is_up_to_date(run_dir: Path, fp: str) -> bool:
    old = read_manifest(run_dir / "manifest.json")
    return (
        old is not None
        and old.get("fingerprint") == fp
        and all((run_dir / o).exists() for o in old.get("outputs", []))
    )


def _decide(run_dir: Path, fp: str, *, resume: bool, force: bool) -> bool:
    """Up to date (True) or to be trained (False); a UserError when RUN_DIR holds a run
    that neither --resume nor --force says what to do with."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory", hint="RUN_DIR is a directory to train into")
    if not force and _is_up_to_date(run_dir, fp):
        return True
    check_writable(run_dir / "config.json", "RUN_DIR")  # a finished run may be read-only
    if not resume and not force:
        _refuse_existing(run_dir, fp)
    return False


def _refuse_existing(run_dir: Path, fp: str) -> None:
    """A run is there and is not this finished one: never overwrite it silently."""
    if (run_dir / "manifest.json").exists():
        old = read_manifest(run_dir / "manifest.json") or {}
        missing = [o for o in old.get("outputs", []) if not (run_dir / o).exists()]
        if old.get("fingerprint") == fp and missing:
            raise UserError(
                f"{run_dir}: this finished run lacks {', '.join(missing)}",
                hint="--force trains it again",
            )
        raise UserError(
            f"{run_dir} holds a finished run with another configuration or other data",
            hint="--resume continues it with the new settings (e.g. more --epochs); "
            "--force starts over",
        )
    if (run_dir / "config.json").exists() or (run_dir / "checkpoints" / "last.pt").exists():
        raise UserError(
            f"{run_dir} holds an unfinished run",
            hint="continue it with --resume, or start over with --force",
        )


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, *, fresh: bool) -> None:
    """config.json written; on a fresh start, an earlier run's files removed."""
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run_dir)
    remove_stale_temps(checkpoints)
    if fresh:
        for name in ("metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt"):
            (run_dir / name).unlink(missing_ok=True)
    write_json(run_dir / "config.json", to_dict(cfg))


def _result(run_dir: Path, cfg: TrainConfig, up_to_date: bool, loop: Any, rank: int) -> TrainResult:
    metrics = loop.metrics if not up_to_date else _read_metrics(run_dir)
    best = [m["val_top1_error"] for m in metrics if "val_top1_error" in m]
    return TrainResult(
        run_dir=run_dir,
        up_to_date=up_to_date,
        config=cfg,
        epochs_run=loop.epochs_run,
        metrics=metrics,
        best_top1_error=min(best) if best else None,
        images_per_s=loop.images_per_s,
        checkpoints={
            "last": run_dir / "checkpoints" / "last.pt",
            "best": run_dir / "checkpoints" / "best.pt",
        },
        rank=rank,
    )


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
