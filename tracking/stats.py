"""The statistics behind every verdict: spreads over seeds, Welch and paired intervals,
the decision rule, the error budget of repeated looks, p-values for family-wise control
and Kendall's tau. Quantiles and tau come from scipy.stats; testable alone.

The rule (one rule for every comparison)
----------------------------------------
Two sets of per-seed values, A and B, are compared through their difference of means
``d = mean(A) - mean(B)`` and a two-sided ``1 - alpha`` confidence interval ``[lo, hi]``:

- independent runs (two candidates): Welch's interval, ``d ± t * se`` with
  ``se = sqrt(vA/nA + vB/nB)`` and ``t`` the ``1 - alpha/2`` Student quantile at the
  (fractional) Welch-Satterthwaite degrees of freedom;
- paired runs (matched by seed: two scores of the same runs, or two candidates trained
  with the same seeds): ``d`` is the mean per-seed difference,
  ``se = sqrt(v(differences) / n)``, ``t`` at ``n - 1`` degrees of freedom.

``v`` is the sample variance (ddof=1), never below the side's item-level floor
(:attr:`Spread.var_floor`: a proportion over N items is given at least its binomial
variance). A claim "A - B exceeds ``margin``" is **supported** when ``lo > margin``,
**contradicted** when ``hi < margin`` and **undecided** otherwise, or when a side has
fewer than two runs (no spread, no interval), or when the interval has zero width
(runs that agree exactly and no floor is known: no decision from a zero-width
interval). A claim "A - B is below ``margin``" is the same rule on ``B - A`` and
``-margin``.

Repeated looks (:class:`ErrorBudget`)
-------------------------------------
With 2-8 seeds, anytime-valid bounds for bounded scores cannot reject at 5% (DESIGN
§7). Adaptive seeds instead look at each hypothesis at most once per pre-planned round
(``K = max - min + 1`` rounds of seeds) and split the error budget evenly over the
rounds (Bonferroni): each look uses ``alpha / K``. Whatever the dependence between
looks, the chance that any look of a hypothesis wrongly decides it is at most
``alpha``. A hypothesis judged by ``k`` measures (e.g. accuracy and loss) spends
``alpha * min(1, 2/k)`` per measure, whichever way they combine. With ``combine: any``
("accuracy or loss degrades") a wrong "supported" (every measure truly on or below its
margin) needs one measure's interval wholly above its margin: one tail of one of ``k``
measures, each tail at most half of the measure's two-sided level, so at most
``k * alpha_m / 2 = alpha``; a wrong "contradicted" (some measure truly above) needs that
measure's interval wholly below: at most ``alpha_m / 2``. ``combine: all`` is the mirror
image. So two measures at ``alpha`` each still err at most ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.stats import kendalltau as _kendalltau
from scipy.stats import t as _t

__all__ = [
    "Comparison",
    "ErrorBudget",
    "Spread",
    "Verdict",
    "compare_exact",
    "compare_independent",
    "compare_paired",
    "decide",
    "kendall_tau",
    "p_two_sided",
    "proportion_floor",
    "t_critical",
]

CONFIDENCE = 0.95


class Verdict(StrEnum):
    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    UNDECIDED = "undecided"
    # A side failed the competence gate: it does not learn the task at this budget, so
    # the comparison says nothing either way (raise the budget).
    INVALID = "invalid"


# -- one score over seeds --------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """One score over seeds: ``values[i]`` came from the run labelled ``keys[i]`` (its
    seed, or ``"trial N"`` when the trial recorded no seed).

    ``std`` is the sample standard deviation (ddof=1); with fewer than two values it is
    NaN, as is ``sem`` (std / sqrt(n)): one run says nothing about spread.

    ``var_floor`` is the least variance one run's value can honestly be given: a score
    that is a proportion over N evaluation items moves in steps of 1/N, so 2-3 seeds
    often agree exactly ((1.00, 1.00) vs (0.99, 0.99)) although a fresh draw of items
    would not; their zero sample variance is no evidence of zero variance. The intervals
    use ``max(variance, var_floor)`` per side (:func:`proportion_floor` gives it for a
    proportion); 0 when the item count is unknown, and then an interval of zero width
    decides nothing (:func:`decide`).
    """

    values: tuple[float, ...]
    keys: tuple[Any, ...] = ()
    n_missing: int = 0
    var_floor: float = 0.0

    def __post_init__(self) -> None:
        if self.keys and len(self.keys) != len(self.values):
            raise ValueError(f"{len(self.keys)} keys for {len(self.values)} values")

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan

    @property
    def sem(self) -> float:
        return self.std / math.sqrt(self.n) if self.n >= 2 else math.nan

    @property
    def min(self) -> float:
        return float(min(self.values)) if self.values else math.nan

    @property
    def max(self) -> float:
        return float(max(self.values)) if self.values else math.nan

    def by_key(self) -> dict[Any, float]:
        keys = self.keys or tuple(range(self.n))
        return dict(zip(keys, self.values, strict=True))

    @property
    def var(self) -> float:
        """The variance one run is given in an interval: the sample variance, at least
        ``var_floor``."""
        return max(self.std**2, self.var_floor) if self.n >= 2 else math.nan

    def only(self, keys: Sequence[Any]) -> Spread:
        """The runs whose key is in ``keys``, in this spread's order."""
        wanted = set(keys)
        pairs = [(k, v) for k, v in self.by_key().items() if k in wanted]
        return Spread(
            tuple(v for _, v in pairs), tuple(k for k, _ in pairs), var_floor=self.var_floor
        )

    def scaled(self, factor: float) -> Spread:
        """Every value times ``factor`` (a relative margin tested exactly)."""
        return Spread(
            tuple(v * factor for v in self.values), self.keys, self.n_missing,
            self.var_floor * factor**2,
        )  # fmt: skip

    def with_floor(self, var_floor: float) -> Spread:
        return Spread(self.values, self.keys, self.n_missing, var_floor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": _finite(self.mean),
            "std": _finite(self.std),
            "min": _finite(self.min),
            "max": _finite(self.max),
            "n": self.n,
            "n_missing": self.n_missing,
            "values": list(self.values),
            "keys": [str(k) for k in self.keys],
        }

    def format(self, spec: str = ".3g", *, range_: bool = False) -> str:
        """``0.91 ± 0.04`` (mean ± std), ``0.91 (n=1)`` for one run, ``-`` for none;
        ``range_`` appends ``[min, max]``."""
        if not self.values:
            return "-"
        if self.n == 1:
            return f"{self.mean:{spec}} (n=1)"
        text = f"{self.mean:{spec}} ± {self.std:{spec}}"
        if range_:
            text += f" [{self.min:{spec}}, {self.max:{spec}}]"
        return text


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- Student's t ------------------------------------------------------------------------


