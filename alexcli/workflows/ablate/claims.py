"""The paper's claims as `alexcli ablate` tests them: what each says, which variant
switches its choice off and against which network, what is measured, and two verdicts
that respect the noise (the statistics: verdicts.py; docs/ablations.md).

Every measure is paired by seed: for seed k, d_k = value(variant, k) − value(reference, k)
(the same seed gives both runs the same data order), or log(variant / reference) for the
relu claim, whose paper figure is a ratio. Each claim gets

- a **direction** verdict: its p-value (the paired t-test, two-sided; the sign test
  where a run is censored or the differences have no spread; the largest of its primary
  measures' where it needs them all), Holm-adjusted across the study's claims. "reproduced"
  when the adjusted p is at most `ALPHA` and the sign is the paper's, "opposite" for the
  other sign, else "not resolved". The chance of any false direction verdict in a study
  is then at most 5 %.
- a **size** verdict: the paper's figure in comparable units — the relative change in
  error (the paper's percentage points over its own error, `PAPER_ERROR`), or the log of
  the ratio of epochs against log 6 — against the measured interval at 1 − α/m (all the
  study's size intervals together cover 95 %): "consistent", "smaller", "larger" or "not
  resolved" (`verdicts.size_verdict`); none where the paper gives no figure.

No torch here: the study (`workflows/ablate`) measures, this module judges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from alexcli.workflows.ablate import verdicts as v

Runs = Mapping[str, Mapping[int, Mapping[str, Any]]]

Direction = Literal["reproduced", "opposite", "not resolved"]
REPRODUCED: Direction = "reproduced"
OPPOSITE: Direction = "opposite"
UNRESOLVED: Direction = "not resolved"
# claims.json's `verdict` (before the direction/size split; the direction's value)
Verdict = Literal["reproduced", "opposite", "not resolved at this scale"]
LEGACY: dict[Direction, Verdict] = {
    REPRODUCED: "reproduced",
    OPPOSITE: "opposite",
    UNRESOLVED: "not resolved at this scale",
}

# The errors the paper's effects are relative to: one CNN on ILSVRC-2010's test set, where
# the paper ran most of its experiments (section 6: "the version on which we performed
# most of our experiments"); docs/paper.md "Results to reproduce".
PAPER_ERROR = {"val_top1_error": 0.375, "val_top5_error": 0.170}


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Measure:
    """One number compared between a variant and its reference network.

    `key` names the run's measurement (`measure` in measures.py); `sign` is the sign
    of (variant − reference) the paper predicts; `paper` its figure where the paper
    gives one: an error difference (a fraction) for `compare="difference"`, the ratio
    for `compare="log-ratio"`."""

    key: str
    label: str
    variant: str
    sign: int  # +1: the variant's value is higher; −1: lower
    unit: Literal["error", "epochs", "seconds"] = "error"
    paper: float | None = None
    primary: bool = True  # the claim's verdicts read its primary measures
    reference: str = "baseline"  # the network the variant is compared with
    reference_key: str | None = None  # compare with another key of the reference (views)
    # A run's flag that its value is only a lower bound (it never reached the threshold):
    # such pairs are kept, and the sign test on what their bounds tell decides.
    censored_by: str | None = None
    compare: Literal["difference", "log-ratio"] = "difference"

    def paper_size(self) -> tuple[float, str] | None:
        """The paper's figure in the units the size verdict compares, and their name."""
        if self.paper is None:
            return None
        if self.compare == "log-ratio":
            return math.log(self.paper), "log of the ratio"
        base = PAPER_ERROR.get(self.key)
        return None if base is None else (self.paper / base, "relative change in error")


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    paper: str  # the paper's figure, in words
    section: str
    measures: tuple[Measure, ...]
    flags: tuple[str, ...] = ()  # what the study cannot make like the paper's test

    @property
    def variants(self) -> tuple[str, ...]:
        """Every network the claim reads, references first."""
        names = [n for m in self.measures for n in (m.reference, m.variant)]
        return tuple(dict.fromkeys(names))


TOP1, TOP5 = "val_top1_error", "val_top5_error"
GAP = "train-val gap (top-1, 1 view)"
CENSORED = "threshold_censored"


def _errors(
    variant: str, top1: float | None, top5: float | None, reference: str = "baseline"
) -> tuple[Measure, ...]:
    """Val top-1 error (primary) and top-5 (secondary) at 10 views, with the paper's
    figures."""
    return (
        Measure(
            TOP1, "val top-1 error (10 views)", variant, sign=+1, paper=top1, reference=reference
        ),
        Measure(
            TOP5,
            "val top-5 error (10 views)",
            variant,
            sign=+1,
            paper=top5,
            reference=reference,
            primary=False,
        ),
    )


