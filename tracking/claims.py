"""The paper's qualitative claims (DESIGN §1) as automatic checks on a study.

Each check returns a :class:`Finding`: the claim in words, a verdict (supported /
contradicted / undecided), the numbers and spread it used, and why. No check forces a
verdict: missing variants, missing scores, fewer than two seeds, or a difference
within the noise all give ``undecided``.

The rule (one rule for every check)
-----------------------------------
A check compares two sets of per-seed values, A and B, through their difference of
means ``d = mean(A) - mean(B)`` and a 95% confidence interval ``[lo, hi]`` for it:

- independent runs (two candidates): Welch's interval, ``d ± t * se`` with
  ``se = sqrt(sA^2/nA + sB^2/nB)`` (sample std, ddof=1) and ``t`` the 97.5% Student
  quantile at the Welch-Satterthwaite degrees of freedom, rounded down;
- paired runs (two scores of the same runs, matched by seed: acc@1x vs acc@4x of one
  candidate, or two layer kinds of one model): ``d`` is the mean per-seed difference,
  ``se = std(differences) / sqrt(n)``, ``t`` at ``n - 1`` degrees of freedom.

A claim "A exceeds B by more than ``margin``" is **supported** when ``lo > margin``,
**contradicted** when ``hi < margin``, and **undecided** otherwise (the interval
straddles the margin), or when either side has fewer than two runs (no spread, no
interval), or when a variant or score is missing. Zero spread on both sides gives a
zero-width interval: the verdict then follows the sign of ``d - margin``, and a tie is
undecided (the task did not separate the variants). Scores computed from the layout
alone (KV cache, parameters) have no seed noise: one run each suffices, and the claim
about them is a plain comparison of the numbers.

The margins (``SHORT_BPB_TOLERANCE`` etc.) are module constants, stated in each
finding's text, so a reader sees exactly what "competitive" or "fails" meant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from space.names import KV_CACHE_BYTES, LONG_ACC, SHORT_BPB, extrap_bpb
from tracking.aggregate import CandidateSummary, Spread, StudyAggregate

__all__ = [
    "CLAIMS",
    "Claim",
    "Comparison",
    "Finding",
    "Verdict",
    "check_claims",
    "compare_independent",
    "compare_paired",
    "decide",
    "t_critical",
]

# -- the margins -----------------------------------------------------------------------

CONFIDENCE = 0.95
# "competitive on short context": the hybrid's short_bpb at most this fraction above RoPE's.
SHORT_BPB_TOLERANCE = 0.02
# "far less KV cache": at most this fraction of RoPE's KV-cache bytes.
KV_FAR_LESS_RATIO = 0.5
# "fails / degrades past T" in accuracy: acc@1x minus the mean accuracy at >= FAR_MULTIPLE x T
# exceeds this many accuracy points (absolute) ...
DEGRADE_ACC_DROP = 0.2
# ... and is only judged when the variant retrieves at T at all (acc@1x mean at least this).
LEARNED_ACC = 0.5
# "degrades past T" in loss: extrap_bpb@FAR_MULTIPLE x exceeds short_bpb by this fraction.
DEGRADE_BPB_RISE = 0.05
FAR_MULTIPLE = 4
# The attention-mass claims are judged at this length multiple (the training length).
MASS_LENGTH = "1x"

# The paper's four variants, by preset name; without the preset, a unique candidate whose
# knobs match the role's definition (DESIGN §4) stands in.
ROLE_PRESETS = {"rope": "rope", "qknorm": "qknorm", "nope": "nope", "hybrid": "rnope_swa"}


def _is_rope(k: Mapping[str, Any]) -> bool:
    return (
        k.get("global_every") == 1
        and k.get("global_position") == "rope"
        and k.get("qk_norm") == "none"
        and k.get("global_window") is None
    )


def _is_qknorm(k: Mapping[str, Any]) -> bool:
    return (
        k.get("global_every") == 1
        and k.get("global_position") == "rope"
        and k.get("qk_norm") != "none"
        and k.get("qk_norm_layers") in ("all", "global")
        and k.get("global_window") is None
    )


def _is_nope(k: Mapping[str, Any]) -> bool:
    return (
        k.get("global_every") == 1
        and k.get("global_position") == "nope"
        and k.get("qk_norm") == "none"
        and k.get("global_window") is None
    )


def _is_hybrid(k: Mapping[str, Any]) -> bool:
    every = k.get("global_every")
    return (
        isinstance(every, int)
        and every > 1
        and k.get("global_position") == "nope"
        and k.get("local_window") is not None
        and k.get("qk_norm") == "none"
    )


ROLE_MATCHERS: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "rope": _is_rope,
    "qknorm": _is_qknorm,
    "nope": _is_nope,
    "hybrid": _is_hybrid,
}


# -- verdicts and comparisons ----------------------------------------------------------


class Verdict(StrEnum):
    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    UNDECIDED = "undecided"


# 97.5% quantiles of Student's t (two-sided 95%), by degrees of freedom.
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip


def t_critical(df: float) -> float:
    """The 97.5% Student-t quantile at ``df`` degrees of freedom, ``df`` rounded down
    (conservative: fewer degrees of freedom, wider interval); 1.96 past 120."""
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    d = int(math.floor(df))
    if d in _T975:
        return _T975[d]
    below = [k for k in _T975 if k <= d]
    return _T975[max(below)] if d <= 120 else 1.960


@dataclass(frozen=True)
class Comparison:
    """``diff = mean(A) - mean(B)`` with its 95% interval ``[low, high]``."""

    diff: float
    se: float
    df: float | None
    low: float
    high: float
    n_a: int
    n_b: int
    paired: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in self.__dict__.items()}


def compare_independent(a: Spread, b: Spread) -> Comparison | None:
    """Welch's 95% interval for mean(a) - mean(b); None if either has fewer than 2 runs."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    diff = a.mean - b.mean
    if se == 0:
        return Comparison(diff, 0.0, None, diff, diff, a.n, b.n, paired=False)
    terms = (va**2 / (a.n - 1) if va else 0.0) + (vb**2 / (b.n - 1) if vb else 0.0)
    df = (va + vb) ** 2 / terms
    t = t_critical(df)
    return Comparison(diff, se, df, diff - t * se, diff + t * se, a.n, b.n, paired=False)


