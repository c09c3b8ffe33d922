"""The `small` recipe over a grid of batch sizes, learning rates, run lengths and compute
threads, on prepared real data, against a plain small CNN given the same batches: where
docs/presets.md's "Robust over batch, lr and run length" comes from.

    nice -n 19 .venv/bin/python benchmarks/small_grid.py run OUT \
        --data mnist=data/mnist-72 --data fm=data/fm8k-72 --seeds 0 1 --threads 1 2 \
        --variant small= --variant "clip2lr4@0.02=--set clip_grad_norm=2"
    .venv/bin/python benchmarks/small_grid.py table OUT --variant small= ...

A cell (`CELLS`) is a batch (16, 32, 256), an lr as a multiple of the linear rule's at
that batch (×1, ×4, ×¼; ×2 at 256) and a run length (4 epochs; three cells at 12). A variant is the
preset as it is or a candidate change: extra `train` arguments, and optionally its own
base lr at batch 32, which the cells scale as the rule would (`Variant.train_args`). The
preset's ×1 runs give no `--lr`, so the rule itself chooses (0.0025 at 16, 0.04 warmed
up over 0.22 epochs at 256); every other lr is given as a user gives it (`--lr`, no
warm-up). On 8,000 training images a cell is 124 (batch 256, 4 epochs) to 6,000 (batch
16, 12 epochs) steps. Every `small` run is an ordinary `alexcli train` into
OUT/DATA/runs/ (so any can be looked at by hand), at `--set threads=T`; the plain CNN
(`plain_cnn`) trains in its own process on the same loader's batches (crops,
reflections, colour noise, the same seed's order), is validated by the same code, and
runs at the ×1 cells (its own lr, Adam's 1e-3, does not follow the cell).

Each finished run appends one JSON line to OUT/grid.jsonl (a cut session keeps what it
finished; a run already there, whichever variant asked for it, is not run again): its
final and best validation top-1 error (1 view, the centre crop), its curve, the lr it
trained at, and a verdict: "nan" (the run stopped on a non-finite loss), "diverging"
(an epoch's loss above 3·ln C), "dead" (the last epoch's training loss still within 2 %
of ln C), "slow" (learning, but the final error not below half of chance) or "ok".
Launch it under `nice -n 19`: the children inherit the niceness. 2-thread runs set
OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep instead of spinning while they wait: on a
shared machine a spinning thread holds the core the other needs); it changes when
threads wait, not the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from torch import nn

from alexcli.config import PRESETS
from alexcli.config.layering import WARMUP_EPOCHS, WARMUP_SHARE

ALEXCLI = [sys.executable, "-m", "alexcli"]
BASE_LR = PRESETS["small"].lr  # at the preset's batch (32)
# Which `small` a run trained (its recipe, without --lr or --set): part of a run's
# identity, so runs of an earlier preset are kept apart. Rows without it: lr 0.005, none.
# Each setting joins the string when the preset first changed it, so rows recorded
# before keep their key (dropout: named only since it left the paper's 0.5).
_SMALL = PRESETS["small"]
PRESET = (
    f"lr {BASE_LR:g}, clip {_SMALL.clip_grad_norm}, step {_SMALL.max_step_norm}"
    f", fc8 {_SMALL.model.fc8_std}, drops at steps"
    + (f", dropout {_SMALL.model.dropout}" if _SMALL.model.dropout != 0.5 else "")
)
OLD_PRESET = "lr 0.005, clip None"


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the batch, the lr as a multiple of the linear rule's at that
    batch (`mult`: 1 is the rule itself), and the epochs."""

    batch: int
    mult: float
    epochs: int

    @property
    def name(self) -> str:
        return f"b{self.batch}-x{self.mult:g}-e{self.epochs}"