def _secondary_top1(variant: str) -> Measure:
    return Measure(TOP1, "val top-1 error (10 views)", variant, sign=+1, primary=False)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        name="relu",
        statement="ReLUs train several times faster than tanh units",
        paper="a 4-layer CNN reaches 25 % training error on CIFAR-10 six times faster (Figure 1)",
        section="3.1",
        measures=(
            Measure(
                "epochs_to_threshold",
                "epochs to the training-error threshold",
                "fig1-tanh",
                sign=+1,
                unit="epochs",
                paper=6.0,
                reference="fig1-relu",
                censored_by=CENSORED,
                compare="log-ratio",
            ),
            Measure(
                "seconds_to_threshold",
                "seconds to the training-error threshold",
                "fig1-tanh",
                sign=+1,
                unit="seconds",
                reference="fig1-relu",
                censored_by=CENSORED,
                compare="log-ratio",
                primary=False,
            ),
        ),
        flags=(
            "this study's network and data under Figure 1's protocol, not the paper's "
            "4-layer CIFAR-10 net; the threshold is read at epoch ends (linear between)",
        ),
    ),
    Claim(
        name="lrn",
        statement="local response normalisation lowers the error",
        paper="−1.4 % top-1, −1.2 % top-5",
        section="3.3",
        measures=_errors("no-lrn", top1=0.014, top5=0.012),
    ),
    Claim(
        name="overlapping-pooling",
        statement="overlapping pooling lowers the error and overfits less",
        paper='−0.4 % top-1, −0.3 % top-5; "slightly more difficult to overfit"',
        section="3.4",
        measures=(
            *_errors("pool-2x2", top1=0.004, top5=0.003, reference="pool-3x3"),
            Measure("gap", GAP, "pool-2x2", sign=+1, reference="pool-3x3", primary=False),
        ),
    ),
    Claim(
        name="two-towers",
        statement="two towers beat one tower with half the kernels",
        paper="−1.7 % top-1, −1.2 % top-5 against the one-GPU net of the footnote; the "
        "two-GPU net trains slightly faster",
        section="3.2",
        measures=(
            *_errors("one-tower", top1=0.017, top5=0.012),
            Measure(
                "seconds", "training seconds", "one-tower", sign=+1, unit="seconds", primary=False
            ),
        ),
        flags=(
            "training seconds: the paper's two towers ran on two GPUs; on one device they share it",
        ),
    ),
    Claim(
        name="pca-lighting",
        statement="PCA colour augmentation lowers the error",
        paper="top-1 error reduced by over 1 %",
        section="4.1",
        measures=_errors("no-pca", top1=0.01, top5=None),
    ),
    Claim(
        name="crops-reflections",
        statement="random crops and reflections prevent overfitting",
        paper='"substantial overfitting" without them',
        section="4.1",
        measures=(
            Measure("gap", GAP, "no-crop-flip", sign=+1),
            _secondary_top1("no-crop-flip"),
        ),
    ),
    Claim(
        name="dropout",
        statement="dropout prevents overfitting, at about twice the iterations",
        paper='"substantial overfitting" without it; about 2× the iterations to converge',
        section="4.2",
        measures=(
            Measure("gap", GAP, "no-dropout", sign=+1),
            Measure(
                "epochs_to_best",
                "epochs to the best val error",
                "no-dropout",
                sign=-1,
                unit="epochs",
                primary=False,
            ),
        ),
    ),
    Claim(
        name="weight-decay",
        statement="weight decay lowers the training error, not only the val error",
        paper='"important for the model to learn": it reduces the training error',
        section="5",
        measures=(
            Measure(
                "train_top1_error", "training-set top-1 error (1 view)", "no-weight-decay", sign=+1
            ),
            _secondary_top1("no-weight-decay"),
        ),
    ),
    Claim(
        name="depth",
        statement="depth matters: every middle conv layer counts",
        paper="removing any middle conv layer costs about 2 % top-1",
        section="7",
        measures=tuple(
            Measure(
                TOP1,
                f"val top-1 error without {layer} (10 views)",
                f"no-{layer}",
                sign=+1,
                paper=0.02,
            )
            for layer in ("conv3", "conv4")
        ),
        flags=(
            "no-conv3 also removes the towers' only conv-level exchange (conv4 reading "
            "both towers instead would be the no-conv4 network)",
        ),
    ),
)