def compare_paired(a: Spread, b: Spread) -> Comparison | None:
    """The 95% interval of the mean per-run difference a - b over runs present in both
    (matched by key, i.e. seed); None if fewer than 2 runs match."""
    bk = b.by_key()
    pairs = [(x, bk[k]) for k, x in a.by_key().items() if k in bk]
    n = len(pairs)
    if n < 2:
        return None
    d = np.array([x - y for x, y in pairs])
    diff = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return Comparison(diff, 0.0, None, diff, diff, n, n, paired=True)
    t = t_critical(n - 1)
    return Comparison(diff, se, n - 1, diff - t * se, diff + t * se, n, n, paired=True)


def decide(comparison: Comparison | None, margin: float = 0.0) -> Verdict:
    """Supported if the whole interval lies above ``margin``, contradicted if below,
    undecided if it straddles or touches it, or if there is no interval."""
    if comparison is None:
        return Verdict.UNDECIDED
    if comparison.low > margin:
        return Verdict.SUPPORTED
    if comparison.high < margin:
        return Verdict.CONTRADICTED
    return Verdict.UNDECIDED


# -- findings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    key: str
    claim: str  # the paper's statement, in words
    verdict: Verdict
    detail: str  # the numbers, their spread, the rule applied
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "claim": self.claim,
            "verdict": self.verdict.value,
            "detail": self.detail,
            "evidence": _clean(self.evidence),
        }


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    check: Callable[[StudyAggregate, dict[str, CandidateSummary | str]], Finding]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Spread):
        return value.to_dict()
    if isinstance(value, Comparison):
        return value.to_dict()
    if isinstance(value, Verdict):
        return value.value
    return value


def resolve_roles(
    agg: StudyAggregate, presets: Mapping[str, str] | None = None
) -> dict[str, CandidateSummary | str]:
    """Role -> candidate, or role -> the reason no candidate could stand in for it."""
    presets = {**ROLE_PRESETS, **(presets or {})}
    out: dict[str, CandidateSummary | str] = {}
    for role, preset in presets.items():
        found = agg.get(preset)
        if found is not None:
            out[role] = found
            continue
        if any(c.name == preset or preset in c.aliases for c in agg.without_complete):
            out[role] = f"variant {preset!r} ran but has no completed run"
            continue  # no stand-in for a variant that was tried and failed
        matcher = ROLE_MATCHERS.get(role)
        matches = [c for c in agg.candidates if matcher and matcher(c.resolved_knobs())]
        if len(matches) == 1:
            out[role] = matches[0]
        elif matches:
            names = ", ".join(c.name for c in matches)
            out[role] = f"no preset {preset!r} and several candidates fit the role ({names})"
        else:
            out[role] = f"variant {preset!r} has no completed run in this study"
    return out


