"""`alexcli eval RUN_DIR DATA_DIR`."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from alexcli.cli._app import app
from alexcli.cli._console import err, print_json, reporting
from alexcli.cli._console import out as console
from alexcli.cli._options import (
    Amp,
    BatchSize,
    Compile,
    DataDir,
    Devices,
    Json,
    RunDir,
    Split,
    Views,
    Workers,
)
from alexcli.config import EvalConfig, with_values

if TYPE_CHECKING:
    from alexcli.stages.eval import ClassError, EvalReport


@app.command("eval")
def eval_(
    run_dir: RunDir,
    data_dir: DataDir,
    views: Views = None,
    split: Split = "val",
    json: Json = False,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Also write the report to this JSON file.")
    ] = None,
    devices: Devices = None,
    amp: Amp = None,
    batch_size: BatchSize = None,
    workers: Workers = None,
    compile_: Compile = False,
    legacy_json: Annotated[bool, typer.Option(LEGACY_FLAG, hidden=True)] = False,
) -> None:
    """Top-1 and top-5 error on the validation shards, with the paper's 10-view test.

    Example: `alexcli eval runs/in100 data/in100 --views 10 --json-out eval.json`
    """
    from alexcli.core.atomic import check_writable, write_json
    from alexcli.stages.eval import run_eval

    if legacy_json:
        error_line = (
            "warning: `--json FILE` is deprecated and will go in the next release: use "
            "`--json-out FILE` (`--json` alone now prints the report as JSON on stdout)"
        )
        err.print(error_line, highlight=False, soft_wrap=True)
    cfg = with_values(
        EvalConfig(),
        views=views,
        split=split,
        devices=devices,
        amp=amp,
        batch_size=batch_size,
        workers=workers,
        compile=compile_ or None,
    )
    if json_out is not None:
        check_writable(json_out, "--json-out")  # now, not after hours of evaluating
    with reporting(quiet=json) as progress:
        report = run_eval(run_dir, data_dir, cfg, progress)
    if json_out is not None:
        write_json(json_out, report.to_json())
    if json:
        print_json(report.to_json())
        return
    _show_eval(report)
    if json_out is not None:
        console.print(f"wrote [bold]{json_out}[/]", highlight=False)


def legacy_json_args(args: list[str]) -> list[str]:
    """`eval RUN_DIR DATA_DIR --json FILE` (or `--json=FILE`), the form from before
    `--json` printed to stdout, rewritten to `--json-out FILE` plus a hidden flag that
    prints a deprecation line. Only when `eval` is the command (the first argument that
    is not one of alexcli's own options), and FILE is the token after `--json` only when,
    without it, the two paths are still there: `eval RUN_DIR DATA_DIR --json` is the flag.
    """
    first = next((k for k, a in enumerate(args) if not a.startswith("-")), None)
    if first is None or args[first] != "eval":
        return args
    head, rest = args[: first + 1], args[first + 1 :]
    for k, token in enumerate(rest):
        if token.startswith("--json="):
            file = token.split("=", 1)[1]
            return [*head, *rest[:k], "--json-out", file, LEGACY_FLAG, *rest[k + 1 :]]
    if "--json" not in rest:
        return args
    at = rest.index("--json")
    if at + 1 >= len(rest) or rest[at + 1].startswith("-"):
        return args
    others = [t for k, t in enumerate(rest) if k != at + 1]
    if len(_positionals(others)) < 2:
        return args
    return [*head, *rest[:at], "--json-out", rest[at + 1], LEGACY_FLAG, *rest[at + 2 :]]


LEGACY_FLAG = "--legacy-json-file"
_VALUED = ("--views", "--split", "--devices", "--amp", "--batch-size", "--workers", "--json-out")


def _positionals(tokens: list[str]) -> list[str]:
    """The arguments among `tokens` that are neither options nor an option's value."""
    found, skip = [], False
    for t in tokens:
        if skip:
            skip = False
        elif t.startswith("-"):
            skip = t in _VALUED
        else:
            found.append(t)
    return found


def _show_eval(r: EvalReport) -> None:
    table = Table("", "this run", title_justify="left", title=f"{r.split}, {r.views} view(s)")
    if r.published:
        table.add_column(str(r.published["source"]))
    for name, value in (("top-1 error", r.top1_error), ("top-5 error", r.top5_error)):
        key = "top1_error" if name.startswith("top-1") else "top5_error"
        published = [_pct(r.published[key])] if r.published else []
        table.add_row(name, _pct(value), *published)
    console.print(table)
    console.print(
        f"{r.images:,} images from {r.checkpoint} (epoch {r.epoch}) on "
        f"{', '.join(r.devices)}, amp {r.amp}: {r.images_per_s:,.1f} images/s",
        highlight=False,
    )
    scored = [c for c in r.per_class_top1 if c.top1_error is not None]
    if len(scored) > 1:
        _show_classes(scored)


def _show_classes(scored: list[ClassError]) -> None:
    """The 5 hardest classes, and with more than 10 the 5 easiest and the median: a
    thousand classes in a few lines (all of them are in --json)."""
    ranked = sorted(scored, key=lambda c: (-(c.top1_error or 0.0), c.index))
    few = len(ranked) <= 10
    title = "hardest classes" if few else f"hardest and easiest of {len(ranked):,} classes"
    table = Table("class", "words", "images", "top-1 error", title=title)
    for k, c in enumerate(ranked[:5]):
        table.add_row(c.name, c.words, str(c.images), _pct(c.top1_error or 0.0), end_section=k == 4)
    if not few:
        for c in ranked[-5:]:
            table.add_row(c.name, c.words, str(c.images), _pct(c.top1_error or 0.0))
    console.print(table)
    if not few:
        median = statistics.median(c.top1_error or 0.0 for c in ranked)
        console.print(
            f"per-class top-1 error: median {_pct(median)}; every class in --json",
            highlight=False,
        )


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"
