"""`alexcli train DATA_DIR RUN_DIR`: the paper's recipe on the shards, resumable.

The configuration is resolved before (`config.train_config`; with --resume the run's
own saved configuration, `saved_config`, replaces the preset); the number of classes
comes from the data. This stage checks what it is given — the inputs
(stages/train/inputs.py),
that the configuration can run on them, what RUN_DIR holds and, with --resume, that
last.pt can be continued (stages/train/checks.py) — then hands the work to
`core.nn.trainer.Trainer`, and writes the manifest last.

RUN_DIR after it: `config.json` (the resolved configuration), `metrics.jsonl` (one
line per epoch), `checkpoints/last.pt` (every epoch, every `checkpoint_every` steps
and every `checkpoint_minutes`), `checkpoints/best.pt` (lowest validation top-1),
`manifest.json` last (`stages/runner.py`): a finished run rerun says "up to date". An
unfinished one needs --resume (continue exactly) or --force (start over); --resume on
an empty RUN_DIR starts, so a job script can always pass it.

Under torchrun every process runs this; rank 0 alone writes files and reports. Every
rank must see the same DATA_DIR (checked by fingerprint); a rank whose node lacks
rank 0's last.pt gets its bytes from rank 0. After a torchrun restart
(`--max-restarts`) the run continues from last.pt on its own (docs/cluster.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alexcli.config import (
    TrainConfig,
    describe_batch_rule,
    describe_bound,
    from_dict,
    to_dict,
    train_config,
)
from alexcli.config import fingerprint_view as config_view
from alexcli.core.atomic import remove_stale_temps, write_json, write_text
from alexcli.core.fingerprint import stage_fingerprint
from alexcli.core.progress import QUIET, SILENT, Progress
from alexcli.core.rundir import RunDir
from alexcli.errors import ConfigError, UserError
from alexcli.stages.results import Result
from alexcli.stages.runner import (
    invalidate,
    write_manifest,
)
from alexcli.stages.train.checks import check_resume, check_trainable, decide
from alexcli.stages.train.inputs import Inputs, open_inputs

if TYPE_CHECKING:
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


def saved_config(run_dir: Path) -> TrainConfig | None:
    """The configuration of the run in RUN_DIR: config.json (rewritten with the resolved
    configuration at every start), else last.pt's; None for a new RUN_DIR."""
    run = RunDir(run_dir)
    path = run.config
    if path.is_file():
        try:
            return from_dict(TrainConfig, json.loads(path.read_text()), where=str(path))
        except (json.JSONDecodeError, ConfigError) as e:
            raise UserError(f"{path}: unreadable ({e})", hint="start over with --force") from None
    if run.last.is_file():
        from alexcli.core.nn.checkpoint import load_checkpoint  # torch: only when needed

        return load_checkpoint(run.last).config
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
        preset_name=preset_name,
        config_file=config_file,
        sets=sets,
        base=base,
        world=torchrun_world(),
        **flags,
    )