@dataclass(frozen=True)
class Variant:
    """What is compared: a name, the base lr at batch 32 that the rule scales (the
    preset's, or a candidate's), and extra `train` arguments."""

    name: str
    base_lr: float = BASE_LR
    args: str = ""

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """NAME[@BASE_LR]=ARGS, e.g. "clip2@0.02=--set clip_grad_norm=2"."""
        head, _, args = spec.partition("=")
        name, _, base = head.partition("@")
        return cls(name, float(base) if base else BASE_LR, args)

    def train_args(self, cell: Cell) -> tuple[float | None, str]:
        """The `--lr` to give (None: none, the preset's own rule chooses) and the extra
        arguments. A candidate's base lr is given as the rule would scale it, with the
        rule's warm-up where it raises the lr; lr ×¼ and ×4 are given as a user gives them
        (`--lr`, which turns the rule and its warm-up off)."""
        if math.isclose(self.base_lr * cell.mult, BASE_LR) and (
            cell.mult == 1 or cell.batch <= 32
        ):  # the rule's lr (at batch ≤ 32 it adds no warm-up: the same run as --lr)
            return None, self.args
        lr = float(f"{self.base_lr * cell.mult * cell.batch / 32:.6g}")
        warm = min(WARMUP_EPOCHS, cell.epochs * WARMUP_SHARE)
        extra = f" --set warmup_epochs={warm:.4g}" if cell.mult == 1 and cell.batch > 32 else ""
        return lr, (self.args + extra).strip()


SHORT = 4
CELLS = [
    *(Cell(b, m, SHORT) for b in (32, 16, 256) for m in (1, 4, 0.25)),
    Cell(32, 1, 12),
    Cell(16, 1, 12),
    Cell(256, 2, 4),
    Cell(256, 1, 12),
]


def verdict(rows: list[dict], classes: int, stopped: bool) -> str:
    """ "nan", "diverging", "dead" (the loss still at ln C), "slow" (learning, but the final
    error not below half of chance) or "ok"."""
    if stopped:
        return "nan"
    if any(row["diverging"] for row in rows):
        return "diverging"
    if rows[-1]["train_loss"] >= 0.98 * math.log(classes):
        return "dead"
    if rows[-1]["val_top1_error"] >= (1 - 1 / classes) / 2:
        return "slow"
    return "ok"


def classes_of(data: Path) -> int:
    return len(json.loads((data / "manifest.json").read_text())["classes"])


def train_images(data: Path) -> int:
    return json.loads((data / "manifest.json").read_text())["splits"]["train"]["images"]


