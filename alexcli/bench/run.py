"""`alexcli bench [DATA_DIR]`: each stage's throughput beside this machine's limit, both
measured in the same run, as ratios (stage ÷ limit) against the targets of
docs/performance.md.

    stage    measured                            limit (same run)                     target
    prepare  the whole command                   plain decode-only loop, same processes  0.8
    stats    the whole sum                       plain h5py sequential read              0.7
    loader   batches, device-side part included  raw random reads, same processes        0.5
    loader   the same                            what the preset's step consumes        10
    loader   the same on JPEG records            decoding reads; the step's appetite   0.5; 10
    loader   one worker's fill, JPEG records     an H100's appetite per core (1,250/s)  0.8
    train    tuned step, fp32 and at --amp       that dtype's peak ÷ FLOPs per image      —
    train    tuned step at --amp                 plain eager fp32 PyTorch, same network   2
    inference  eval's and predict's forward pass  onnxruntime on the exported graph,     1
                                                  same threads (bench/infer.py)

Without DATA_DIR the data are made up: a generated ILSVRC-shaped tree (core/data/synthetic.py),
prepared into a temporary directory (raw, and for the loader as JPEG records too) that is
removed afterwards; nothing else is written.
The measurements themselves are in bench/limits.py; docs/performance.md has the numbers.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alexcli.bench import data as plain
from alexcli.bench import infer, limits, step
from alexcli.bench.report import BenchResult, Figure
from alexcli.config import BenchConfig, PrepareConfig, TrainConfig, preset
from alexcli.core.data.archives import write_archives
from alexcli.core.data.loader import default_workers
from alexcli.core.data.synthetic import make_tree
from alexcli.core.data.transforms import Normalizer
from alexcli.core.machine import cpu_cores, native_bf16
from alexcli.core.nn.devices import check_amp, resolve_devices
from alexcli.core.nn.loops import Amp, clip_limit
from alexcli.core.nn.threads import candidates, fastest, probe
from alexcli.core.progress import SILENT, Progress
from alexcli.errors import AlexcliError, ConfigError
from alexcli.stages.datadir import open_data_dir
from alexcli.stages.prepare import run_prepare

STAGES = ("prepare", "stats", "loader", "train", "inference")
LOADER_CAUSE = (
    "on a CPU, the normaliser writes its float32 output (602 KB per 224 crop) on the one "
    "thread train leaves it; a bare uint8→float copy alone falls short of a bare "
    "page-cache read (docs/performance.md)"
)


@dataclass(frozen=True)
class _Plan:
    """Everything resolved once: the preset's network and batch, devices, threads."""

    train: TrainConfig
    batch_size: int
    devices: list[torch.device]
    threads: int
    workers: int
    precision: str  # the tuned step's: "fp32" (--amp off), "bf16" or "fp16"
    seconds: float
    quick: bool
    stages: tuple[str, ...]


def run_bench(
    data_dir: Path | None, config: BenchConfig = BenchConfig(), progress: Progress = SILENT
) -> BenchResult:
    """Measure the stages `config.only` names (all by default); return the figures."""
    start = time.perf_counter()
    plan = _plan(config)
    given = data_dir
    figures: dict[str, list[Figure]] = {s: [] for s in STAGES}
    details: dict[str, Any] = {}
    threads = torch.get_num_threads()
    _remove_orphans()
    with tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{os.getpid()}-") as tmp:
        needs_data = data_dir is None and {"stats", "loader"} & set(plan.stages)
        jpeg_dir = None  # made-up data: the same images as JPEG records, for the loader
        if "prepare" in plan.stages or needs_data:
            made = _prepare(Path(tmp), config, plan, figures, details, progress)
            data_dir = data_dir or made
            if given is None and "loader" in plan.stages:
                jpeg_dir = _prepare_jpeg(Path(tmp), config, plan)
        if "stats" in plan.stages and data_dir is not None:
            progress.log("stats: the whole sum against a plain read")
            figures["stats"] = _stats(data_dir, config, plan, details)
        try:
            torch.set_num_threads(plan.threads)
            appetite = None  # images/s the tuned step eats
            if "train" in plan.stages:
                figures["train"], appetite = _train(plan, details, progress, config.compile)
            if "loader" in plan.stages and data_dir is not None:
                for loaded in (data_dir, jpeg_dir):
                    if loaded is not None:
                        figures["loader"] += _loader(loaded, plan, appetite, details, progress)
        finally:
            torch.set_num_threads(threads)
        if "inference" in plan.stages:
            progress.log("inference: eval's forward pass against onnxruntime, interleaved")
            amps: tuple[Amp, ...] = ("bf16",) if plan.precision == "bf16" and native_bf16() else ()
            got = infer.measure(
                plan.train.preset,
                batch_size=plan.batch_size,
                rounds=3 if plan.quick else 5,
                threads=config.threads,
                amps=amps,
            )
            figures["inference"], details["inference"] = infer.figures(got, plan.train.preset)
    return BenchResult(
        [f for s in STAGES for f in figures[s]],
        machine=_machine(plan),
        settings=_settings(config, plan, given),
        details=details,
        seconds=time.perf_counter() - start,
    )


