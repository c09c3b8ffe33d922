"""The paper's claims as `alexcli ablate` tests them: what each says, which variant
switches its choice off, what is measured, and a verdict that respects the noise.

Every measure is paired by seed: for seed k, d_k = value(variant, k) − value(baseline, k)
(the same seed gives both runs the same data order). The verdict reads the mean of the
d_k against its standard error se = sd/√n with the two-sided 95 % Student t quantile
of n − 1 degrees of freedom (4.30 at 3 seeds, 2.26 at 10, → 1.96):

- **reproduced**: the mean has the sign the paper's claim predicts and lies beyond
  t·se from zero;
- **opposite**: the other sign, beyond t·se;
- **not resolved at this scale**: within t·se, fewer than 2 seeds, or 2 seeds with
  equal differences (no spread to judge by).

No torch here: the stage (`stages/ablate.py`) measures, this module judges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["reproduced", "opposite", "not resolved at this scale"]
REPRODUCED: Verdict = "reproduced"
OPPOSITE: Verdict = "opposite"
UNRESOLVED: Verdict = "not resolved at this scale"


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Measure:
    """One number compared between a variant and the baseline.

    `key` names the run's measurement (`RunMeasures` in stages/ablate.py); `sign` is
    the sign of (variant − baseline) the paper predicts; `paper` its size where the
    paper gives one, in the measure's units (errors as fractions)."""

    key: str
    label: str
    variant: str
    sign: int  # +1: the variant's value is higher; −1: lower
    unit: Literal["error", "epochs", "seconds"] = "error"
    paper: float | None = None
    primary: bool = True  # the claim's verdict reads its primary measures
    baseline_key: str | None = None  # compare with another key of the baseline (views)
    # A run's flag that its value is only a bound (never reached the threshold): a seed
    # whose baseline is censored pairs nothing; a censored variant is kept (its
    # difference is then at least what is shown).
    censored_by: str | None = None


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    paper: str  # the paper's figure, in words
    section: str
    measures: tuple[Measure, ...]

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.variant for m in self.measures))


def _errors(variant: str, top1: float | None, top5: float | None) -> tuple[Measure, ...]:
    return (
        Measure("val_top1_error", "val top-1 error (10 views)", variant, +1, paper=top1),
        Measure("val_top5_error", "val top-5 error (10 views)", variant, +1, paper=top5,
                primary=False),
    )  # fmt: skip


def _secondary_top1(variant: str) -> Measure:
    return Measure("val_top1_error", "val top-1 error (10 views)", variant, +1, primary=False)


GAP = "train-val gap (top-1, 1 view)"
CENSORED = "threshold_censored"

CLAIMS: tuple[Claim, ...] = (
    Claim("relu", "ReLUs train several times faster than tanh units",
          "a 4-layer CNN reaches 25 % training error on CIFAR-10 six times faster (Figure 1)",
          "3.1", (Measure("epochs_to_threshold", "epochs to the training-error threshold",
                          "tanh", +1, "epochs", censored_by=CENSORED),
                  Measure("seconds_to_threshold", "seconds to the training-error threshold",
                          "tanh", +1, "seconds", primary=False, censored_by=CENSORED))),
    Claim("lrn", "local response normalisation lowers the error",
          "−1.4 % top-1, −1.2 % top-5", "3.3", _errors("no-lrn", 0.014, 0.012)),
    Claim("overlapping-pooling", "overlapping pooling lowers the error and overfits less",
          "−0.4 % top-1, −0.3 % top-5; \"slightly more difficult to overfit\"", "3.4",
          (*_errors("pool-2x2", 0.004, 0.003),
           Measure("gap", GAP, "pool-2x2", +1, primary=False))),
    Claim("two-towers", "two towers beat one tower with half the kernels",
          "−1.7 % top-1, −1.2 % top-5 against the one-GPU net of the footnote; the "
          "two-GPU net trains slightly faster", "3.2",
          (*_errors("one-tower", 0.017, 0.012),
           Measure("seconds", "training seconds", "one-tower", +1, "seconds",
                   primary=False))),
    Claim("pca-lighting", "PCA colour augmentation lowers the error",
          "top-1 error reduced by over 1 %", "4.1", _errors("no-pca", 0.01, None)),
    Claim("crops-reflections", "random crops and reflections prevent overfitting",
          "\"substantial overfitting\" without them", "4.1",
          (Measure("gap", GAP, "no-crop-flip", +1), _secondary_top1("no-crop-flip"))),
    Claim("dropout", "dropout prevents overfitting, at about twice the iterations",
          "\"substantial overfitting\" without it; about 2× the iterations to converge",
          "4.2", (Measure("gap", GAP, "no-dropout", +1),
                  Measure("epochs_to_best", "epochs to the best val error", "no-dropout",
                          -1, "epochs", primary=False))),
    Claim("weight-decay", "weight decay lowers the training error, not only the val error",
          "\"important for the model to learn\": it reduces the training error", "5",
          (Measure("train_top1_error", "training-set top-1 error (1 view)",
                   "no-weight-decay", +1),
           _secondary_top1("no-weight-decay"))),
    Claim("depth", "depth matters: every middle conv layer counts",
          "removing any middle conv layer costs about 2 % top-1", "7",
          tuple(Measure("val_top1_error", f"val top-1 error without {c} (10 views)",
                        f"no-{c}", +1, paper=0.02) for c in ("conv3", "conv4", "conv5"))),
    Claim("ten-views", "the 10-view test lowers the error",
          "used for every reported result", "4.1",
          (Measure("val_top1_error_1", "val top-1 error, 1 view vs 10", "baseline", +1,
                   baseline_key="val_top1_error"),
           Measure("val_top5_error_1", "val top-5 error, 1 view vs 10", "baseline", +1,
                   baseline_key="val_top5_error", primary=False))),
)  # fmt: skip