def small_run(
    data: Path,
    run_dir: Path,
    cell: Cell,
    lr: float | None,
    seed: int,
    threads: int,
    args: list[str],
) -> dict:
    """One `alexcli train` of the `small` preset; its line of grid.jsonl."""
    command = [*ALEXCLI, "train", str(data), str(run_dir), "--preset", "small"]
    command += ["--batch-size", str(cell.batch), "--epochs", str(cell.epochs)]
    command += ["--seed", str(seed), "--devices", "cpu", "--set", f"threads={threads}", "--force"]
    command += [] if lr is None else ["--lr", f"{lr:g}"]
    command += args
    print("$", shlex.join(command), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=thread_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - start
    metrics = run_dir / "metrics.jsonl"
    rows = (
        [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    )
    config = json.loads((run_dir / "config.json").read_text())
    stopped = done.returncode != 0
    if stopped and "the loss became" not in done.stderr:  # inf or NaN: a verdict
        raise SystemExit(f"{run_dir}: train failed:\n{done.stderr[-2000:]}")
    return {
        "lr_used": config["lr"],
        "warmup_epochs": config["warmup_epochs"],
        **summary(rows, classes_of(data), stopped, wall),
        "stopped": done.stderr.strip().splitlines()[-1][:300] if stopped else None,
    }


def summary(rows: list[dict], classes: int, stopped: bool, wall: float) -> dict:
    errors = [row["val_top1_error"] for row in rows]
    return {
        "verdict": verdict(rows, classes, stopped) if rows else "nan",
        "epochs_done": len(rows),
        "final_val_top1": errors[-1] if errors and not stopped else None,
        "best_val_top1": min(errors) if errors else None,
        "curve": [round(e, 4) for e in errors],
        "train_loss": [round(row["train_loss"], 4) for row in rows],
        "wall_s": round(wall, 1),
    }


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    if threads > 1:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


# ------------------------------------------------------------------ the plain alternative


def plain_cnn(classes: int) -> nn.Sequential:
    """A plain small CNN of the kind a user writes first (pytorch/examples' MNIST net,
    its first convolution strided for 64-px crops): conv 5×5/2 → pool → conv 3×3 →
    pool → fc 128 → dropout → fc. ~6.7 M multiply-adds per 64-px image (`small`: ~6 M)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, stride=2),  # 64 → 30
        nn.ReLU(),
        nn.MaxPool2d(2),  # → 15
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # → 7
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, classes),
    )


def plain_train(
    data_dir: Path, batch: int, epochs: int, seed: int, threads: int, crop: int
) -> dict:
    """The plain CNN, Adam at PyTorch's default lr (1e-3, constant), on the batches
    `alexcli train` would draw (the same sampler, loader and normaliser, × 0.017 as
    `small`), validated each epoch by the same code."""
    import torch
    import torch.nn.functional as F

    from alexcli.core.data.batches import CropDataset, EpochSampler
    from alexcli.core.data.loader import default_workers, make_loader
    from alexcli.core.data.transforms import Normalizer
    from alexcli.core.nn.loops import validate
    from alexcli.stages.datadir import check_stats_current, open_data_dir

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    data, stats = open_data_dir(data_dir), check_stats_current(data_dir)
    train, val = data.shard_set("train"), data.shard_set("val")
    classes, cpu = len(data.classes), torch.device("cpu")
    normalize = Normalizer.create(stats.mean, stats.eigval, stats.eigvec, cpu, input_scale=0.017)
    sampler = EpochSampler(len(train), batch, size=data.size, crop=crop, seed=seed)
    val_sampler = EpochSampler(len(val), batch, size=data.size, crop=crop, train=False)
    workers = default_workers()
    loader = make_loader(CropDataset(train, crop), sampler, workers=workers, pin_memory=False)
    val_loader = make_loader(CropDataset(val, crop), val_sampler, workers=workers, pin_memory=False)
    model = plain_cnn(classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rows: list[dict] = []
    start = time.perf_counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        losses = []
        for b in loader:
            x = normalize(b.images, b.ys, b.xs, b.flips, b.alphas)
            loss = F.cross_entropy(model(x), b.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        val_sampler.set_epoch(0)
        tally = validate(model, val_loader, normalize, cpu, num_classes=classes)
        train_loss = sum(losses) / len(losses)
        rows.append(
            {
                "val_top1_error": tally.top1_error,
                "train_loss": train_loss,
                "diverging": train_loss > 3 * math.log(classes),
            }
        )
    return summary(rows, classes, False, time.perf_counter() - start)


# --------------------------------------------------------------------------- the grid


def finished(out: Path) -> list[dict]:
    path = out / "grid.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def key(row: dict) -> tuple:
    """What a run is, whatever variant asked for it: a candidate's run at ×¼ of its rule
    can be the preset's at ×1, run once."""
    if row["model"] == "plain":
        return (row["data"], "plain", row["batch"], row["epochs"], row["threads"], row["seed"])
    return (
        row["data"],
        "small",
        row.get("preset", OLD_PRESET),
        row["batch"],
        row["lr"],
        row["args"],
        row["epochs"],
        row["threads"],
        row["seed"],
    )


def record(out: Path, row: dict) -> None:
    with (out / "grid.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    shown = {k: row[k] for k in ("data", "model", "cell", "threads", "seed", "verdict")}
    print(json.dumps({**shown, "final": row["final_val_top1"], "wall": row["wall_s"]}), flush=True)


def planned(args: argparse.Namespace) -> Iterator[tuple[str, Path, Cell, int, int]]:
    """Seeds outermost, so a cut session has whole grids of the first seeds; then threads,
    data sets, and the cells in `--only`'s order (CELLS' without it)."""
    cells = [next(c for c in CELLS if c.name == n) for n in args.only] if args.only else CELLS
    for seed in args.seeds:
        for threads in args.threads:
            for spec in args.data:
                name, _, path = spec.partition("=")
                for cell in cells:
                    yield name, Path(path), cell, seed, threads


def run_grid(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    done = {key(row): row for row in finished(args.out)}
    variants = [Variant.parse(v) for v in args.variant] or [Variant("small")]
    for name, data, cell, seed, threads in planned(args):
        base = {
            "data": name,
            "cell": cell.name,
            "batch": cell.batch,
            "mult": cell.mult,
            "epochs": cell.epochs,
            "seed": seed,
            "threads": threads,
            "train_images": train_images(data),
        }
        for variant in variants:
            lr, extra = variant.train_args(cell)
            row = {**base, "model": "small", "variant": variant.name, "lr": lr, "args": extra}
            row["preset"] = PRESET
            if key(row) in done:
                continue
            run_dir = args.out / name / "runs" / f"{cell.name}-{len(done)}-t{threads}-s{seed}"
            extra_args = ["--crop", str(args.crop), *shlex.split(extra)]
            row |= small_run(data, run_dir, cell, lr, seed, threads, extra_args)
            record(args.out, row)
            done[key(row)] = row
        row = {**base, "model": "plain", "variant": "adam", "lr": None, "args": ""}
        if args.plain and cell.mult == 1 and threads == 1 and key(row) not in done:
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "plain",
                    str(data),
                    "--batch",
                    str(cell.batch),
                    "--epochs",
                    str(cell.epochs),
                    "--seed",
                    str(seed),
                    "--threads",
                    str(threads),
                    "--crop",
                    str(args.crop),
                ],
                capture_output=True,
                text=True,
                check=True,
                env=thread_env(threads),
            )
            row |= json.loads(result.stdout.splitlines()[-1])
            record(args.out, row)
            done[key(row)] = row


def table(out: Path, variants: list[Variant]) -> None:
    """Markdown: per data set and cell, each variant's final top-1 errors over (threads,
    seed), their mean and verdicts, and the plain CNN's at the same batches and epochs."""
    rows = finished(out)
    runs = {key(r): r for r in rows}
    for data in dict.fromkeys(r["data"] for r in rows):
        print(f"\n{data}\n")
        print(
            "| batch | lr (× rule) | epochs (steps) | variant | lr | final top-1 error "
            "(threads/seed) | mean | verdicts | plain CNN |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for cell in CELLS:
            base = {"data": data, "batch": cell.batch, "epochs": cell.epochs}
            plain = [
                r for r in rows if r["model"] == "plain" and all(r[k] == v for k, v in base.items())
            ]
            p = [r["final_val_top1"] for r in plain if r["final_val_top1"] is not None]
            for variant in variants:
                lr, extra = variant.train_args(cell)
                found = [
                    runs[k]
                    for t in (1, 2)
                    for s in range(10)
                    if (
                        k := key(
                            {
                                **base,
                                "model": "small",
                                "preset": PRESET,
                                "lr": lr,
                                "args": extra,
                                "threads": t,
                                "seed": s,
                            }
                        )
                    )
                    in runs
                ]
                if not found:
                    continue
                finals = [r["final_val_top1"] for r in found if r["final_val_top1"] is not None]
                shown = ", ".join(
                    ("NaN" if r["final_val_top1"] is None else f"{r['final_val_top1']:.3f}")
                    + f" ({r['threads']}/{r['seed']})"
                    for r in found
                )
                # training drops the last partial batch
                steps = cell.epochs * (found[0]["train_images"] // cell.batch)
                print(
                    f"| {cell.batch} | ×{cell.mult:g} | {cell.epochs} ({steps}) "
                    f"| {variant.name} | {found[0]['lr_used']:g} | {shown} "
                    f"| {f'{mean(finals):.3f}' if finals else '–'} "
                    f"| {', '.join(sorted({r['verdict'] for r in found}))} "
                    f"| {f'{mean(p):.3f} ({len(p)})' if p else '–'} |"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    grid = sub.add_parser("run", help="run (or complete) the grid")
    grid.add_argument("out", type=Path)
    grid.add_argument("--data", action="append", required=True, help="NAME=DATA_DIR")
    grid.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    grid.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    grid.add_argument("--crop", type=int, default=64)
    grid.add_argument(
        "--only",
        nargs="*",
        choices=[c.name for c in CELLS],
        metavar="CELL",
        help="cell names (default: all of CELLS)",
    )
    grid.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME[@BASE_LR]='extra train arguments' (default: small, the preset as it "
        "is); BASE_LR: the lr at batch 32 the cells' multiples are taken of",
    )
    grid.add_argument("--no-plain", dest="plain", action="store_false")
    plain = sub.add_parser("plain", help="one plain-CNN run; its JSON on the last line")
    plain.add_argument("data", type=Path)
    for flag in ("--batch", "--epochs", "--seed", "--threads"):
        plain.add_argument(flag, type=int, required=True)
    plain.add_argument("--crop", type=int, default=64)
    show = sub.add_parser("table", help="the markdown tables of OUT/grid.jsonl")
    show.add_argument("out", type=Path)
    show.add_argument("--variant", action="append", default=[], help="as `run`'s")
    args = parser.parse_args()
    if args.command == "run":
        run_grid(args)
    elif args.command == "plain":
        result = plain_train(args.data, args.batch, args.epochs, args.seed, args.threads, args.crop)
        print(json.dumps(result))
    else:
        table(args.out, [Variant.parse(v) for v in args.variant] or [Variant("small")])


if __name__ == "__main__":
    main()