def _fmt(x: float, spec: str = ".3g") -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:{spec}}"


def _describe(name: str, label: str, s: Spread | None) -> str:
    head = f"{name} {label}".strip()
    if s is None or s.n == 0:
        return f"{head}: no value"
    if s.n == 1:
        return f"{head} {s.format()}"  # "0.5 (n=1)"
    return f"{head} {s.format(range_=True)} (n={s.n})"


def _interval(c: Comparison | None, what: str, margin: float | None = None) -> str:
    if c is None:
        return f"{what}: fewer than 2 runs on a side, no interval (undecided)"
    kind = "paired by seed" if c.paired else "Welch"
    text = f"{what} {_fmt(c.diff, '+.3g')}, 95% CI [{_fmt(c.low)}, {_fmt(c.high)}] ({kind})"
    if margin is not None and margin != 0:
        text += f" vs margin {_fmt(margin)}"
    return text


def _undecided(key: str, text: str, why: str, **evidence: Any) -> Finding:
    return Finding(key, text, Verdict.UNDECIDED, why, evidence)


def _need(
    roles: Mapping[str, CandidateSummary | str], *names: str
) -> tuple[list[CandidateSummary], str | None]:
    found, missing = [], []
    for n in names:
        r = roles.get(n)
        if isinstance(r, CandidateSummary):
            found.append(r)
        else:
            missing.append(r or f"role {n!r} unknown")
    return found, ("; ".join(missing) if missing else None)


# -- the checks ------------------------------------------------------------------------


def _greater(
    key: str,
    text: str,
    a: CandidateSummary,
    b: CandidateSummary,
    score: str,
    what: str,
) -> Finding:
    """Claim: a's ``score`` exceeds b's (independent runs, margin 0)."""
    sa, sb = a.spread(score), b.spread(score)
    if sa is None or sb is None or sa.n == 0 or sb.n == 0:
        return _undecided(key, text, f"{score} missing for {a.name if sa is None else b.name}")
    c = compare_independent(sa, sb)
    verdict = decide(c)
    detail = (
        f"{_describe(a.name, score, sa)} vs {_describe(b.name, score, sb)}; "
        f"{_interval(c, what)}; rule: supported if the interval is above 0, "
        f"contradicted if below."
    )
    if c is not None and c.se == 0 and c.diff == 0:
        detail += " Both identical with no spread: the task does not separate them."
    return Finding(key, text, verdict, detail, {"a": sa, "b": sb, "comparison": c})


def check_hybrid_long_retrieval(agg: StudyAggregate, roles) -> Finding:
    key, text = "hybrid_beats_rope_long", CLAIMS_TEXT["hybrid_beats_rope_long"]
    (found, missing) = _need(roles, "hybrid", "rope")
    if missing:
        return _undecided(key, text, missing)
    hybrid, rope = found
    return _greater(key, text, hybrid, rope, LONG_ACC, f"{hybrid.name} - {rope.name} long_acc")


def check_hybrid_short_competitive(agg: StudyAggregate, roles) -> Finding:
    key, text = "hybrid_short_competitive", CLAIMS_TEXT["hybrid_short_competitive"]
    (found, missing) = _need(roles, "hybrid", "rope")
    if missing:
        return _undecided(key, text, missing)
    hybrid, rope = found
    sh, sr = hybrid.spread(SHORT_BPB), rope.spread(SHORT_BPB)
    if sh is None or sr is None or sh.n == 0 or sr.n == 0:
        return _undecided(key, text, "short_bpb missing")
    tol = SHORT_BPB_TOLERANCE * sr.mean
    # Non-inferiority: rope - hybrid > -tol  <=>  hybrid < rope + tol.
    c = compare_independent(sr, sh)
    verdict = decide(c, -tol)
    detail = (
        f"{_describe(hybrid.name, 'short_bpb', sh)} vs {_describe(rope.name, 'short_bpb', sr)} "
        f"(lower is better); {_interval(c, f'{rope.name} - {hybrid.name}', -tol)}; "
        f"rule: supported if the hybrid is worse by less than {SHORT_BPB_TOLERANCE:.0%} of "
        f"RoPE's short_bpb ({_fmt(tol)} bits/byte) with 95% confidence, contradicted if "
        "it is worse by more."
    )
    return Finding(key, text, verdict, detail, {"hybrid": sh, "rope": sr, "comparison": c})