def claims_named(names: Sequence[str]) -> tuple[Claim, ...]:
    """The claims `--only` names (all for none); an unknown name is a ValueError."""
    if not names:
        return CLAIMS
    known = {c.name: c for c in CLAIMS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown claim {unknown[0]!r}: choose from {', '.join(known)}")
    return tuple(known[n] for n in dict.fromkeys(names))


# --------------------------------------------------------------------------- verdicts


def t_quantile(df: int) -> float:
    """The two-sided 95 % Student t quantile for `df` degrees of freedom."""
    from scipy.stats import t  # scipy: already needed for the devkit's .mat files

    return float(t.ppf(0.975, df))


@dataclass(frozen=True)
class Paired:
    """The paired differences of one measure over seeds, and what they say."""

    differences: tuple[float, ...]
    mean: float
    sd: float  # sample standard deviation (n − 1); NaN below 2 seeds
    se: float
    half_width: float  # t·se: the 95 % interval's half width
    verdict: Verdict

    @property
    def n(self) -> int:
        return len(self.differences)


def judge(differences: Sequence[float], sign: int) -> Paired:
    """Mean, spread and verdict of paired differences whose expected sign is `sign`."""
    d = tuple(float(x) for x in differences)
    n = len(d)
    if n == 0:
        return Paired(d, math.nan, math.nan, math.nan, math.nan, UNRESOLVED)
    mean = sum(d) / n
    if n < 2:
        return Paired(d, mean, math.nan, math.nan, math.nan, UNRESOLVED)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = t_quantile(n - 1) * se
    verdict = UNRESOLVED
    # No spread at all (errors on a small set are quantised, so equal differences
    # happen): a t interval says nothing, and 2 equal values are weak evidence; 3 or more
    # equal non-zero differences stand.
    if sd == 0 and n < 3:
        return Paired(d, mean, sd, se, half, UNRESOLVED)
    if mean != 0 and abs(mean) > half:
        verdict = REPRODUCED if (mean > 0) == (sign > 0) else OPPOSITE
    return Paired(d, mean, sd, se, half, verdict)


def claim_verdict(verdicts: Sequence[Verdict]) -> Verdict:
    """A claim's verdict from its primary measures': reproduced when all are, opposite
    when any is, otherwise not resolved."""
    if verdicts and all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if any(v == OPPOSITE for v in verdicts):
        return OPPOSITE
    return UNRESOLVED


def assess(
    claims: Sequence[Claim], runs: Mapping[str, Mapping[int, Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Every claim's rows from `runs` (variant → seed → measurements): each measure's
    per-seed values, paired differences, mean, spread and verdict; seeds that lack
    the baseline, the variant or the value are left out of the pairing."""
    rows = []
    for claim in claims:
        measures, primary = [], []
        for m in claim.measures:
            base, var = runs.get("baseline", {}), runs.get(m.variant, {})
            seeds = sorted(
                s for s in set(base) & set(var)
                if finite(base[s].get(m.baseline_key or m.key)) is not None
                and finite(var[s].get(m.key)) is not None
                and not (m.censored_by and base[s].get(m.censored_by))
            )  # fmt: skip
            censored = sorted(
                s for s in set(base) & set(var) if m.censored_by and base[s].get(m.censored_by)
            )
            b = [float(base[s][m.baseline_key or m.key]) for s in seeds]
            v = [float(var[s][m.key]) for s in seeds]
            paired = judge([x - y for x, y in zip(v, b, strict=True)], m.sign)
            if m.primary:
                primary.append(paired.verdict)
            measures.append({
                "measure": m.key if m.baseline_key is None else f"{m.key} − {m.baseline_key}",
                "label": m.label, "variant": m.variant, "unit": m.unit,
                "primary": m.primary, "expected_sign": m.sign, "paper_effect": m.paper,
                "seeds": seeds, "baseline": b, "ablated": v,
                "baseline_censored": censored,  # seeds left out: a bound is no pair
                "effect": {"mean": paired.mean, "sd": paired.sd, "se": paired.se,
                           "half_width_95": paired.half_width, "n": paired.n},
                "verdict": paired.verdict,
            })  # fmt: skip
        rows.append({
            "claim": claim.name, "statement": claim.statement, "paper": claim.paper,
            "section": claim.section, "variants": list(claim.variants),
            "verdict": claim_verdict(primary), "measures": measures,
        })  # fmt: skip
    return rows


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (not a bool, None, NaN), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
