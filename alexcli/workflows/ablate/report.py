"""What `alexcli ablate` leaves in OUT_DIR besides the runs: claims.json (the study, every
claim as `claims.assess` gives it, the plain measurements), claims.md (what a
person reads: the paper's kind of table first, then the verdicts, the flags and every
seed's values) and the figures (core/figures/claims.py) as PNG and SVG. All of it is
rewritten from the runs' measures.json at every call, atomically, file by file."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alexcli.core.atomic import write_json, write_text
from alexcli.stages.results import jsonable
from alexcli.workflows.ablate.claims import CLAIMS, PAPER_ERROR, finite
from alexcli.workflows.ablate.verdicts import t_interval

Runs = Mapping[str, Mapping[int, Mapping[str, Any]]]


def write_report(
    out_dir: Path,
    rows: Sequence[dict[str, Any]],
    runs: Runs,
    study: dict[str, Any],
    measured: Sequence[dict[str, Any]] = (),
) -> dict[str, Path]:
    """claims.json, claims.md, figure1.{png,svg} (when the relu claim ran) and
    effects.{png,svg} under `out_dir` from `rows` (`claims.assess`) and the plain
    `measured` (`claims.measurements`); returns them by name."""
    from alexcli.core.figures.canvas import write_figure
    from alexcli.core.figures.claims import figure1

    files = {"json": out_dir / "claims.json", "markdown": out_dir / "claims.md"}
    data = {"study": study, "claims": rows, "measurements": list(measured)}
    write_json(files["json"], jsonable(data))
    write_text(files["markdown"], markdown(rows, study, runs, measured))
    if any(row["claim"] == "relu" for row in rows):
        relu = [_curve(r) for r in runs.get("fig1-relu", {}).values()]
        tanh = [_curve(r) for r in runs.get("fig1-tanh", {}).values()]
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
            shown.append(
                Effect(
                    label=f"{m['variant']}: {m['label']}",
                    mean=100 * effect["mean"],
                    half_width=100 * half if finite(half) is not None else None,
                    paper=None if paper is None else 100 * m["expected_sign"] * paper,
                )
            )
    return effects(shown)


# --------------------------------------------------------------------------- claims.md


def markdown(
    rows: Sequence[dict[str, Any]],
    study: Mapping[str, Any],
    runs: Runs,
    measured: Sequence[dict[str, Any]] = (),
) -> str:
    """claims.md: the networks in the paper's format, the verdicts, the flags, the plain
    measurements, then every seed's values and Figure 1's lr search."""
    first, n = study.get("first_seed", 0), study["seeds"]
    family = rows[0]["family"] if rows else 0
    lines = [
        "# The paper's claims, measured (`alexcli ablate`)",
        "",
        f"Data: {study['data_dir']} ({study['classes']} classes, {study['train_images']} "
        f"training and {study['val_images']} validation images); preset "
        f"`{study['preset']}`, {study['epochs']} epochs, seeds {first}–{first + n - 1} "
        f"({n}). Effects are variant − reference, paired by seed; ± is the 95 % interval's "
        "half width (Student t); errors in percent, effects in percentage points (pp).",
        "",
        *network_table(rows, study, runs),
        "",
        "## Verdicts",
        "",
        f"**Direction**: each claim's p-value (two-sided), Holm–Bonferroni-adjusted across "
        f"the {family} claims of this study at α = 0.05, so that the chance of any false "
        "direction verdict in the study is at most 5 %. **Size**: the paper's figure in "
        "comparable units (the relative change in error: the paper's points over its own "
        f"error, {100 * PAPER_ERROR['val_top1_error']:g} % top-1 and "
        f"{100 * PAPER_ERROR['val_top5_error']:g} % top-5; for relu the log of the ratio "
        "of epochs, against log 6) beside the measured interval at 1 − 0.05/"
        f"{family}, so that all the study's size intervals hold their true values together "
        "95 % of the time. The last column is "
        f"the effect the study finds with 80 % power at {n} seeds (at α/{family}, Holm's "
        "strictest step): a claim not resolved has, in all likelihood, an effect smaller "
        "than that here.",
        "",
        "| claim | primary measure | effect | p (Holm) | direction | size: measured vs the "
        "paper | size | 80 % power for |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for i, m in enumerate(x for x in row["measures"] if x["primary"]):
            head = i == 0
            lines.append(
                f"| {row['claim'] if head else ''} | {m['variant']}: {m['label']} "
                f"| {format_effect(m)} | {_p(row) if head else _p_measure(m)} "
                f"| {'direction ' + row['direction'] if head else ''} | {_size_text(m)} "
                f"| {_size_word(row) if head else ''} | {format_detectable(m)} |"
            )
    flagged = [row for row in rows if row["flags"]]
    if flagged:
        lines += ["", "## Flags: what this study could not make like the paper's test", ""]
        lines += [f"- **{row['claim']}**: {flag}" for row in flagged for flag in row["flags"]]
    if measured:
        lines += ["", "## Measurements (no claim of the paper; no verdict)", ""]
        for item in measured:
            for m in item["measures"]:
                lines.append(
                    f"- {item['name']}: {m['label']}: {format_effect(m)} "
                    f"(p = {_num(m['p_value'])}, n = {m['effect']['n']})"
                )
    lines += ["", "## Secondary measures (descriptive: p unadjusted, no verdict)", ""]
    lines += ["| claim | measure | effect | p |", "|---|---|---|---|"]
    for row in rows:
        for m in row["measures"]:
            if not m["primary"]:
                lines.append(
                    f"| {row['claim']} | {m['variant']}: {m['label']} | {format_effect(m)} "
                    f"| {_num(m['p_value'])} |"
                )
    lines += ["", *seed_tables(rows, measured), *figure1_lines(study)]
    return "\n".join(lines) + "\n"


def network_table(
    rows: Sequence[dict[str, Any]], study: Mapping[str, Any], runs: Runs
) -> list[str]:
    """Per network, as the paper's tables give a model: top-1 and top-5 error over the
    seeds; then its effect against its reference, with the paper's figure beside."""
    paper = _paper_effects(rows)
    lines = [
        "## The networks (validation, 10 views)",
        "",
        "| network | what | parameters | crop | fc6 inputs | top-1 error (%) | top-5 error "
        "(%) | compared with | effect on top-1 (pp) | effect on top-5 (pp) | the paper (pp) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, net in study.get("networks", {}).items():
        errors = [_mean_interval(runs.get(name, {}), key) for key in PAPER_ERROR]
        ref = net["reference"]
        top1 = _effect_of(rows, name, "val_top1_error")
        top5 = _effect_of(rows, name, "val_top5_error")
        same = " (= baseline)" if net.get("same_as_baseline") else ""
        lines.append(
            f"| {name}{same} | {net['what']} | {net['parameters']:,} | {net['crop']} "
            f"| {net['fc6_inputs']:,} | {errors[0]} | {errors[1]} | {ref or '—'} "
            f"| {format_effect(top1) if top1 else ''} | {format_effect(top5) if top5 else ''} "
            f"| {paper.get(name, '')} |"
        )
    lines += [
        "",
        f"The paper's own: one CNN, {100 * PAPER_ERROR['val_top1_error']:g} % top-1 and "
        f"{100 * PAPER_ERROR['val_top5_error']:g} % top-5 on ILSVRC-2010's test set; its "
        "effects are in points of those errors.",
    ]
    return lines


def _effect_of(rows: Sequence[dict[str, Any]], variant: str, key: str) -> dict[str, Any] | None:
    for row in rows:
        for m in row["measures"]:
            if m["variant"] == variant and m["measure"] == key:
                return m
    return None


def _paper_effects(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Each variant's figure in the paper, in words or points."""
    top1, top5 = (100 * PAPER_ERROR[k] for k in ("val_top1_error", "val_top5_error"))
    out: dict[str, str] = {"baseline": f"one CNN: {top1:g} % / {top5:g} % error"}
    for claim in CLAIMS:
        if not any(r["claim"] == claim.name for r in rows):
            continue
        for m in claim.measures:
            if not m.primary and m.paper is None:
                continue
            if m.compare == "log-ratio" and m.paper is not None:
                out[m.variant] = f"{m.paper:g}× the epochs to 25 % training error"
            elif m.paper is not None:
                text = f"{100 * m.sign * m.paper:+g}"
                out[m.variant] = f"{out[m.variant]} / {text}" if m.variant in out else text
            elif m.primary:
                out.setdefault(m.variant, claim.paper)
    return out


def _mean_interval(seeds: Mapping[int, Mapping[str, Any]], key: str) -> str:
    values = [x for s in seeds.values() if (x := finite(s.get(key))) is not None]
    if not values:
        return "—"
    i = t_interval(values)
    if not math.isfinite(i.high):
        return f"{100 * i.estimate:.2f}"
    return f"{100 * i.estimate:.2f} ± {100 * (i.high - i.estimate):.2f}"


def _p(row: Mapping[str, Any]) -> str:
    return f"{_num(row['p_value'])} ({_num(row['p_holm'])})"


def _p_measure(m: Mapping[str, Any]) -> str:
    return _num(m["p_value"])


def _num(x: Any) -> str:
    v = finite(x)
    if v is None:
        return "—"
    return f"{v:.2g}" if v < 0.01 else f"{v:.2f}"


def _size_word(row: Mapping[str, Any]) -> str:
    if row["size"] is None:
        return "— (the paper gives no figure)"
    return f"size {row['size']}"


def _size_text(m: Mapping[str, Any]) -> str:
    """The measured interval against the paper's figure, in the compared units."""
    paper, interval = m.get("paper_size"), m.get("size_interval")
    if not paper or not interval:
        return ""
    if m.get("ablated_censored") or m.get("baseline_censored"):
        return "— (censored runs: no interval)"
    if m["compare"] == "log-ratio":
        return f"{_ends(interval, math.exp, '×{:.2f}')} vs ×{math.exp(paper['value']):g}"
    return f"{_ends(interval, lambda x: 100 * x, '{:+.0f} %')} vs {100 * paper['value']:+.1f} %"


def _ends(interval: Mapping[str, Any], f: Any, fmt: str) -> str:
    est, lo, hi = (finite(interval.get(k)) for k in ("estimate", "low", "high"))
    if est is None:
        return "—"
    if lo is None or hi is None:
        return f"{fmt.format(f(est))} (unbounded)"
    return f"{fmt.format(f(est))} [{fmt.format(f(lo))}, {fmt.format(f(hi))}]"


def format_effect(m: Mapping[str, Any]) -> str:
    """The paired effect and its 95 % half width, in the measure's units."""
    e = m["effect"]
    if finite(e["mean"]) is None:
        return "—"
    half = finite(e["half_width_95"])
    if m.get("compare") == "log-ratio":
        text = f"×{math.exp(e['mean']):.2f}"
        if half is not None:
            text += f" [{math.exp(e['mean'] - half):.2f}, {math.exp(e['mean'] + half):.2f}]"
        return text
    scale, unit = (100.0, " pp") if m["unit"] == "error" else (1.0, f" {m['unit']}")
    text = f"{scale * e['mean']:+.2f}"
    if half is not None:
        text += f" ± {scale * half:.2f}"
    return text + unit


def format_detectable(m: Mapping[str, Any]) -> str:
    """The effect found with 80 % power at the study's seeds, in the effect's units."""
    d = m.get("detectable") or {}
    if d.get("note"):
        return str(d["note"])
    value = finite(d.get("value"))
    if value is None:
        return "— (no spread to judge by)"
    n = d["n"]
    if m.get("compare") == "log-ratio":
        return f"×{math.exp(value):.2f} or more at {n} seeds"
    if m["unit"] == "error":
        rel = finite(d.get("relative"))
        relative = f" ({100 * rel:.0f} % relative)" if rel is not None else ""
        return f"{100 * value:.2f} pp{relative} or more at {n} seeds"
    return f"{value:.3g} {m['unit']} or more at {n} seeds"


def seed_tables(rows: Sequence[dict[str, Any]], measured: Sequence[dict[str, Any]]) -> list[str]:
    """Every measure's per-seed values: reference, variant, their difference."""
    lines = ["## Per seed", ""]
    items = [(r["claim"], r["measures"]) for r in rows]
    items += [(x["name"], x["measures"]) for x in measured]
    for name, measures in items:
        for m in measures:
            cens = set(m.get("ablated_censored", [])) | set(m.get("baseline_censored", []))
            lines += [
                f"**{name}** — {m['label']}: {m['variant']} against {m['reference']} ({m['test']})",
                "",
                f"| seed | {m['reference']} | {m['variant']} | "
                f"{'log ratio' if m['compare'] == 'log-ratio' else 'difference'} |",
                "|---|---|---|---|",
            ]
            for s, b, a, d in zip(
                m["seeds"], m["baseline"], m["ablated"], m["differences"], strict=True
            ):
                mark = " (censored: a bound)" if s in cens else ""
                lines.append(f"| {s}{mark} | {_value(m, b)} | {_value(m, a)} | {_diff(m, d)} |")
            lines.append("")
    return lines


def _value(m: Mapping[str, Any], x: float) -> str:
    return f"{100 * x:.2f} %" if m["unit"] == "error" else f"{x:.2f}"


def _diff(m: Mapping[str, Any], d: float) -> str:
    if m["compare"] == "log-ratio":
        return f"{d:+.3f} (×{math.exp(d):.2f})"
    return f"{100 * d:+.2f} pp" if m["unit"] == "error" else f"{d:+.2f}"


def figure1_lines(study: Mapping[str, Any]) -> list[str]:
    """Figure 1's lr search: the grid, each run's epochs to the threshold, the choice."""
    f = study.get("figure1")
    if not f:
        return []
    lines = [
        "## Figure 1's learning rates",
        "",
        f"Each activation's constant lr is the fastest to {study['threshold']:g} training "
        f"error of the baseline's lr × {', '.join(f'{x:g}' for x in f['lr_grid'])}, on seed "
        f"{f['tuning_seed']:,} (none of the study's); {f['epochs']} epochs, no dropout, "
        "weight decay, crops, reflections or colour noise.",
        "",
        "| activation | lr | epochs to the threshold | chosen |",
        "|---|---|---|---|",
    ]
    for t in f["tuning"]:
        epochs = f"{t['epochs_to_threshold']:.2f}" + (" (never: a bound)" if t["censored"] else "")
        chosen = "yes" if f["lr"].get(t["activation"]) == t["lr"] else ""
        lines.append(f"| {t['activation']} | {t['lr']:g} | {epochs} | {chosen} |")
    return [*lines, ""]