def check_hybrid_kv(agg: StudyAggregate, roles) -> Finding:
    key, text = "hybrid_less_kv", CLAIMS_TEXT["hybrid_less_kv"]
    (found, missing) = _need(roles, "hybrid", "rope")
    if missing:
        return _undecided(key, text, missing)
    hybrid, rope = found
    sh, sr = hybrid.spread(KV_CACHE_BYTES), rope.spread(KV_CACHE_BYTES)
    if sh is None or sr is None or sh.n == 0 or sr.n == 0 or not sr.mean > 0:
        return _undecided(key, text, "kv_cache_bytes missing")
    ratio = sh.mean / sr.mean
    verdict = Verdict.SUPPORTED if ratio <= KV_FAR_LESS_RATIO else Verdict.CONTRADICTED
    detail = (
        f"{hybrid.name} {_bytes(sh.mean)} vs {rope.name} {_bytes(sr.mean)} of KV cache: "
        f"ratio {ratio:.3f}; rule (computed from the layer layout, no seed noise): "
        f"supported if the ratio is at most {KV_FAR_LESS_RATIO}."
    )
    return Finding(key, text, verdict, detail, {"hybrid": sh, "rope": sr, "ratio": ratio})


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _degradation(c: CandidateSummary) -> tuple[Verdict, str, dict[str, Any]]:
    """Does ``c`` lose accuracy and/or loss past T? Two paired tests, then combined:
    supported if at least one supports and none contradicts, contradicted if at least
    one contradicts and none supports, undecided otherwise (including disagreement)."""
    parts: list[str] = []
    evidence: dict[str, Any] = {}
    verdicts: list[Verdict] = []

    acc = c.by_multiple("acc@")
    far = [m for m in acc if m >= FAR_MULTIPLE]
    at_t = acc.get(1)
    if at_t is None or not far:
        parts.append(f"accuracy: needs acc@1x and acc at >= {FAR_MULTIPLE}x (undecided)")
    else:
        far_mean = _mean_over([acc[m] for m in far])  # per-seed mean accuracy over the far lengths
        evidence.update({"acc@1x": at_t, "acc_far": far_mean, "far_multiples": far})
        c_acc = compare_paired(at_t, far_mean)
        label = f"acc@1x - mean acc@{'/'.join(f'{m}x' for m in far)}"
        if at_t.n and at_t.mean < LEARNED_ACC:
            v = Verdict.UNDECIDED
            parts.append(
                f"accuracy: acc@1x {at_t.format()} is below {LEARNED_ACC}: the variant does "
                "not retrieve at T, so a drop past T cannot be judged (undecided)"
            )
        else:
            v = decide(c_acc, DEGRADE_ACC_DROP)
            parts.append(
                f"accuracy: acc@1x {at_t.format()} vs far {far_mean.format()}; "
                f"{_interval(c_acc, label, DEGRADE_ACC_DROP)} -> {v.value}"
            )
        evidence["accuracy"] = {"comparison": c_acc, "verdict": v}
        verdicts.append(v)

    ext = c.by_multiple("extrap_bpb@")
    far_bpb = [m for m in ext if m >= FAR_MULTIPLE]
    short = c.spread(SHORT_BPB)
    if short is None or short.n == 0 or not far_bpb:
        parts.append(f"loss: needs short_bpb and extrap_bpb at >= {FAR_MULTIPLE}x (undecided)")
    else:
        m = far_bpb[0]
        long_bpb = ext[m]
        c_bpb = compare_paired(long_bpb, short)
        margin = DEGRADE_BPB_RISE * short.mean
        v = decide(c_bpb, margin)
        parts.append(
            f"loss: short_bpb {short.format()} vs {extrap_bpb(m)} {long_bpb.format()}; "
            f"{_interval(c_bpb, f'rise at {m}x', margin)} "
            f"({DEGRADE_BPB_RISE:.0%} of short_bpb) -> {v.value}"
        )
        evidence["loss"] = {"comparison": c_bpb, "verdict": v, "multiple": m}
        verdicts.append(v)

    sup = Verdict.SUPPORTED in verdicts
    con = Verdict.CONTRADICTED in verdicts
    if sup and not con:
        verdict = Verdict.SUPPORTED
    elif con and not sup:
        verdict = Verdict.CONTRADICTED
    else:
        verdict = Verdict.UNDECIDED
        if sup and con:
            parts.append("accuracy and loss disagree (undecided)")
    return verdict, "; ".join(parts), evidence


