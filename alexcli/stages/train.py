"""`alexcli train DATA_DIR RUN_DIR`: the paper's recipe on the shards, resumable.

The configuration is resolved before (`config.train_config`; with --resume the run's
own saved configuration, `saved_config`, replaces the preset); the number of classes
comes from the data. This stage checks what it is given — the inputs (`open_inputs`),
that the configuration can run on them (`check_trainable`), what RUN_DIR holds
(`_decide`) and, with --resume, that last.pt can be continued (`check_resume`) — then
hands the work to `core.nn.trainer.Trainer`, and writes the manifest last.

RUN_DIR after it: `config.json` (the resolved configuration), `metrics.jsonl` (one
line per epoch), `checkpoints/last.pt` (every epoch and every `checkpoint_minutes`
inside one), `checkpoints/best.pt` (lowest validation top-1), `manifest.json` last
(`stages/runner.py`): a finished run rerun says "up to date". An unfinished one needs
--resume (continue exactly) or --force (start over).

Under torchrun every process runs this; rank 0 alone writes files and reports.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alexcli.config import TrainConfig, from_dict, to_dict, train_config
from alexcli.config import fingerprint_view as config_view
from alexcli.core.atomic import check_writable, remove_stale_temps, write_json
from alexcli.core.data.stats import Stats
from alexcli.core.fingerprint import file_digest, stage_fingerprint
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import ConfigError, UserError
from alexcli.stages.datadir import DataDir, open_data_dir
from alexcli.stages.results import Result
from alexcli.stages.runner import (
    invalidate,
    owner,
    read_manifest,
    up_to_date,
    write_manifest,
)
from alexcli.stages.stats import STATS_FILE, check_stats_current

if TYPE_CHECKING:
    import torch

    from alexcli.core.nn.checkpoint import Checkpoint
    from alexcli.core.nn.distributed import Dist
    from alexcli.core.nn.trainer import TrainData

STAGE = "train"
VERSION = 1
OUTPUTS = ("config.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt")


@dataclass(frozen=True)
class TrainResult(Result):
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

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "up_to_date": self.up_to_date,
            "epochs_run": self.epochs_run,
            "epochs": self.config.epochs,
            "final": self.final,
            "best_val_top1_error": self.best_top1_error,
            "images_per_s": self.images_per_s,
            "checkpoints": {k: str(v) for k, v in self.checkpoints.items()},
        }


@dataclass(frozen=True)
class Inputs:
    """DATA_DIR as training reads it: the manifest, current stats, and their identity."""

    data: DataDir
    stats: Stats
    stats_fingerprint: str  # sha256 of stats.h5: what the run was normalised with

    @property
    def upstream(self) -> dict[str, str]:
        return {"prepare": self.data.fingerprint, "stats": self.stats_fingerprint}


def open_inputs(data_dir: Path) -> Inputs:
    """DATA_DIR's manifest and its current stats (stale stats.h5 refused, naming the fix)."""
    data = open_data_dir(data_dir)
    stats = check_stats_current(data.root)
    return Inputs(data, stats, file_digest(data.root / STATS_FILE)[:16])


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


def resolve_config(
    run_dir: Path,
    *,
    resume: bool = False,
    preset_name: str | None = None,
    config_file: Path | None = None,
    sets: tuple[str, ...] | list[str] = (),
    **flags: Any,
) -> TrainConfig:
    """The configuration `alexcli train` runs with: `config.train_config`'s layers, on top
    of the run's own saved configuration with --resume (and no --preset), so that
    `alexcli train DATA RUN --resume` needs none of the original flags again."""
    base = saved_config(Path(run_dir)) if resume and not preset_name else None
    return train_config(
        preset_name=preset_name, config_file=config_file, sets=sets, base=base, **flags
    )


# --------------------------------------------------------------------------- the stage


def run_train(
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
    from alexcli.core.nn.distributed import process_devices, setup_distributed
    from alexcli.core.nn.trainer import Trainer

    if cfg.tensorboard:  # refused before any work, on every rank
        from alexcli.stages.tensorboard import check_tensorboard

        check_tensorboard()
    dist = setup_distributed(cfg.devices)
    progress = progress if dist.rank == 0 else SILENT
    inputs = open_inputs(Path(data_dir))
    data = inputs.data
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, num_classes=len(data.classes))
    )
    run_dir = Path(run_dir)
    fp = stage_fingerprint(STAGE, VERSION, fingerprint_params(cfg), inputs.upstream)
    manifest = run_dir / "manifest.json"
    # An existing run refused first: a run of another preset is a missing --resume,
    # not a crop that does not fit.
    done = dist.decide(lambda: _decide(run_dir, fp, resume=resume, force=force))
    check_trainable(cfg, data, dist.world, process_devices(cfg.devices, dist.local_rank)[0])
    resume_from = check_resume(cfg, data, run_dir) if resume and not done else None
    events = None
    if cfg.tensorboard and dist.rank == 0 and not done:
        from alexcli.stages.tensorboard import TensorBoard

        events = TensorBoard(run_dir, cfg.model.towers)
    trainer = Trainer(cfg, _train_data(inputs), run_dir, dist, progress, resume_from, events)
    try:
        if done:
            progress.log(f"train: up to date ({manifest})")
        else:
            if dist.rank == 0:
                invalidate(manifest)
                _prepare_run_dir(run_dir, cfg, fresh=not resume)
            dist.barrier()
            trainer.run()
            if dist.rank == 0:
                body = {
                    "outputs": list(OUTPUTS),
                    "epochs": cfg.epochs,
                    "best_val_top1_error": trainer.best,
                    "final": trainer.metrics[-1] if trainer.metrics else None,
                }
                write_manifest(
                    manifest, stage=STAGE, version=VERSION, fingerprint=fp,
                    upstream=inputs.upstream, config=to_dict(cfg), body=body,
                )  # fmt: skip
    finally:
        dist.close()
    metrics = read_run_metrics(run_dir) if done else trainer.metrics
    return _result(run_dir, cfg, done, metrics, trainer.epochs_run, trainer.images_per_s, dist)