_TMP_PREFIX = "alexcli-bench-"  # + the pid of the bench that made it


def _remove_orphans() -> None:
    """The made-up data of benches killed before they could clean up (SIGTERM, SIGKILL):
    a temporary directory whose pid is no longer running."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        pid = folder.name[len(_TMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _plan(config: BenchConfig) -> _Plan:
    unknown = [s for s in config.only if s not in STAGES]
    if unknown:
        raise ConfigError(f"--only {unknown[0]!r}: no such stage", hint=f"use {', '.join(STAGES)}")
    train = preset(config.preset or ("small" if config.quick else "paper"))
    batch = config.batch_size or (4 if config.quick else train.batch_size)
    devices = resolve_devices(config.devices)
    check_amp(config.amp, devices[0])
    workers = config.workers if config.workers is not None else default_workers()
    threads = config.threads or _train_threads(train, workers, devices[0], quick=config.quick)
    seconds = min(config.seconds, 0.2) if config.quick else config.seconds
    stages = config.only or STAGES
    precision = "fp32" if config.amp == "off" else config.amp
    return _Plan(train, batch, devices, threads, workers, precision, seconds, config.quick, stages)


# --------------------------------------------------------------------------- prepare, stats


def _prepare(
    tmp: Path,
    config: BenchConfig,
    plan: _Plan,
    figures: dict[str, list[Figure]],
    details: dict[str, Any],
    progress: Progress,
) -> Path:
    """prepare against a plain decode loop (when asked for); the prepared DATA_DIR."""
    source = _source(tmp, config)
    if not config.source:
        classes, per_class = (2, 6) if plan.quick else (8, max(config.source_images // 8, 1))
        progress.log(f"making a source tree of {classes * per_class} training images")
        sizes = (120, 200) if plan.quick else (300, 500)
        make_tree(
            source, classes=classes, train_per_class=per_class, val_per_class=2, size_range=sizes
        )
    size = _size(plan)
    cfg = PrepareConfig(size=size)
    data = tmp / "data"
    if "prepare" not in plan.stages:
        run_prepare(source, data, dataclasses.replace(cfg, jobs=config.jobs))
        return data
    progress.log("prepare: the whole command against a plain decode loop")
    got = plain.prepare_vs_decode(source, data, cfg, jobs=config.jobs)
    details["prepare"] = {k: round(v, 2) for k, v in got.items()} | {"size": size}
    figures["prepare"] = [
        Figure(
            "prepare",
            name=f"prepare, {_n(config.jobs, 'proc')}",
            value=got["prepare_images_per_s"],
            limit=f"decode only, {_n(config.jobs, 'proc')}",
            limit_value=got["decode_only_images_per_s"],
            target=0.8,
            cause="the resize, the shard writes and the sha256 add to every image's "
            "decode: the ceiling is well under 1 (docs/prepare.md)",
        ),
    ]
    if not config.source:  # the generated tree is ILSVRC-shaped: pack it as downloaded
        progress.log("prepare: from ILSVRC-2012's archives against from the extracted tree")
        write_archives(source, tmp / "archives")
        arch = plain.archives_vs_tree(
            source, tmp / "archives", tmp / "data-archives", cfg, jobs=config.jobs
        )
        details["prepare"]["archives"] = {k: round(v, 2) for k, v in arch.items()}
        figures["prepare"].append(
            Figure(
                "prepare",
                name="prepare from the archives",
                value=arch["archives_images_per_s"],
                limit="prepare from the extracted tree",
                limit_value=arch["tree_images_per_s"],
                target=0.9,
                cause="reading a file out of the tar costs more than opening it",
            )
        )
    return data


def _source(tmp: Path, config: BenchConfig) -> Path:
    return Path(config.source) if config.source else tmp / "source"


def _size(plan: _Plan) -> int:
    return max(plan.train.crop + plan.train.crop // 7, 64)  # 256 for 224 crops


def _prepare_jpeg(tmp: Path, config: BenchConfig, plan: _Plan) -> Path:
    """The made-up source again, as JPEG records at prepare's default quality."""
    cfg = PrepareConfig(size=_size(plan), encoding="jpeg", jobs=config.jobs)
    run_prepare(_source(tmp, config), tmp / "data-jpeg", cfg)
    return tmp / "data-jpeg"