def _mean_over(spreads: Sequence[Spread]) -> Spread:
    """Per-run mean of several spreads over the runs present in all of them."""
    maps = [s.by_key() for s in spreads]
    keys = [k for k in maps[0] if all(k in m for m in maps[1:])]
    return Spread(tuple(float(np.mean([m[k] for m in maps])) for k in keys), tuple(keys))


def _degrade_claim(key: str, role: str, roles) -> Finding:
    text = CLAIMS_TEXT[key]
    (found, missing) = _need(roles, role)
    if missing:
        return _undecided(key, text, missing)
    c = found[0]
    verdict, detail, evidence = _degradation(c)
    rule = (
        f" Rule: past T means at >= {FAR_MULTIPLE}x the training length; accuracy degrades "
        f"if acc@1x exceeds the far accuracy by more than {DEGRADE_ACC_DROP} (paired by seed, "
        f"95% CI), loss degrades if extrap_bpb exceeds short_bpb by more than "
        f"{DEGRADE_BPB_RISE:.0%}; supported if one measure shows degradation and none "
        "shows the opposite."
    )
    return Finding(key, text, verdict, f"{c.name}: {detail}.{rule}", evidence)


def check_rope_fails_extrapolation(agg: StudyAggregate, roles) -> Finding:
    return _degrade_claim("rope_fails_extrapolation", "rope", roles)


def check_nope_degrades(agg: StudyAggregate, roles) -> Finding:
    return _degrade_claim("nope_degrades_past_T", "nope", roles)


def check_qknorm_hurts(agg: StudyAggregate, roles) -> Finding:
    key, text = "qknorm_hurts_retrieval", CLAIMS_TEXT["qknorm_hurts_retrieval"]
    (found, missing) = _need(roles, "rope", "qknorm")
    if missing:
        return _undecided(key, text, missing)
    rope, qk = found
    return _greater(key, text, rope, qk, LONG_ACC, f"{rope.name} - {qk.name} long_acc")


def _mass_greater(
    key: str,
    a: CandidateSummary,
    kind_a: str,
    b: CandidateSummary,
    kind_b: str,
    segment: str,
) -> Finding:
    """Claim: layers of ``kind_a`` in ``a`` put more mass on ``segment`` than ``kind_b`` in
    ``b`` at MASS_LENGTH (paired by seed when a and b are the same model)."""
    text = CLAIMS_TEXT[key]
    sa = a.mass(MASS_LENGTH, kind_a, segment)
    sb = b.mass(MASS_LENGTH, kind_b, segment)
    if sa is None or sb is None or sa.n == 0 or sb.n == 0:
        which = f"{a.name}/{kind_a}" if sa is None or sa.n == 0 else f"{b.name}/{kind_b}"
        return _undecided(key, text, f"no attention mass for {which} at {MASS_LENGTH}")
    same = a.candidate_id == b.candidate_id
    c = compare_paired(sa, sb) if same else compare_independent(sa, sb)
    verdict = decide(c)
    la, lb = f"{a.name}/{kind_a}", f"{b.name}/{kind_b}"
    detail = (
        f"fraction of attention on {segment.capitalize()} at {MASS_LENGTH} T: "
        f"{_describe(la, '', sa)} vs {_describe(lb, '', sb)}; "
        f"{_interval(c, 'difference')}; rule: supported if the interval is above 0, "
        "contradicted if below."
    )
    return Finding(key, text, verdict, detail, {"a": sa, "b": sb, "comparison": c})


def check_nope_needle_mass(agg: StudyAggregate, roles) -> Finding:
    key = "nope_needle_mass"
    (found, missing) = _need(roles, "nope", "rope")
    if missing:
        return _undecided(key, CLAIMS_TEXT[key], missing)
    nope, rope = found
    return _mass_greater(key, nope, "global_nope", rope, "global_rope", "needle")