def torchrun_world() -> int:
    """The processes of the torchrun job this one belongs to (its `WORLD_SIZE`), 1
    outside one: what a per-device batch is multiplied by."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


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
    from alexcli.core.nn.distributed import collective_errors, setup_distributed

    if cfg.tensorboard:  # refused before any work, on every rank
        from alexcli.stages.train.tensorboard import check_tensorboard

        check_tensorboard()
    dist = setup_distributed(cfg.devices, cfg.collective_minutes)
    try:
        with collective_errors(dist, cfg.collective_minutes):
            return _in_job(dist, Path(data_dir), Path(run_dir), cfg, resume, force, progress)
    finally:
        dist.close()


def _in_job(
    dist: Dist,
    data_dir: Path,
    run_dir: Path,
    cfg: TrainConfig,
    resume: bool,
    force: bool,
    progress: Progress,
) -> TrainResult:
    """`run_train` as one process of the job: what every rank checks and agrees on, then
    the training; an error met on any rank ends every rank with the same line."""
    from alexcli.core.nn.distributed import (
        RESTART_HAZARD_ELSEWHERE,
        process_devices,
        restart_count,
        restart_hazard,
    )
    from alexcli.core.nn.trainer import Trainer

    progress = progress if dist.rank == 0 else QUIET
    hazard = restart_hazard(os.environ)
    if dist.anywhere(hazard is not None):
        progress.log(hazard or RESTART_HAZARD_ELSEWHERE)
    if dist.anywhere(restart_count() > 0) and dist.decide(lambda: same_job(run_dir)):
        resume, force = True, False  # torchrun restarted this job's workers: continue it
        progress.log("torchrun restarted the workers: continuing from the last checkpoint")
    # What decides which collectives run is rank 0's on every rank (a node may have read
    # another config.json, or been given other flags).
    resume, force, runtime = dist.share((resume, force, _collective_settings(cfg)))
    cfg = dataclasses.replace(cfg, **runtime)
    inputs = dist.everywhere(lambda: open_inputs(data_dir))
    dist.same_everywhere(inputs.upstream_key, "DATA_DIR")
    data = inputs.data
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, num_classes=len(data.classes))
    )
    fp = stage_fingerprint(STAGE, VERSION, fingerprint_params(cfg), inputs.upstream)
    dist.same_everywhere(fp, "configuration")  # e.g. --resume read another config.json
    manifest = RunDir(run_dir).manifest
    # An existing run refused first: a run of another preset is a missing --resume,
    # not a crop that does not fit.
    done = dist.decide(lambda: decide(run_dir, fp, resume=resume, force=force))
    device = process_devices(cfg.devices, dist.local_rank)[0]
    dist.everywhere(lambda: check_trainable(cfg, data, dist.world, device))
    # Every rank resumes from rank 0's last.pt, sent over when its node lacks it.
    last = dist.shared_file(RunDir(run_dir).last) if resume and not done else None
    resume_from = check_resume(cfg, data, run_dir, last) if last is not None else None
    events = None
    if cfg.tensorboard and dist.rank == 0 and not done:
        from alexcli.stages.train.tensorboard import TensorBoard

        events = TensorBoard(run_dir, cfg.model.towers)
    trainer = Trainer(cfg, _train_data(inputs), run_dir, dist, progress, resume_from, events)
    if done:
        progress.log(f"train: up to date ({manifest})")
    else:

        def prepare() -> None:  # rank 0's; a failure there ends every rank
            if dist.rank == 0:
                invalidate(manifest)
                _prepare_run_dir(run_dir, cfg, fresh=not resume)

        dist.everywhere(prepare)
        if cfg.lr_scaled_from is not None or cfg.batch_per_device is not None:
            progress.log(describe_batch_rule(cfg, dist.world))
        if (bound := describe_bound(cfg)) is not None:
            progress.log(bound)
        trainer.run()
        if dist.rank == 0:
            body = {
                "outputs": list(OUTPUTS),
                "epochs": cfg.epochs,
                "best_val_top1_error": trainer.best,
                "final": trainer.metrics[-1] if trainer.metrics else None,
            }
            write_manifest(
                manifest,
                stage=STAGE,
                version=VERSION,
                fingerprint=fp,
                upstream=inputs.upstream,
                config=to_dict(cfg),
                body=body,
            )
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
    clip, bound = cfg.clip_grad_norm, cfg.max_step_norm
    if clip is not None and bound is not None and cfg.lr * clip <= bound:
        del params["max_step_norm"]  # no step's lr exceeds cfg.lr: it never binds
    if cfg.schedule == "step" and any(m < 1 for m in cfg.lr_steps):
        params["lr_steps_of"] = "steps"  # fractions were of epochs before 2026-12-07
    return params


# Keys added after runs were fingerprinted (section, key, the default that is left out).
LATER_KEYS = (
    ("model", "lrn_span", "tower"),
    ("model", "omit", "none"),
    ("", "random_crop", True),
    ("", "clip_grad_norm", None),
    ("", "max_step_norm", None),
    ("model", "fc8_std", None),
)


def _train_data(inputs: Inputs) -> TrainData:
    from alexcli.core.nn.trainer import TrainData

    data, stats = inputs.data, inputs.stats
    return TrainData(
        train=data.shard_set("train"),
        val=data.shard_set("val"),
        size=data.size,
        classes=data.classes,
        mean=stats.mean,
        eigval=stats.eigval,
        eigvec=stats.eigvec,
        upstream=inputs.upstream,
    )


def _collective_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The run-time settings that change which collectives a rank runs, or when."""
    keys = (
        "checkpoint_every",
        "checkpoint_minutes",
        "stop_if_flat",
        "amp",
        "channels_last",
        "compile",  # the compiled graph's pieces decide when DDP's all-reduces run
    )
    return {k: getattr(cfg, k) for k in keys}


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, *, fresh: bool) -> None:
    """config.json written; on a fresh start, an earlier run's files removed."""
    run = RunDir(run_dir)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run_dir)
    remove_stale_temps(run.checkpoints)
    if fresh:
        for path in (run.metrics_file, run.last, run.best, run.job):
            path.unlink(missing_ok=True)
        shutil.rmtree(run.tensorboard, ignore_errors=True)  # an earlier run's events
    write_json(run.config, to_dict(cfg))
    job = _job()
    if job:  # which torchrun job trains here: its restarts continue, others do not
        write_text(run.job, job)


def same_job(run_dir: Path) -> bool:
    """RUN_DIR was set up by this torchrun job (`TORCHELASTIC_RUN_ID`): a restart of it
    continues. A restart after a refusal (a run another command started, or a --force
    that failed before it began) keeps the flags the job was given."""
    path = RunDir(run_dir).job
    job = _job()
    return bool(job) and path.is_file() and path.read_text(encoding="utf-8") == job


def _job() -> str:
    """This torchrun launch: its run id (`--rdzv-id`, "none" unless given), the host and
    the agent's pid (a worker's parent), which stay the same across the agent's restarts
    and differ for every new launch; "" outside torchrun."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return f"{run_id} {socket.gethostname()} {os.getppid()}" if run_id else ""


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
        checkpoints={"last": RunDir(run_dir).last, "best": RunDir(run_dir).best},
        rank=dist.rank,
    )


def read_run_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's epochs so far, through the one reader (core/rundir.py)."""
    return RunDir(run_dir).metrics().records
