"""`ropenope status STUDY`: counts by state, running trials with their progress, the best
trial per objective, the current Pareto set and, with adaptive seeds, where each
hypothesis stands, with a scale ladder each rung and the decision accuracy between them,
read from the study alone (with the sweep file it stores)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from space.ladder import rung_of
from space.outcomes import RERUN_REASONS
from space.trial_attrs import TrialAttrs
from tracking.study_view import objective_names as study_objectives


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def count_states(trials: Sequence[FrozenTrial]) -> Counter:
    """Trials per state name, plus ``interrupted`` (FAIL trials a re-run replaces: the
    driver or the worker died) and one ``reason:<r>`` entry per FAIL/PRUNED reason."""
    c: Counter = Counter({s.name: 0 for s in TrialState})
    c["interrupted"] = 0
    for t in trials:
        c[t.state.name] += 1
        if t.state in (TrialState.FAIL, TrialState.PRUNED):
            reason = TrialAttrs.of(t.user_attrs).reason
            reason = str(reason) if reason is not None else "unknown"
            c[f"reason:{reason}"] += 1
            if reason in RERUN_REASONS:
                c["interrupted"] += 1
    return c


def objective_names(study: optuna.Study) -> list[str]:
    return list(study_objectives(study.user_attrs, study.metric_names, len(study.directions)))


def _complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.values is not None
        and all(v is not None and math.isfinite(v) for v in t.values)
    ]


def best_per_objective(
    trials: Sequence[FrozenTrial], objectives: Sequence[str], directions: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """For each objective alone: the COMPLETE trial with the best value."""
    done = _complete(trials)
    out = {}
    for i, (name, direction) in enumerate(zip(objectives, directions, strict=False)):
        if not done:
            break
        pick = max if direction == "maximize" else min
        t = pick(done, key=lambda t, i=i: t.values[i])
        out[name] = {
            "number": t.number,
            "value": t.values[i],
            "candidate": TrialAttrs.of(t.user_attrs).candidate_name,
        }
    return out


def _first_of_candidate(attrs: TrialAttrs) -> bool:
    """Neither a reuse of another trial's result nor more seeds of a candidate."""
    return attrs.reused_from is None and attrs.requested_for is None