# Plain measurements beside the claims: no verdict, not in the study-wide family.
MEASUREMENTS: tuple[Claim, ...] = (
    Claim(
        name="ten-views",
        statement="the 10-view test against the centre crop alone",
        paper="used for every reported result (the paper makes no comparison)",
        section="4.1",
        measures=(
            Measure(
                "val_top1_error_1",
                "val top-1 error, 1 view − 10 views",
                "baseline",
                sign=+1,
                reference_key=TOP1,
            ),
            Measure(
                "val_top5_error_1",
                "val top-5 error, 1 view − 10 views",
                "baseline",
                sign=+1,
                reference_key=TOP5,
                primary=False,
            ),
        ),
    ),
)


def claims_named(names: Sequence[str]) -> tuple[Claim, ...]:
    """The claims `--only` names (all for none); an unknown name is a ValueError."""
    if not names:
        return CLAIMS
    known = {c.name: c for c in CLAIMS}
    unknown = [n for n in names if n not in known]
    if unknown:
        if unknown[0] == "ten-views":
            raise ValueError(
                "'ten-views' is no claim of the paper: every report measures it beside "
                f"the claims; choose from {', '.join(known)}"
            )
        raise ValueError(f"unknown claim {unknown[0]!r}: choose from {', '.join(known)}")
    return tuple(known[n] for n in dict.fromkeys(names))


# --------------------------------------------------------------------------- verdicts


