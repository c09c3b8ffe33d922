"""What `train` checks before it trains (stages/train/): that the configuration can
run on the data and device (`check_trainable`), what RUN_DIR holds (`decide`), and
that last.pt can be continued (`check_resume`); each refusal one line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alexcli.config import TrainConfig
from alexcli.core.atomic import check_writable
from alexcli.core.rundir import RunDir
from alexcli.errors import ConfigError, UserError
from alexcli.stages.datadir import DataDir
from alexcli.stages.runner import owner, read_manifest, up_to_date

if TYPE_CHECKING:
    import torch

    from alexcli.core.nn.checkpoint import Checkpoint


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


def check_resume(
    cfg: TrainConfig, data: DataDir, run_dir: Path, source: Path | bytes | None = None
) -> Checkpoint | None:
    """last.pt (or `source`: its path or bytes as this rank gets them), read before
    anything in RUN_DIR changes; refused in one line when --resume cannot continue it:
    other classes, another network, more epochs done than asked."""
    import torch

    from alexcli.core.nn.checkpoint import load_checkpoint
    from alexcli.core.nn.model import build_model

    last = RunDir(run_dir).last
    if source is None and not last.is_file():
        return None
    ck = load_checkpoint(last, content=source if isinstance(source, bytes) else None)
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


def decide(run_dir: Path, fp: str, *, resume: bool, force: bool) -> bool:
    """Up to date (True) or to be trained (False); a UserError when RUN_DIR holds a run
    that neither --resume nor --force says what to do with."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory", hint="RUN_DIR is a directory to train into")
    if run_dir.is_dir() and owner(run_dir) == "prepare":
        raise UserError(
            f"{run_dir} is a DATA_DIR (`alexcli prepare` wrote it): not training into it",
            hint="RUN_DIR is a directory of its own: `alexcli train DATA_DIR RUN_DIR`",
        )
    if not force and up_to_date(RunDir(run_dir).manifest, fp) is not None:
        return True
    check_writable(RunDir(run_dir).config, "RUN_DIR")  # a finished run may be read-only
    if not resume and not force:
        _refuse_existing(run_dir, fp)
    return False


def _refuse_existing(run_dir: Path, fp: str) -> None:
    """A run is there and is not this finished one: never overwrite it silently."""
    if (RunDir(run_dir).manifest).exists():
        old = read_manifest(RunDir(run_dir).manifest) or {}
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
    if (RunDir(run_dir).config).exists() or (RunDir(run_dir).last).exists():
        raise UserError(
            f"{run_dir} holds an unfinished run",
            hint="continue it with --resume, or start over with --force",
        )


def check_same_data(run_dir: Path, data_dir: Path, fix: str) -> None:
    """Refuse to resume RUN_DIR's run on other shards or stats than it was trained on: the
    old model would be continued (or, finished, just evaluated) on the new data, or fail to
    load when the class count differs. The finished run's manifest says what it was trained
    on; an unfinished one's last.pt does."""
    from alexcli.core.nn.checkpoint import load_checkpoint
    from alexcli.stages.train.inputs import open_inputs

    now = open_inputs(data_dir).upstream
    finished = read_manifest(RunDir(run_dir).manifest) or {}
    then = finished.get("upstream") or load_checkpoint(RunDir(run_dir).last).upstream
    if then and dict(then) != now:
        raise UserError(
            f"{run_dir} was trained on other data than {data_dir} holds now: not resuming it",
            hint=fix,
        )
