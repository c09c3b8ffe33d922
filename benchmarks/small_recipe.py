"""The `small` recipe against candidates, over seeds, on a prepared DATA_DIR: where
docs/presets.md's "Beyond the generated images" table comes from.

    .venv/bin/python benchmarks/small_recipe.py DATA_DIR OUT_DIR --epochs 6 \
        --seeds 0 1 2 --candidate fc1024 --candidate old='--set model.fc_features=[256,256]'

Each candidate is NAME or NAME='extra train arguments' (none: the `small` preset as it
is). Every run is an ordinary `alexcli train` into OUT_DIR/NAME/seed-K followed by
`alexcli eval --views 10`, so any run can be inspected or resumed by hand; a run this
script finished (its train-wall.json and eval-10view.json written) is not run again.
The table printed at the end (and written to OUT_DIR/summary.json) holds each run's
final validation top-1 error (1 view, from metrics.jsonl), its 10-view top-1/top-5
error and its training wall time. The same comparison over batch sizes, learning rates,
run lengths and thread counts, against a plain small CNN, is benchmarks/small_grid.py
(docs/presets.md "Robust over batch, lr and run length").
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

ALEXCLI = [sys.executable, "-m", "alexcli"]


def run(command: list[str]) -> float:
    start = time.perf_counter()
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def one_run(data: Path, run_dir: Path, epochs: int, seed: int, extra: list[str]) -> None:
    wall_file, report = run_dir / "train-wall.json", run_dir / "eval-10view.json"
    if not wall_file.exists():
        train = [*ALEXCLI, "train", str(data), str(run_dir), "--preset", "small"]
        train += ["--epochs", str(epochs), "--seed", str(seed), "--devices", "cpu", *extra]
        wall = run(train)
        wall_file.write_text(json.dumps({"seconds": wall, "args": extra}))
        report.unlink(missing_ok=True)
    if not report.exists():
        run([*ALEXCLI, "eval", str(run_dir), str(data), "--views", "10", "--json-out", str(report)])


def summarise(out: Path) -> dict[str, list[dict]]:
    """Every finished run under OUT_DIR/NAME/seed-K, this invocation's or an earlier one's."""
    summary: dict[str, list[dict]] = {}
    for report in sorted(out.glob("*/seed-*/eval-10view.json")):
        run_dir = report.parent
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        epochs = [row for row in rows if "val_top1_error" in row]
        ten = json.loads(report.read_text())
        wall = run_dir / "train-wall.json"
        summary.setdefault(run_dir.parent.name, []).append(
            {
                "seed": int(run_dir.name.removeprefix("seed-")),
                "val_top1_1view": epochs[-1]["val_top1_error"],
                "val_top1_10view": ten["top1_error"],
                "val_top5_10view": ten["top5_error"],
                "curve": [round(row["val_top1_error"], 4) for row in epochs],
                "train_wall_s": json.loads(wall.read_text())["seconds"] if wall.exists() else None,
            }
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--candidate", action="append", default=[])
    args = parser.parse_args()
    for seed in args.seeds:
        for spec in args.candidate or ["small"]:
            name, _, extra = spec.partition("=")
            run_dir = args.out / name / f"seed-{seed}"
            one_run(args.data, run_dir, args.epochs, seed, shlex.split(extra))
    summary = summarise(args.out)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("| candidate | seeds | 1-view top-1 error | 10-view top-1 error | train wall (s) |")
    print("|---|---|---|---|---|")
    for name, runs in summary.items():
        one = [r["val_top1_1view"] for r in runs]
        ten = [r["val_top1_10view"] for r in runs]
        walls = [r["train_wall_s"] for r in runs if r["train_wall_s"]]
        wall = f"{mean(walls):.0f}" if walls else "–"
        print(
            f"| {name} | {', '.join(str(r['seed']) for r in runs)} "
            f"| {mean(one):.4f} ({', '.join(f'{x:.4f}' for x in one)}) "
            f"| {mean(ten):.4f} ({', '.join(f'{x:.4f}' for x in ten)}) | {wall} |"
        )


if __name__ == "__main__":
    main()