def _stats(
    data_dir: Path, config: BenchConfig, plan: _Plan, details: dict[str, Any]
) -> list[Figure]:
    got = plain.stats_vs_read(data_dir, config.jobs, repeats=1 if plan.quick else 2)
    details["stats"] = dataclasses.asdict(got)
    return [
        Figure(
            "stats",
            name=f"stats, {_n(got.jobs, 'thread')}",
            value=got.stats_images_per_s,
            limit="h5py read, 1 proc",
            limit_value=got.read_images_per_s,
            target=0.7,
            cause="exact int64 sums of every pixel cost more than the read (docs/stats.md)",
        ),
    ]


# --------------------------------------------------------------------------- train step


def _train(
    plan: _Plan, details: dict[str, Any], progress: Progress, compile_: bool
) -> tuple[list[Figure], float]:
    """The tuned step (fp32 and `--amp`) against the matmul peaks and the plain step;
    with `compile_`, the tuned step at `--amp` compiled against it eager."""
    cfg, amp = plan.train, plan.precision
    flops = limits.flops_per_image(cfg.model)
    progress.log("train: the arithmetic peaks (a big matmul, a big 3×3 convolution)")
    dtypes = ("fp32", "bf16", "fp16") if amp == "fp16" else ("fp32", "bf16")
    matmul, convs = limits.peaks(dtypes, plan.devices[0], quick=plan.quick)
    peaks = {k: max(matmul[k], convs[k]) for k in dtypes}
    rates, top = _step_rates(plan, progress, compile_)
    details["train"] = {
        "preset": cfg.preset,
        "batch_size": plan.batch_size,
        "crop": cfg.crop,
        "flops_per_image": flops,
        "flops_convention": "6 × forward multiply-adds (2 FLOPs each; backward = 2 forwards)",
        "matmul_gflops": {k: round(v / 1e9, 1) for k, v in matmul.items()},
        "conv3x3_gflops": {k: round(v / 1e9, 1) for k, v in convs.items()},
        "peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "step_images_per_s": {k: round(v, 2) for k, v in rates.items()},
        "step_top_ops": [{"op": op, "share": round(share, 4)} for op, share in top],
    }
    tuned = rates[f"tuned_{amp}"]
    figures = [
        Figure(
            "train",
            name=f"{cfg.preset} step, {k}",
            value=rates[f"tuned_{k}"],
            limit=f"{k} peak (matmul, conv)",
            limit_value=peaks[k] / flops,
        )
        for k in dict.fromkeys(("fp32", amp))
    ]
    plain = f"plain eager fp32, {_n(_all_cores(), 'thread')}"
    targets = {"fp32": 1.5} | ({amp: 2.5} if amp != "fp32" else {})
    for k, target in targets.items():
        figures.append(
            Figure(
                "train",
                name=f"{cfg.preset} step, {k}",
                value=rates[f"tuned_{k}"],
                limit=plain,
                limit_value=rates["plain_fp32"],
                target=target,
                cause=_step_cause(k),
            )
        )
    if "compiled_fp32" in rates:
        figures.append(
            Figure(
                "train",
                name=f"{cfg.preset} step, fp32",
                value=rates["tuned_fp32"],
                limit="torch.compile'd plain fp32",
                limit_value=rates["compiled_fp32"],
            )
        )
    if f"tuned_compiled_{amp}" in rates:  # what `train --compile` gains over eager
        name, rate = f"{cfg.preset} step, {amp}", rates[f"tuned_compiled_{amp}"]
        figures.append(
            Figure(
                "train",
                name=f"{name}, compiled",
                value=rate,
                limit=f"{name}, eager",
                limit_value=tuned,
            )
        )
    return figures, tuned


