"""The statistics behind every verdict: spreads over seeds, Welch and paired intervals,
Student-t quantiles, the decision rule, the error budget of repeated looks, and
Kendall's tau. Pure (math and numpy), testable alone.

The rule (one rule for every comparison)
----------------------------------------
Two sets of per-seed values, A and B, are compared through their difference of means
``d = mean(A) - mean(B)`` and a two-sided ``1 - alpha`` confidence interval ``[lo, hi]``:

- independent runs (two candidates): Welch's interval, ``d ± t * se`` with
  ``se = sqrt(sA^2/nA + sB^2/nB)`` (sample std, ddof=1) and ``t`` the ``1 - alpha/2``
  Student quantile at the Welch-Satterthwaite degrees of freedom, rounded down
  (conservative: fewer degrees of freedom, a wider interval);
- paired runs (matched by seed: two scores of the same runs, or two candidates trained
  with the same seeds): ``d`` is the mean per-seed difference,
  ``se = std(differences) / sqrt(n)``, ``t`` at ``n - 1`` degrees of freedom.

A claim "A - B exceeds ``margin``" is **supported** when ``lo > margin``,
**contradicted** when ``hi < margin`` and **undecided** otherwise, or when a side has
fewer than two runs (no spread, no interval). Zero spread on both sides gives a
zero-width interval: the verdict follows the sign of ``d - margin`` and a tie is
undecided. A claim "A - B is below ``margin``" is the same rule on ``B - A`` and
``-margin``.

Repeated looks (:class:`ErrorBudget`)
-------------------------------------
With 2-8 seeds, anytime-valid bounds for bounded scores cannot reject at 5% (DESIGN
§7). Adaptive seeds instead look at each hypothesis at most once per pre-planned round
(``K = max - min + 1`` rounds of seeds) and split the error budget evenly over the
rounds (Bonferroni): each look uses ``alpha / K``. Whatever the dependence between
looks, the chance that any look of a hypothesis wrongly decides it is at most
``alpha``. A hypothesis judged by ``k`` measures (e.g. accuracy and loss) whose verdict
needs one measure to show it and none to show the opposite spends ``alpha * min(1, 2/k)``
per measure: a wrong verdict needs a wrong tail of one measure, and each tail holds half
of a two-sided level, so two measures at ``alpha`` each still err at most ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

import numpy as np

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
    "t_cdf",
    "t_critical",
    "t_quantile",
]

CONFIDENCE = 0.95


class Verdict(StrEnum):
    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    UNDECIDED = "undecided"


# -- one score over seeds --------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """One score over seeds: ``values[i]`` came from the run labelled ``keys[i]`` (its
    seed, or ``"trial N"`` when the trial recorded no seed).

    ``std`` is the sample standard deviation (ddof=1); with fewer than two values it is
    NaN, as is ``sem`` (std / sqrt(n)): one run says nothing about spread.
    """

    values: tuple[float, ...]
    keys: tuple[Any, ...] = ()
    n_missing: int = 0

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

    def only(self, keys: Sequence[Any]) -> Spread:
        """The runs whose key is in ``keys``, in this spread's order."""
        wanted = set(keys)
        pairs = [(k, v) for k, v in self.by_key().items() if k in wanted]
        return Spread(tuple(v for _, v in pairs), tuple(k for k, _ in pairs))

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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on
    :func:`t_cdf`, to 1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def t_critical(df: float, alpha: float = 1.0 - CONFIDENCE) -> float:
    """The two-sided critical value ``t_{1 - alpha/2}`` at ``df`` degrees of freedom
    rounded down (conservative). ``t_critical(df)`` is the 95% value."""
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return t_quantile(1.0 - alpha / 2.0, float(math.floor(df)))


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
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    diff = a.mean - b.mean
    if se == 0:
        return Comparison(diff, 0.0, None, diff, diff, a.n, b.n, False, alpha, "welch")
    terms = (va**2 / (a.n - 1) if va else 0.0) + (vb**2 / (b.n - 1) if vb else 0.0)
    df = (va + vb) ** 2 / terms
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
    se = float(d.std(ddof=1)) / math.sqrt(n)
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
    undecided if it straddles or touches it, or if there is no interval. An exact
    comparison (no noise) is supported when ``diff >= margin``."""
    if comparison is None:
        return Verdict.UNDECIDED
    if comparison.kind == "exact":
        return Verdict.SUPPORTED if comparison.diff >= margin else Verdict.CONTRADICTED
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
    """Kendall's tau-b between two rankings (ties counted as neither concordant nor
    discordant, normalised by the untied pairs of each side); NaN when either side is
    all ties or has fewer than two items."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} vs {len(y)} items")
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = np.sign(x[i] - x[j])
            dy = np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom > 0 else math.nan
