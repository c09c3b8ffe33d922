"""What `alexcli ablate` leaves in OUT_DIR besides the runs: claims.json (the study and
every claim's measures, as `stages/claims.assess` gives them), claims.md (the table a
person reads) and the figures (core/figures/claims.py) as PNG and SVG. All of it is
rewritten from the runs' measures.json at every call, atomically, file by file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alexcli.core.atomic import write_json, write_text
from alexcli.stages.claims import finite
from alexcli.stages.results import jsonable

Runs = Mapping[str, Mapping[int, Mapping[str, Any]]]


def write_report(
    out_dir: Path, rows: Sequence[dict[str, Any]], runs: Runs, study: dict[str, Any]
) -> dict[str, Path]:
    """claims.json, claims.md, figure1.{png,svg} (when the relu claim ran) and
    effects.{png,svg} under `out_dir` from `rows` (`claims.assess`); returns them by name."""
    from alexcli.core.figures.claims import figure1
    from alexcli.core.figures.curves import write_figure

    files = {"json": out_dir / "claims.json", "markdown": out_dir / "claims.md"}
    write_json(files["json"], jsonable({"study": study, "claims": rows}))
    write_text(files["markdown"], markdown(rows, study))
    if any(row["claim"] == "relu" for row in rows):
        relu = [_curve(r) for r in runs.get("baseline", {}).values()]
        tanh = [_curve(r) for r in runs.get("tanh", {}).values()]
        fig = figure1(relu, tanh, study["threshold"])
        for suffix in ("png", "svg"):
            files[f"figure1_{suffix}"] = out_dir / f"figure1.{suffix}"
            write_figure(fig, files[f"figure1_{suffix}"])
    fig = effect_figure(rows)
    for suffix in ("png", "svg"):
        files[f"effects_{suffix}"] = out_dir / f"effects.{suffix}"
        write_figure(fig, files[f"effects_{suffix}"])
    return files


def _curve(measures: Mapping[str, Any]) -> list[float]:
    """The training-error curve from epoch 0 (chance) on."""
    classes = measures.get("classes")
    curve = [float(v) for v in measures.get("train_curve", []) if v is not None]
    start = 1.0 - 1.0 / classes if classes else (curve[0] if curve else 1.0)
    return [start, *curve]


def effect_figure(rows: Sequence[dict[str, Any]]) -> Any:
    from alexcli.core.figures.claims import Effect, effects

    shown = []
    for row in rows:
        for m in row["measures"]:
            effect = m["effect"]
            if m["unit"] != "error" or finite(effect["mean"]) is None:
                continue
            half = effect["half_width_95"]
            paper = m["paper_effect"]
            shown.append(Effect(
                label=f"{m['variant']}: {m['label']}" if m["variant"] != "baseline"
                else m["label"],
                mean=100 * effect["mean"],
                half_width=100 * half if finite(half) is not None else None,
                paper=None if paper is None else 100 * m["expected_sign"] * paper,
            ))  # fmt: skip
    return effects(shown)


def markdown(rows: Sequence[dict[str, Any]], study: Mapping[str, Any]) -> str:
    """The claims table: one row per measure, the claim's verdict on its first row."""
    lines = [
        "# The paper's claims, measured (`alexcli ablate`)",
        "",
        f"Data: {study['data_dir']} ({study['classes']} classes, {study['train_images']} "
        f"training and {study['val_images']} validation images); preset "
        f"`{study['preset']}`, {study['epochs']} epochs, up to {study['seeds']} seed(s). "
        "Effects are variant − baseline, paired by seed, as mean ± the 95 % interval's "
        "half width (Student t); errors in percentage points.",
        "",
        "| claim | paper | measure | variant | effect | seeds | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for i, m in enumerate(row["measures"]):
            first = i == 0
            lines.append(
                f"| {row['claim'] if first else ''} | {row['paper'] if first else ''} "
                f"| {m['label']}{'' if m['primary'] else ' (secondary)'} | {m['variant']} "
                f"| {format_effect(m)} | {m['effect']['n']} "
                f"| {('**' + row['verdict'] + '**; ') if first else ''}{m['verdict']} |"
            )
    lines += ["", "A claim is reproduced when all its primary measures are; opposite when "
              "any is; otherwise not resolved at this scale.", ""]  # fmt: skip
    censored = [m for row in rows for m in row["measures"] if m.get("baseline_censored")]
    if censored:
        seeds = ", ".join(map(str, censored[0]["baseline_censored"]))
        lines += [
            f"The baseline never reached the training-error threshold "
            f"({study['threshold']:g}) at seed(s) {seeds}: those seeds are left out of "
            "the relu claim (raise --threshold or train longer).",
            "",
        ]
    return "\n".join(lines)


def format_effect(m: Mapping[str, Any]) -> str:
    e = m["effect"]
    if finite(e["mean"]) is None:
        return "—"
    scale, unit = (100.0, " pp") if m["unit"] == "error" else (1.0, f" {m['unit']}")
    text = f"{scale * e['mean']:+.2f}"
    if finite(e["half_width_95"]) is not None:
        text += f" ± {scale * e['half_width_95']:.2f}"
    return text + unit