def t_critical(df: float, alpha: float = 1.0 - CONFIDENCE) -> float:
    """The two-sided critical value ``t_{1 - alpha/2}`` at ``df`` degrees of freedom
    (fractional, as Welch-Satterthwaite gives them; scipy.stats.t)."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return float(_t.ppf(1.0 - alpha / 2.0, df))


def p_two_sided(comparison: Comparison, margin: float = 0.0) -> float:
    """The two-sided p-value of ``diff == margin``: the smallest ``alpha`` at which the
    ``1 - alpha`` interval of ``comparison`` excludes ``margin``. 1 for an interval of
    zero width (it decides nothing) and 0 for an exact, layout-only comparison that
    differs from ``margin``."""
    if comparison.kind == "exact":
        return 0.0 if comparison.diff != margin else 1.0
    if not comparison.se > 0 or comparison.df is None:
        return 1.0
    t = abs(comparison.diff - margin) / comparison.se
    return float(min(1.0, 2.0 * _t.sf(t, comparison.df)))


def proportion_floor(mean: float, items: int) -> float:
    """The variance floor of one run's score when the score is a proportion over
    ``items`` evaluation items: ``p (1 - p) / items`` with the Agresti-Coull estimate
    ``p = (x + 2) / (items + 4)`` (``x = mean * items``), which stays above zero at 0
    and 1. See :class:`Spread` for why it is a floor."""
    if items < 1 or not math.isfinite(mean):
        return 0.0
    p = (mean * items + 2.0) / (items + 4.0)
    return p * (1.0 - p) / items


# -- intervals -----------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """``diff = mean(A) - mean(B)`` with its ``1 - alpha`` interval ``[low, high]``;
    ``kind`` is ``welch``, ``paired`` or ``exact`` (layout-only scores: no interval)."""

    diff: float
    se: float
    df: float | None
    low: float
    high: float
    n_a: int
    n_b: int
    paired: bool
    alpha: float = 1.0 - CONFIDENCE
    kind: str = "welch"

    def flipped(self) -> Comparison:
        """The same comparison read as B - A."""
        return Comparison(
            -self.diff, self.se, self.df, -self.high, -self.low, self.n_b, self.n_a,
            self.paired, self.alpha, self.kind,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def compare_independent(a: Spread, b: Spread, alpha: float = 1.0 - CONFIDENCE) -> Comparison | None:
    """Welch's ``1 - alpha`` interval for mean(a) - mean(b); None if a side has < 2 runs."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.var / a.n, b.var / b.n
    se = math.sqrt(va + vb)
    diff = a.mean - b.mean
    if se == 0:
        return Comparison(diff, 0.0, None, diff, diff, a.n, b.n, False, alpha, "welch")
    terms = (va**2 / (a.n - 1) if va else 0.0) + (vb**2 / (b.n - 1) if vb else 0.0)
    df = (va + vb) ** 2 / terms  # Welch-Satterthwaite, fractional
    t = t_critical(df, alpha)
    return Comparison(diff, se, df, diff - t * se, diff + t * se, a.n, b.n, False, alpha, "welch")