def fingerprint_params(cfg: TrainConfig) -> dict[str, Any]:
    """What changes a run's results, laid out as runs on disk were fingerprinted: the
    crop at the top level, where it sat before it became the network's (`model.crop`),
    so that finished runs stay up to date across the move."""
    params = config_view(cfg)
    params["crop"] = params["model"].pop("crop")
    for section, key, default in LATER_KEYS:  # added later; their defaults change nothing
        holder = params[section] if section else params
        if holder.get(key) == default:
            del holder[key]
    return params


# Keys added after runs were fingerprinted (section, key, the default that is left out).
LATER_KEYS = (
    ("model", "lrn_span", "tower"),
    ("model", "omit", "none"),
    ("", "random_crop", True),
)


def _train_data(inputs: Inputs) -> TrainData:
    from alexcli.core.nn.trainer import TrainData

    data, stats = inputs.data, inputs.stats
    return TrainData(
        train=data.shard_set("train"), val=data.shard_set("val"), size=data.size,
        classes=data.classes, mean=stats.mean, eigval=stats.eigval, eigvec=stats.eigvec,
        upstream=inputs.upstream,
    )  # fmt: skip


# --------------------------------------------------------------------------- checks


def check_trainable(cfg: TrainConfig, data: DataDir, world: int, device: torch.device) -> None:
    """Refuse, in one line, a configuration that cannot run on this data or `device` (its
    own values were checked when it was made: config/schema.py)."""
    from alexcli.core.nn.devices import check_amp

    if cfg.crop > data.size:
        raise ConfigError(
            f"crop {cfg.crop} is larger than the {data.size}×{data.size} images",
            hint=f"use --crop {data.size} or less",
        )
    n_train = data.images("train")
    if n_train < cfg.batch_size:
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the {n_train} training images",
            hint="use a smaller --batch-size",
        )
    if data.images("val") == 0:
        raise UserError(
            f"{data.root}: the validation split is empty", hint="prepare some val images"
        )
    if cfg.batch_size % world:
        raise ConfigError(
            f"batch size {cfg.batch_size} does not split over {world} processes",
            hint="the batch is global: make it a multiple of the process count",
        )
    check_amp(cfg.amp, device)


def check_resume(cfg: TrainConfig, data: DataDir, run_dir: Path) -> Checkpoint | None:
    """last.pt, read before anything in RUN_DIR changes; refused in one line when --resume
    cannot continue it: other classes, another network, more epochs done than asked."""
    import torch

    from alexcli.core.nn.checkpoint import load_checkpoint
    from alexcli.core.nn.model import build_model

    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    ck = load_checkpoint(last)
    fix = "resume with the run's own settings and data, or start over with --force"
    data.check_classes(ck.classes, hint=fix)
    with torch.device("meta"):  # shapes only: nothing allocated, no RNG drawn
        network = build_model(cfg.model).state_dict()
    now = {k: tuple(v.shape) for k, v in network.items()}
    saved = {k: tuple(v.shape) for k, v in ck.weights.items()}
    misfits = [k for k in now if now[k] != saved.get(k)] + [k for k in saved if k not in now]
    if misfits:
        key = misfits[0]
        raise ConfigError(
            f"{last}: its weights do not fit the network configured now "
            f"({key}: {saved.get(key, 'absent')} saved, {now.get(key, 'absent')} now)",
            hint=fix,
        )
    if (ck.epoch, ck.step) > (cfg.epochs, 0):
        done = f"{ck.epoch} epochs" + (f" and {ck.step} steps" if ck.step else "")
        raise ConfigError(
            f"{run_dir} has already trained {done}, more than the {cfg.epochs} epochs asked for",
            hint=f"resume with --epochs {ck.epoch + (ck.step > 0)} or more, or start over "
            "with --force",
        )
    return ck


def _decide(run_dir: Path, fp: str, *, resume: bool, force: bool) -> bool:
    """Up to date (True) or to be trained (False); a UserError when RUN_DIR holds a run
    that neither --resume nor --force says what to do with."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory", hint="RUN_DIR is a directory to train into")
    if run_dir.is_dir() and owner(run_dir) == "prepare":
        raise UserError(
            f"{run_dir} is a DATA_DIR (`alexcli prepare` wrote it): not training into it",
            hint="RUN_DIR is a directory of its own: `alexcli train DATA_DIR RUN_DIR`",
        )
    if not force and up_to_date(run_dir / "manifest.json", fp) is not None:
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
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)  # an earlier run's events
    write_json(run_dir / "config.json", to_dict(cfg))


def _result(
    run_dir: Path,
    cfg: TrainConfig,
    done: bool,
    metrics: list[dict[str, Any]],
    epochs_run: int,
    images_per_s: float,
    dist: Dist,
) -> TrainResult:
    best = [m["val_top1_error"] for m in metrics if "val_top1_error" in m]
    return TrainResult(
        run_dir=run_dir,
        up_to_date=done,
        config=cfg,
        epochs_run=epochs_run,
        metrics=metrics,
        best_top1_error=min(best) if best else None,
        images_per_s=images_per_s,
        checkpoints={
            "last": run_dir / "checkpoints" / "last.pt",
            "best": run_dir / "checkpoints" / "best.pt",
        },
        rank=dist.rank,
    )


def read_run_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