def _step_cause(precision: str) -> str:
    if precision == "bf16" and native_bf16() is False:
        return "this CPU has no native bf16 (no AVX512_BF16 or AMX): bf16 runs emulated"
    return "conv backward dominates both (details.train.step_top_ops)"


def _all_cores() -> int:
    """The cores `train` occupies, compute and loader alike: what plain PyTorch gets."""
    return cpu_cores()


def _train_threads(cfg: TrainConfig, workers: int, device: torch.device, *, quick: bool) -> int:
    """The compute threads `train` would choose (core/nn/threads.py)."""
    counts = candidates(cpu_cores(), workers)
    if device.type != "cpu" or len(counts) == 1 or quick:
        return counts[-1] if device.type != "cpu" else counts[0]
    return fastest(probe(cfg.model, counts, channels_last=cfg.channels_last))


def _step_rates(
    plan: _Plan, progress: Progress, compile_: bool
) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Images/s of each step setup (one network in memory at a time), and where the
    tuned step's time goes."""
    cfg, top = plan.train, []
    rates: dict[str, float] = {}
    for name, setup in _setups(plan, compile_).items():
        progress.log(
            f"train: the {name.replace('_', ' ')} step, batch {plan.batch_size} at {cfg.crop}"
        )
        runner = step.StepBench(
            cfg.model,
            batch_size=plan.batch_size,
            devices=plan.devices,
            setup=setup,
            lr=cfg.lr,
            input_scale=cfg.input_scale,
            clip_grad_norm=clip_limit(cfg.clip_grad_norm, cfg.max_step_norm, cfg.lr),
        )
        rates[name] = runner.rate(plan.seconds).per_s
        if name == f"tuned_{plan.precision}":
            top = runner.top_ops()
        del runner
    return rates, top


_AMPS: dict[str, Amp] = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}


def _setups(plan: _Plan, compile_: bool) -> dict[str, step.StepSetup]:
    """plain eager fp32 on every core (what a user would run instead), the same through
    torch.compile (not with --quick: compiling takes a minute), and the tuned step, fp32
    and at `--amp`, on the threads `train` would use; with `--compile`, that step at
    `--amp` through torch.compile too (as `train --compile` runs it)."""
    everything = _all_cores()
    setups = {"plain_fp32": step.StepSetup.plain(everything)}
    if not plan.quick and plan.devices[0].type == "cpu":
        setups["compiled_fp32"] = step.StepSetup.plain(everything, compiled=True)
    setups["tuned_fp32"] = step.StepSetup.tuned(threads=plan.threads)
    amp = _AMPS[plan.precision]
    if plan.precision != "fp32":
        setups[f"tuned_{plan.precision}"] = step.StepSetup.tuned(amp, threads=plan.threads)
    if compile_:
        setups[f"tuned_compiled_{plan.precision}"] = step.StepSetup.tuned(amp, plan.threads, True)
    return setups


# --------------------------------------------------------------------------- loader