def check_rope_recency(agg: StudyAggregate, roles) -> Finding:
    key = "rope_recency_bias"
    (found, missing) = _need(roles, "rope", "nope")
    if missing:
        return _undecided(key, CLAIMS_TEXT[key], missing)
    rope, nope = found
    return _mass_greater(key, rope, "global_rope", nope, "global_nope", "end")


def check_qknorm_flattens(agg: StudyAggregate, roles) -> Finding:
    key = "qknorm_flattens_attention"
    (found, missing) = _need(roles, "rope", "qknorm")
    if missing:
        return _undecided(key, CLAIMS_TEXT[key], missing)
    rope, qk = found
    return _mass_greater(key, rope, "global_rope", qk, "global_rope", "needle")


def check_hybrid_division(agg: StudyAggregate, roles) -> Finding:
    key = "hybrid_division_of_labour"
    (found, missing) = _need(roles, "hybrid")
    if missing:
        return _undecided(key, CLAIMS_TEXT[key], missing)
    hybrid = found[0]
    return _mass_greater(key, hybrid, "global_nope", hybrid, "local_rope", "needle")


CLAIMS_TEXT = {
    "hybrid_beats_rope_long": "The hybrid (RNoPE-SWA) beats RoPE on long-context retrieval "
    "(long_acc: NIAH accuracy beyond the training length).",
    "hybrid_short_competitive": "The hybrid stays competitive with RoPE on short context "
    "(short_bpb at the training length).",
    "hybrid_less_kv": "The hybrid needs far less KV cache than RoPE.",
    "rope_fails_extrapolation": "RoPE fails to extrapolate: accuracy or loss degrades past "
    "the training length.",
    "nope_degrades_past_T": "NoPE also degrades past the training length.",
    "qknorm_hurts_retrieval": "QK-norm hurts long-context retrieval (long_acc below RoPE's).",
    "nope_needle_mass": "NoPE layers put more attention on the needle than RoPE layers.",
    "rope_recency_bias": "RoPE layers carry a recency bias: more attention on the End "
    "segment than NoPE layers.",
    "qknorm_flattens_attention": "QK-norm flattens attention: less attention on the needle "
    "than in RoPE without it.",
    "hybrid_division_of_labour": "In the hybrid, the NoPE (global) layers do the retrieval: "
    "more attention on the needle than its RoPE (local, windowed) layers.",
}

CLAIMS: tuple[Claim, ...] = (
    Claim("hybrid_beats_rope_long", CLAIMS_TEXT["hybrid_beats_rope_long"], check_hybrid_long_retrieval),
    Claim("hybrid_short_competitive", CLAIMS_TEXT["hybrid_short_competitive"], check_hybrid_short_competitive),
    Claim("hybrid_less_kv", CLAIMS_TEXT["hybrid_less_kv"], check_hybrid_kv),
    Claim("rope_fails_extrapolation", CLAIMS_TEXT["rope_fails_extrapolation"], check_rope_fails_extrapolation),
    Claim("nope_degrades_past_T", CLAIMS_TEXT["nope_degrades_past_T"], check_nope_degrades),
    Claim("qknorm_hurts_retrieval", CLAIMS_TEXT["qknorm_hurts_retrieval"], check_qknorm_hurts),
    Claim("nope_needle_mass", CLAIMS_TEXT["nope_needle_mass"], check_nope_needle_mass),
    Claim("rope_recency_bias", CLAIMS_TEXT["rope_recency_bias"], check_rope_recency),
    Claim("qknorm_flattens_attention", CLAIMS_TEXT["qknorm_flattens_attention"], check_qknorm_flattens),
    Claim("hybrid_division_of_labour", CLAIMS_TEXT["hybrid_division_of_labour"], check_hybrid_division),
)  # fmt: skip


def check_claims(agg: StudyAggregate, presets: Mapping[str, str] | None = None) -> list[Finding]:
    """Every claim of :data:`CLAIMS` checked on ``agg``. ``presets`` renames the
    variants (role -> preset name: ``{"hybrid": "rnope_swa32"}``)."""
    roles = resolve_roles(agg, presets)
    findings = []
    for claim in CLAIMS:
        finding = claim.check(agg, roles)
        findings.append(finding)
    return findings