def pareto_set(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """COMPLETE trials no other COMPLETE trial dominates (one copy per candidate: a
    deduplicated trial repeats its source's values, and a trial of more seeds for the
    hypotheses shows the candidate again; the report compares the means over seeds)."""
    from tracking.pareto import pareto_ranks

    done = [t for t in _complete(trials) if _first_of_candidate(TrialAttrs.of(t.user_attrs))]
    if not done:
        return []
    ranks = pareto_ranks([t.values for t in done], directions).ranks
    return [t for t, r in zip(done, ranks, strict=True) if r == 0]


def seed_plan_summary(study: optuna.Study, config: Any = None) -> dict[str, Any] | None:
    """Adaptive seeds: every hypothesis's state (look, interval, runs asked for next), the
    lines ``ropenope status`` prints, and the trials of more seeds; None for a study with
    a fixed number of seeds. ``config``: the sweep file (default: the one the study
    stores)."""
    from search.bookkeeping import adds_seeds
    from search.errors import StudyError
    from search.seed_rounds import describe_state, unsettled
    from search.signature import stored_config
    from space.errors import ConfigError
    from tracking.seed_plan import SeedPlan, format_open_hypotheses, plan_for_study

    if config is None:
        try:
            config = stored_config(study)
        except StudyError:
            return None  # not swept by ropenope: no sweep file, no hypotheses
        except ConfigError as err:  # stored by an older ropenope
            return {"error": f"the stored sweep file is no longer valid: {err}"}
    plan = plan_for_study(study, config)
    if plan is None:
        return None
    extra = [t for t in study.get_trials(deepcopy=False) if adds_seeds(t)]
    still = unsettled(plan)
    opened = tuple(h for h in plan.hypotheses if h.name in still)
    return {
        **plan.to_dict(),
        "repeats": {"min": config.study.repeats, "max": config.study.max_repeats},
        "open": format_open_hypotheses(SeedPlan(opened, plan.requests)),
        "settled": [describe_state(h) for h in plan.hypotheses if h.name not in still],
        "trials": {
            state.name: sum(t.state == state for t in extra)
            for state in TrialState
            if any(t.state == state for t in extra)
        },
    }


def score_quality(
    trials: Sequence[FrozenTrial], objectives: Sequence[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Tie-group warnings and signal-to-noise per objective over the COMPLETE candidates'
    seeds (:mod:`tracking.ties`; a deduplicated trial repeats its source and counts once)."""
    from tracking.aggregate import aggregate
    from tracking.records import seed_records
    from tracking.ties import signal_to_noise, tie_groups, tie_warning

    records = [r for t in trials for r in seed_records(t, objectives)]
    candidates = aggregate(records, objectives).candidates
    warnings = [tie_warning(g) for g in tie_groups(objectives, candidates)]
    return warnings, [signal_to_noise(o, candidates).to_dict() for o in objectives]


def held_out_summary(
    trials: Sequence[FrozenTrial], objectives: Sequence[str], config: Any = None
) -> dict[str, Any] | None:
    """Whether the ranking on the trained families transfers to the held-out ones
    (``score.held_out``; :mod:`tracking.held_out`), over the COMPLETE candidates' seeds;
    None for a study that records no held-out score. Decided effects are the report's."""
    from tracking.aggregate import aggregate
    from tracking.held_out import held_out_families, held_out_transfer
    from tracking.records import seed_records

    records = [r for t in _complete(trials) for r in seed_records(t, objectives)]
    transfer = held_out_transfer(aggregate(records, objectives), families=held_out_families(config))
    return None if transfer is None else {**transfer.to_dict(), "lines": transfer.lines()}


def tie_warnings(trials: Sequence[FrozenTrial], objectives: Sequence[str]) -> list[str]:
    """A warning for each group of candidates that ties on an objective (at a bound, or
    inside each other's seed noise), naming the score that would separate them."""
    return score_quality(trials, objectives)[0]


def summarize(
    study: optuna.Study, *, target: int | None = None, config: Any = None
) -> dict[str, Any]:
    """Everything `ropenope status` shows, as JSON-able data."""
    from search.liveness import driver_states
    from search.signature import target_trials

    every = study.get_trials(deepcopy=False)
    # Objectives compare within a rung: best, Pareto set and ties are rung 0's (every
    # trial of a study without a ladder); the other rungs are under "ladder".
    trials = [t for t in every if rung_of(t.user_attrs) == 0]
    objectives = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    c = count_states(every)
    drivers = driver_states(study)
    warnings, signal_noise = score_quality(trials, objectives)
    running = []
    for t in every:
        if t.state != TrialState.RUNNING:
            continue
        step = t.last_step
        attrs = TrialAttrs.of(t.user_attrs)
        running.append(
            {
                "number": t.number,
                "candidate": attrs.candidate_name,
                "candidate_id": attrs.candidate_id,
                "step": step,
                "metric": attrs.eval_metric,
                "value": t.intermediate_values.get(step) if step is not None else None,
                "driver": attrs.driver_id,
                "driver_state": drivers.get(attrs.driver_id, {}).get("state"),
                "started": t.datetime_start.isoformat(timespec="seconds")
                if t.datetime_start
                else None,
                "trial_dir": attrs.trial_dir,
            }
        )
    reasons = {k[len("reason:") :]: v for k, v in c.items() if k.startswith("reason:")}
    return {
        "study": study.study_name,
        "target": target if target is not None else target_trials(study),
        "objectives": dict(zip(objectives, directions, strict=False)),
        "counts": {s.name: c[s.name] for s in TrialState},
        "reasons": reasons,
        "running": running,
        "best": best_per_objective(trials, objectives, directions),
        "pareto": [
            {
                "number": t.number,
                "candidate": TrialAttrs.of(t.user_attrs).candidate_name,
                "values": dict(zip(objectives, t.values, strict=False)),
            }
            for t in pareto_set(trials, directions)
        ],
        "drivers": drivers,
        "seed_plan": seed_plan_summary(study, config),
        "ladder": ladder_summary(study, every, directions, config),
        "signal_to_noise": signal_noise,
        "held_out": held_out_summary(trials, objectives, config),
        "warnings": warnings,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"study {s['study']}  (target {s['target']} trials)"]
    lines.append("objectives: " + ", ".join(f"{m} ({d[:3]})" for m, d in s["objectives"].items()))
    counts = "  ".join(f"{k} {v}" for k, v in s["counts"].items() if v)
    lines.append(f"trials: {counts or 'none'}")
    if s["reasons"]:
        lines.append("reasons: " + "; ".join(f"{k} ({v})" for k, v in sorted(s["reasons"].items())))
    if s["running"]:
        lines.append("running:")
        for r in s["running"]:
            where = f"step {r['step']}" if r["step"] is not None else "starting"
            value = f"  {r['metric']} {format_value(r['value'])}" if r["value"] is not None else ""
            lines.append(
                f"  #{r['number']:<4} {where}{value}  {r['candidate'] or ''}"
                f"  driver {(r['driver'] or '?')[:8]} ({r['driver_state'] or 'unknown'})"
            )
    if s["best"]:
        lines.append("best per objective:")
        for m, b in s["best"].items():
            lines.append(
                f"  {m:<16} {format_value(b['value']):>10}  #{b['number']}  {b['candidate']}"
            )
    if s["pareto"]:
        lines.append(f"pareto set ({len(s['pareto'])}):")
        names = list(s["objectives"])
        header = "  " + f"{'#':<5}" + "".join(f"{m:>16}" for m in names) + "  candidate"
        lines.append(header)
        for p in s["pareto"]:
            vals = "".join(f"{format_value(p['values'].get(m)):>16}" for m in names)
            lines.append(f"  {p['number']:<5}{vals}  {p['candidate']}")
    lines += format_signal_to_noise(s.get("signal_to_noise") or [])
    lines += format_held_out(s.get("held_out"))
    lines += format_seed_plan(s.get("seed_plan"))
    lines += format_ladder(s.get("ladder"))
    for warning in s.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def ladder_summary(
    study: optuna.Study, trials: Sequence[FrozenTrial], directions: Sequence[str], config: Any
) -> dict[str, Any] | None:
    """A ladder study's rungs (trial counts and Pareto set of each) and its decision
    accuracy (:mod:`tracking.decision_accuracy`); None without a ladder."""
    from search.errors import StudyError
    from search.signature import stored_config
    from space.errors import ConfigError
    from tracking.ladder_view import study_decision_accuracy

    if config is None:
        try:
            config = stored_config(study)
        except (StudyError, ConfigError):  # no sweep file, or one seed_plan reports
            return None
    if config.ladder is None:
        return None

    objectives = objective_names(study)
    rungs = []
    for rung in range(len(config.ladder.rungs)):
        at = [t for t in trials if rung_of(t.user_attrs) == rung]
        rungs.append(
            {
                "rung": rung,
                "counts": {k: v for k, v in count_states(at).items() if ":" not in k},
                "pareto": [
                    {
                        "number": t.number,
                        "candidate": TrialAttrs.of(t.user_attrs).candidate_name,
                        "promoted_from": TrialAttrs.of(t.user_attrs).promoted_from,
                        "values": dict(zip(objectives, t.values, strict=False)),
                    }
                    for t in pareto_set(at, directions)
                ],
            }
        )
    accuracy = study_decision_accuracy(study, config)
    return {
        "rungs": rungs,
        "decision_accuracy": accuracy.to_dict() if accuracy is not None else None,
        "lines": accuracy.lines() if accuracy is not None else [],
    }


def format_ladder(ladder: dict[str, Any] | None) -> list[str]:
    """The scale-ladder lines of ``ropenope status``: each rung's trials and Pareto set,
    then the decision accuracy between rungs."""
    if not ladder:
        return []
    lines = ["ladder:"]
    for r in ladder["rungs"]:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()) if v)
        lines.append(f"  rung {r['rung']}: {counts or 'no trials yet'}")
        for p in r["pareto"][:8]:
            came = f" (from #{p['promoted_from']})" if p["promoted_from"] is not None else ""
            lines.append(f"    pareto #{p['number']} {p['candidate']}{came}")
    if ladder["lines"]:
        lines.append("  decision accuracy (95% bootstrap intervals over seeds):")
        lines += [f"    {line}" for line in ladder["lines"]]
    return lines


def format_signal_to_noise(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per objective: spread of the candidates' means over the seed spread."""
    rows = [r for r in rows if r["candidates"] >= 2]
    if not rows:
        return []
    lines = ["signal-to-noise (std of candidate means / pooled std over seeds):"]
    for r in rows:
        bound = f"  {r['at_bound']} of {r['candidates']} at a bound" if r["at_bound"] else ""
        lines.append(
            f"  {r['objective']:<16} {r['ratio_text']:>8}  signal {format_value(r['signal'])}"
            f"  noise {format_value(r['noise'])}{bound}"
        )
    return lines


def format_held_out(held: dict[str, Any] | None) -> list[str]:
    """The held-out families' rank transfer, and each candidate's trained and held-out
    headline (long_acc), one line each."""
    if not held:
        return []
    lines = [
        "held-out families"
        + (f" ({', '.join(held['families'])})" if held["families"] else "")
        + ":"
    ]
    lines += [f"  {line}" for line in held["lines"]]
    for rank in held["ranks"][:1]:
        for c in rank["candidates"]:
            lines.append(
                f"  {c['name']:<24} {rank['trained']} {format_value(c['trained']):>8}"
                f"  {rank['held_out']} {format_value(c['held_out']):>8}"
            )
    return lines


def format_seed_plan(plan: dict[str, Any] | None) -> list[str]:
    """The adaptive-seed lines of ``ropenope status``: each open hypothesis with its
    interval and the runs it asks for, then the settled ones."""
    if not plan:
        return []
    if "error" in plan:
        return [f"adaptive seeds: {plan['error']}"]
    r = plan["repeats"]
    trials = ", ".join(f"{k.lower()} {v}" for k, v in plan["trials"].items()) or "none yet"
    lines = [
        f"adaptive seeds ({r['min']}..{r['max']} per candidate; trials of more seeds: {trials}):"
    ]
    if plan["open"]:
        lines.append("  open:")
        lines += [f"    {line}" for line in plan["open"]]
    if plan["settled"]:
        lines.append("  settled:")
        lines += [f"    {line}" for line in plan["settled"]]
    if plan["done"]:
        lines.append("  done: every hypothesis is decided, at max seeds, or cannot be judged")
    return lines