def _loader(
    data_dir: Path,
    plan: _Plan,
    step: float | None,
    details: dict[str, Any],
    progress: Progress = SILENT,
) -> list[Figure]:
    """Training batches (workers + the device-side normaliser) against raw random reads
    by as many processes (JPEG records: read and decoded by plain PIL), and against what
    the step consumes. For JPEG records also one worker's share of the work (its fill of
    a batch, in this process) against one H100's appetite per core."""
    data = open_data_dir(data_dir)
    crop = plan.train.crop
    if data.size < crop:
        raise ConfigError(
            f"{data_dir}: {data.size} px images are smaller than the {crop} px crop",
            hint="use --preset small, or bench without DATA_DIR (made-up data)",
        )
    jpeg = data.encoding == "jpeg"
    what = f"loader (jpeg q{data.quality})" if jpeg else "loader"
    progress.log(f"{what}: training batches against " + ("decoding reads" if jpeg else "raw reads"))
    shards = data.shard_set("train")
    batch = min(plan.batch_size, len(shards))
    normalize = _normalizer(data_dir, data.size, plan)
    got = plain.loader_rate(
        shards,
        normalize,
        size=data.size,
        batch_size=batch,
        crop=crop,
        workers=plan.workers,
        seconds=plan.seconds,
    )
    procs = max(plan.workers, 1)
    raw = plain.raw_read_rate(shards, procs, plan.seconds)
    worker = plain.fill_rate(
        shards, size=data.size, crop=crop, batch_size=batch, seconds=plan.seconds
    )
    details["loader_jpeg" if jpeg and "loader" in details else "loader"] = {
        "encoding": data.encoding,
        "workers": plan.workers,
        "batch_size": batch,
        "crop": crop,
        "images": len(shards),
        "device": str(normalize.mean.device),
        "raw_read_processes": procs,
        "one_worker_fill_images_per_s": round(worker.per_s, 1),
        "bytes_per_image": round(data.manifest.get("bytes", 0) / max(data.images_all(), 1)),
    }
    workers = _n(plan.workers, "worker")
    reads = f"decoding reads, {_n(procs, 'proc')}" if jpeg else f"random reads, {_n(procs, 'proc')}"
    figures = [
        Figure(
            "loader",
            name=f"{what}, {workers}",
            value=got.per_s,
            limit=reads,
            limit_value=raw.per_s,
            target=0.5,
            cause=JPEG_CAUSE if jpeg else LOADER_CAUSE,
        ),
    ]
    if step is not None:
        figures.append(
            Figure(
                "loader",
                name=f"{what}, {workers}",
                value=got.per_s,
                limit=f"{plan.train.preset} step, {plan.precision}",
                limit_value=step,
                target=10.0,
                cause=LOADER_CAUSE,
            )
        )
    if jpeg:
        figures.append(
            Figure(
                "loader",
                name=f"{what}, one worker's fill",
                value=worker.per_s,
                limit="one H100's appetite per core (20,000/s ÷ 16)",
                limit_value=H100_PER_CORE,
                target=0.8,
                cause="a 256 px JPEG decode costs ~0.5–1 ms of one core: more cores per "
                "GPU, or GPU decoding (docs/prepare.md)",
            )
        )
    return figures


H100_PER_CORE = 20_000 / 16  # images/s one core must feed for an H100 with 16 cores
JPEG_CAUSE = (
    "the loader also crops, reflects and normalises, and the normaliser's float output "
    "shares the one thread train leaves it (docs/performance.md)"
)


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _normalizer(data_dir: Path, size: int, plan: _Plan) -> Normalizer:
    """DATA_DIR's own stats when current; else a flat one (the same work, other values)."""
    from alexcli.stages.datadir import check_stats_current

    device = plan.devices[0]
    try:
        s = check_stats_current(data_dir)
    except AlexcliError:
        return step.flat_normalizer(size, device, plan.train.input_scale)
    return Normalizer.create(s.mean, s.eigval, s.eigvec, device, input_scale=plan.train.input_scale)


# --------------------------------------------------------------------------- context


def _machine(plan: _Plan) -> dict[str, Any]:
    """What the numbers were measured on."""
    return limits.describe_machine() | {
        "threads": plan.threads,
        "devices": [str(d) for d in plan.devices],
    }


def _settings(config: BenchConfig, plan: _Plan, data_dir: Path | None) -> dict[str, Any]:
    return {
        "preset": plan.train.preset,
        "batch_size": plan.batch_size,
        "crop": plan.train.crop,
        "amp": config.amp,
        "devices": config.devices,
        "workers": plan.workers,
        "jobs": config.jobs,
        "seconds": plan.seconds,
        "quick": plan.quick,
        "stages": list(plan.stages),
        "compile": config.compile,
        "data_dir": str(data_dir) if data_dir else "made up",
        "source": config.source or "made up",
    }