def compare_paired(a: Spread, b: Spread, alpha: float = 1.0 - CONFIDENCE) -> Comparison | None:
    """The ``1 - alpha`` interval of the mean per-run difference a - b over runs present
    in both (matched by key, i.e. seed); None if fewer than 2 runs match."""
    bk = b.by_key()
    pairs = [(x, bk[k]) for k, x in a.by_key().items() if k in bk]
    n = len(pairs)
    if n < 2:
        return None
    d = np.array([x - y for x, y in pairs])
    diff = float(d.mean())
    var = max(float(d.var(ddof=1)), a.var_floor + b.var_floor)
    se = math.sqrt(var / n)
    if se == 0:
        return Comparison(diff, 0.0, None, diff, diff, n, n, True, alpha, "paired")
    t = t_critical(n - 1, alpha)
    return Comparison(diff, se, n - 1, diff - t * se, diff + t * se, n, n, True, alpha, "paired")


def compare_exact(a: Spread, b: Spread) -> Comparison | None:
    """Scores computed from the layer layout (KV cache, parameters) have no seed noise:
    the difference of the means, with a zero-width interval; None if a side is empty."""
    if a.n == 0 or b.n == 0:
        return None
    diff = a.mean - b.mean
    return Comparison(diff, 0.0, None, diff, diff, a.n, b.n, False, 0.0, "exact")


def decide(comparison: Comparison | None, margin: float = 0.0) -> Verdict:
    """Supported if the whole interval lies above ``margin``, contradicted if below,
    undecided if it straddles or touches it, if there is no interval, or if the
    interval has zero width (seed scores that agree exactly, with no item-level floor:
    no evidence of zero variance). An exact comparison (no noise) is supported when
    ``diff >= margin``."""
    if comparison is None:
        return Verdict.UNDECIDED
    if comparison.kind == "exact":
        return Verdict.SUPPORTED if comparison.diff >= margin else Verdict.CONTRADICTED
    if not comparison.se > 0:
        return Verdict.UNDECIDED
    if comparison.low > margin:
        return Verdict.SUPPORTED
    if comparison.high < margin:
        return Verdict.CONTRADICTED
    return Verdict.UNDECIDED


# -- the error budget --------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorBudget:
    """``confidence`` split evenly (Bonferroni) over ``looks`` pre-planned looks and the
    ``measures`` of one hypothesis; see the module docstring for why this is honest."""

    confidence: float = CONFIDENCE
    looks: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.looks < 1:
            raise ValueError(f"looks must be >= 1, got {self.looks}")

    @property
    def alpha(self) -> float:
        """The whole budget: the chance of a wrong verdict over all looks."""
        return 1.0 - self.confidence

    def per_test(self, measures: int = 1) -> float:
        """The two-sided level of one measure's interval at one look."""
        return self.alpha * min(1.0, 2.0 / max(measures, 1)) / self.looks

    def describe(self, measures: int = 1) -> str:
        level = 1.0 - self.per_test(measures)
        text = f"{level:.4g} intervals"
        if self.looks > 1:
            text += f" ({self.alpha:g} split over {self.looks} looks"
            text += f" and {measures} measures)" if measures > 2 else ")"
        elif measures > 2:
            text += f" ({self.alpha:g} split over {measures} measures)"
        return text


# -- rank agreement --------------------------------------------------------------------


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two rankings (scipy.stats.kendalltau); NaN when either
    side is all ties or has fewer than two items."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} vs {len(y)} items")
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(_kendalltau(x, y).statistic)