def assess(
    claims: Sequence[Claim],
    runs: Runs,
    flags: Mapping[str, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """Every claim's row from `runs` (network → seed → measurements): each measure's
    per-seed values, paired differences, test and interval; the claim's p-value,
    Holm-adjusted across `claims`, its direction and size verdicts and the effect it
    could have found. `flags`: claim → what the stage found it cannot remove."""
    family = len(claims)
    strict = v.ALPHA / max(family, 1)  # Holm's first step: the power is read at it
    rows = []
    for claim in claims:
        measures = [compare(m, runs, strict) for m in claim.measures]
        primary = [r for r, m in zip(measures, claim.measures, strict=True) if m.primary]
        p, sign = v.union_p([_p(r) for r in primary], [r["sign"] for r in primary])
        sizes = {r["size"] for r in primary if r["size"] is not None}
        size = None  # the paper gives no figure
        if sizes:  # measures that disagree on the size leave it open
            size = sizes.pop() if len(sizes) == 1 else v.SIZE_UNRESOLVED
        rows.append(
            {
                "claim": claim.name,
                "statement": claim.statement,
                "paper": claim.paper,
                "section": claim.section,
                "variants": list(claim.variants),
                "p_value": float(p),
                "expected_sign": primary[0]["expected_sign"],
                "sign": float(sign),
                "test": " + ".join(dict.fromkeys(r["test"] for r in primary)),
                "size": size,
                "flags": [*claim.flags, *(flags or {}).get(claim.name, ())],
                "measures": measures,
            }
        )
    adjusted = v.holm([r["p_value"] for r in rows])
    codes = v.directions(adjusted, [r["sign"] for r in rows], [r["expected_sign"] for r in rows])
    for row, a, code in zip(rows, adjusted, codes, strict=True):
        direction = REPRODUCED if code > 0 else OPPOSITE if code < 0 else UNRESOLVED
        row.update(
            p_holm=float(a),
            alpha=v.ALPHA,
            family=family,
            direction=direction,
            verdict=LEGACY[direction],
        )
    return rows


def measurements(runs: Runs) -> list[dict[str, Any]]:
    """The plain measurements (`MEASUREMENTS`): each measure's values and interval."""
    return [
        {
            "name": c.name,
            "statement": c.statement,
            "paper": c.paper,
            "section": c.section,
            "measures": [compare(m, runs, v.ALPHA) for m in c.measures],
        }
        for c in MEASUREMENTS
    ]


def _p(row: Mapping[str, Any]) -> float:
    p = row["p_value"]
    return math.nan if p is None else float(p)


def compare(m: Measure, runs: Runs, alpha: float) -> dict[str, Any]:
    """One measure over the seeds both networks have: the pairs, their test and 95 %
    interval, the size against the paper's figure from an interval at 1 − `alpha`, and
    the effect a test at `alpha` finds with 80 % power. Seeds without a finite value on
    either side are left out."""
    ref, var = runs.get(m.reference, {}), runs.get(m.variant, {})
    rkey = m.reference_key or m.key
    seeds = sorted(
        s
        for s in set(ref) & set(var)
        if _usable(ref[s].get(rkey), m) and _usable(var[s].get(m.key), m)
    )
    b = np.array([float(ref[s][rkey]) for s in seeds])
    a = np.array([float(var[s][m.key]) for s in seeds])
    cb = np.array([bool(m.censored_by and ref[s].get(m.censored_by)) for s in seeds], bool)
    ca = np.array([bool(m.censored_by and var[s].get(m.censored_by)) for s in seeds], bool)
    d = np.log(a / b) if m.compare == "log-ratio" else a - b
    t = v.paired_t(d)
    censored = bool(cb.any() or ca.any())
    if censored:  # bounds: the sign test on the signs they tell
        signs = v.bounded_signs(a, ca, b, cb)
        p, sign = float(v.sign_test(signs)), float(v.sign_test_sign(signs))
        test = "sign test (censored runs as bounds)"
    else:
        p, sign = float(t.p), float(t.sign)
        flat = t.n >= 2 and float(t.sd) <= v.TOLERANCE
        test = "sign test (no spread)" if flat else "paired t"
    errors = m.key.endswith("error") and m.compare == "difference"  # not the gap
    relative = _relative(a, b, v.LEVEL) if errors else None
    paper = m.paper_size()
    size, interval = None, None
    if paper is not None:
        if censored:
            interval = v.UNBOUNDED
        elif m.compare == "log-ratio":
            interval = v.t_interval(d, 1 - alpha)
        else:
            interval = _relative(a, b, 1 - alpha)
        oriented = v.Interval(
            *(x * m.sign for x in (interval.estimate, interval.low, interval.high))
        )
        if m.sign < 0:
            oriented = v.Interval(oriented.estimate, oriented.high, oriented.low)
        size = v.size_verdict(oriented, paper[0])
    reach = None if censored else v.detectable(float(t.sd), t.n, alpha)
    # this measure alone at 95 % (not study-wide): the claim's `direction` is
    alone = UNRESOLVED
    if p <= v.ALPHA and sign != 0:
        alone = REPRODUCED if sign == m.sign else OPPOSITE
    size_interval = None
    if interval is not None:
        unit = paper[1] if paper else ""
        size_interval = {**_interval(interval), "unit": unit, "level": 1 - alpha}
    return {
        "measure": m.key if m.reference_key is None else f"{m.key} − {m.reference_key}",
        "label": m.label,
        "variant": m.variant,
        "reference": m.reference,
        "unit": m.unit,
        "compare": m.compare,
        "primary": m.primary,
        "expected_sign": m.sign,
        "paper_effect": m.paper if m.compare == "difference" else None,
        "paper_size": None if paper is None else {"value": paper[0], "unit": paper[1]},
        "seeds": seeds,
        "baseline": b.tolist(),
        "ablated": a.tolist(),
        "baseline_censored": [s for s, c in zip(seeds, cb, strict=True) if c],
        "ablated_censored": [s for s, c in zip(seeds, ca, strict=True) if c],
        "differences": d.tolist(),
        "effect": {
            "mean": float(t.mean),
            "sd": float(t.sd),
            "se": float(t.se),
            "half_width_95": float(t.half_width),
            "n": t.n,
        },
        "test": test,
        "p_value": p,
        "sign": sign,
        "verdict": LEGACY[alone],
        "relative": None if relative is None else _interval(relative),
        "size_interval": size_interval,
        "size": size,
        "detectable": _detectable(reach, b, t.n, alpha, m, censored),
    }


def _relative(variant: np.ndarray, reference: np.ndarray, level: float) -> v.Interval:
    """The relative change of the mean (variant / reference − 1) and its interval."""
    r = v.ratio_interval(variant, reference, level)
    return v.Interval(r.estimate - 1, r.low - 1, r.high - 1)


def _usable(value: Any, m: Measure) -> bool:
    x = finite(value)
    return x is not None and (m.compare == "difference" or x > 0)


def _interval(i: v.Interval) -> dict[str, float]:
    return {"estimate": i.estimate, "low": i.low, "high": i.high}


def _detectable(
    reach: float | None, reference: np.ndarray, n: int, alpha: float, m: Measure, censored: bool
) -> dict[str, Any]:
    """The effect a test at `alpha` over `n` seeds finds with 80 % power, in the measure's
    units and, for errors, relative to the reference's mean; under censoring, whether
    the sign test can resolve anything at all."""
    out: dict[str, Any] = {"alpha": alpha, "power": v.POWER, "n": n, "value": reach}
    if censored:
        floor = v.sign_test_floor(n)
        out["sign_test_floor"] = floor
        out["note"] = f"the sign test's smallest p over {n} seeds is {floor:.3g}" + (
            f", above {alpha:.3g}: it cannot resolve" if floor > alpha else ""
        )
    mean = float(reference.mean()) if len(reference) else math.nan
    if reach is not None and m.key.endswith("error") and m.compare == "difference" and mean > 0:
        out["relative"] = reach / mean
    if reach is not None and m.compare == "log-ratio":
        out["ratio"] = math.exp(reach)
    return out


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (not a bool, None, NaN), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
