"""`alexcli bench`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import out, print_json, reporting
from alexcli.cli._options import AmpName, Devices, Json, Preset
from alexcli.config import BenchConfig, with_values

if TYPE_CHECKING:
    from alexcli.bench.run import BenchResult
    from alexcli.bench.scale import ScaleReport


@app.command()
def bench(
    data_dir: Annotated[
        Path | None, typer.Argument(help="Shards to measure (default: made-up data).")
    ] = None,
    preset: Preset = None,
    source: Annotated[
        Path | None,
        typer.Option("--source", help="Image tree for prepare's figure (default: generated)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Batch of the step and loader (default: preset's).")
    ] = None,
    devices: Devices = None,
    amp: Annotated[
        AmpName | None, typer.Option("--amp", help="The tuned step's precision (default: bf16).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Compute threads (default: what `train` uses).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Loader processes (default: what `train` uses).")
    ] = None,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="prepare's and stats' processes (2).")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Time each rate for at least this long (5).")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Measure one stage: prepare, stats, loader, train, inference (repeatable).",
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny data, short timings: checks the report, seconds.")
    ] = False,
    scale: Annotated[
        Path | None,
        typer.Option(
            "--scale",
            help="The scale rehearsal in this folder instead: the chain at ILSVRC-2012's "
            "counts (1,000 classes, 1,281,167 + 50,000 tiny images), each command under "
            "`ulimit -n 1024` (~35 min at the full count on 2 cores; needs ~45 GB).",
        ),
    ] = None,
    fractions: Annotated[
        str,
        typer.Option(help="With --scale: the fractions of ILSVRC-2012's counts to run."),
    ] = "0.01,0.1,1",
    compile_: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Also time the tuned step through torch.compile, as `train --compile` runs "
            "it, against the same step eager (its compile, a minute or more, not counted).",
        ),
    ] = False,
    json: Json = False,
) -> None:
    """Each stage's throughput beside this machine's limit, measured in the same run.

    prepare against a plain decode loop, stats against a plain read, the loader
    against raw random reads and the step's appetite, the training step against the
    fp32 and bf16 peaks (a big matmul or 3×3 convolution) and against plain eager fp32
    PyTorch, and eval's and predict's forward pass against onnxruntime running the
    exported graph on the same threads. Ratio = stage ÷ limit. docs/performance.md has
    the numbers and what holds each stage back.

    `--scale WORK_DIR` runs the scale rehearsal instead (docs/performance.md "At
    ImageNet's size").

    Example: `alexcli bench data/in100 --json > bench.json`
    """
    if scale is not None:
        _scale(scale, fractions, jobs, workers, json)
        return
    from alexcli.bench.run import run_bench

    stages = tuple(s.strip() for item in only or () for s in item.split(",") if s.strip())
    config = with_values(
        BenchConfig(),
        preset=preset,
        batch_size=batch_size,
        devices=devices,
        amp=amp,
        threads=threads,
        workers=workers,
        jobs=jobs,
        seconds=seconds,
        only=stages or None,
        source=str(source) if source else None,
        quick=quick or None,
        compile=compile_ or None,
    )
    with reporting(quiet=json) as progress:
        result = run_bench(data_dir, config, progress)
    if json:
        print_json(result.to_json())
    else:
        _show(result)


def _scale(work: Path, fractions: str, jobs: int | None, workers: int | None, json: bool) -> None:
    from alexcli.bench.scale import Settings, run_scale
    from alexcli.errors import UserError

    try:
        chosen = [float(f) for f in fractions.split(",") if f.strip()]
    except ValueError:
        chosen = []
    if not chosen or not all(0 < f <= 1 for f in chosen):
        raise UserError(f"--fractions {fractions!r}: numbers in (0, 1], comma-separated")
    if len(set(chosen)) < 2:
        raise UserError(
            f"--fractions {fractions!r}: at least two different fractions",
            hint="each stage is judged against itself at a smaller fraction: e.g. 0.01,1",
        )
    with reporting(quiet=json) as progress:
        report = run_scale(work, chosen, Settings(jobs=jobs, workers=workers), progress)
    if json:
        print_json(report.to_json())
    else:
        _show_scale(report)


def _show_scale(report: ScaleReport) -> None:
    from alexcli.bench.scale import PLAN_BYTES

    fractions = report.fractions
    smaller, largest = fractions[:-1], fractions[-1]
    table = Table(
        "stage",
        *(f"images/s at {f:g}" for f in fractions),
        *(f"÷ at {f:g}" for f in smaller),
        f"anon MB at {fractions[0]:g} → {largest:g}",
        f"file MB at {largest:g}",
        f"open files at {largest:g}",
        title="the chain at fractions of ILSVRC-2012's counts, each under ulimit -n 1024",
    )
    for stage in report.stages:
        runs = [report.run(stage, f) for f in fractions]
        rates = [f"{r.rate:,.0f}" if r and r.ok else "failed" for r in runs]
        ratios = [_ratio(report.ratio(stage, f), 0.8, above=True) for f in smaller]
        first, last = runs[0], runs[-1]
        anon = f"{first.usage.anon >> 20} → {last.usage.anon >> 20}" if first and last else ""
        growth, per_image = report.growth(stage), report.bytes_per_image(stage)
        if stage.startswith("prepare") and per_image is not None:
            anon += f" ({_ratio(per_image, PLAN_BYTES, above=False, unit=' B/image')})"
        elif growth is not None:
            anon += f" ({_ratio(growth, 2.0, above=False)})"
        table.add_row(
            stage,
            *rates,
            *ratios,
            anon,
            str(last.usage.file >> 20) if last else "",
            str(last.usage.fds) if last else "",
        )
    out.print(table)
    for r in report.runs:
        if not r.ok:
            out.print(f"[red]{r.fraction:g}: {r.stage} failed[/]: {r.error}", highlight=False)
    verdict = "[green]passed[/]" if report.passed() else "[red]not passed[/]"
    out.print(
        "targets (each ratio ≥ 0.8; anonymous memory < 2×, prepare's < "
        f"{PLAN_BYTES} B an image added): {verdict}"
    )


def _ratio(value: float | None, target: float, *, above: bool, unit: str = "×") -> str:
    if value is None:
        return ""
    met = value >= target if above else value < target
    shown = f"{value:.2f}" if unit == "×" else f"{value:,.0f}"
    return f"[{'green' if met else 'red'}]{shown}{unit}[/]"


def _show(result: BenchResult) -> None:
    table = Table("stage", "measured", "images/s", "limit, same run", "images/s", "ratio", "target")
    for f in result.figures:
        colour = {True: "green", False: "red", None: "default"}[f.met]
        target = f"≥ {f.target:g}" if f.target is not None else ""
        table.add_row(
            f.stage,
            f.name,
            f"{f.value:,.1f}",
            f.limit,
            f"{f.limit_value:,.1f}",
            f"[{colour}]{f.ratio:.2f}[/]",
            target,
        )
    out.print(table)
    m, details = result.machine, result.details
    features = ", ".join(m["cpu_features"])
    out.print(
        f"{m['cpu']}, {m['cores']} cores ({features}); torch {m['torch']}, "
        f"{m['threads']} thread{'' if m['threads'] == 1 else 's'}; {result.seconds:.0f} s",
        highlight=False,
    )
    train = details.get("train")
    if train:
        peaks = ", ".join(
            f"{k} {train['matmul_gflops'][k]:,.0f} / {v:,.0f}"
            for k, v in train["conv3x3_gflops"].items()
        )
        out.print(
            f"GFLOP/s of a big matmul / a big 3×3 conv: {peaks}; "
            f"{train['flops_per_image'] / 1e9:.2f} GFLOP per training image "
            f"({train['flops_convention']})",
            highlight=False,
        )
        ops = ", ".join(f"{o['op']} {o['share']:.0%}" for o in train["step_top_ops"][:5])
        out.print(f"where the tuned step's time goes: {ops}", highlight=False)
    inference = details.get("inference")
    if inference:
        out.print(
            f"inference: batch {inference['batch_size']} on the CPU, "
            f"{inference['threads_chosen']}; OMP_WAIT_POLICY {inference['openmp_wait_policy']}; "
            f"{inference['onnxruntime']}",
            highlight=False,
        )
    for f in result.figures:
        if f.met is False:
            gap = f"{f.name} / {f.limit}: {f.ratio:.2f} < {f.target:g}"
            out.print(f"[red]{gap}[/]: {f.cause}", highlight=False)
