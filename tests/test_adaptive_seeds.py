"""Adaptive seeds in the sweep driver (search/seed_rounds.py, search/searcher.py).

The pieces on hand-made studies (no Ray): which seeds a candidate's first trial trains,
the budget key of another seed list, the trials of more seeds the planner's requests
become, their re-run after a crash. Then real sweeps on local Ray with the tiny model:
two presets, a hypothesis with a large effect and one with none (``seed_effect_runner``
in engines.py puts both on top of the real scores), ``repeats: {min: 2, max: 3,
others: 1}``; once uninterrupted, once killed while the second round trains and resumed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml
from engines import (
    REPO,
    SWEEP_SPACE,
    kill_driver_when,
    runner_driver,
    seed_effect_runner,
    tiny_config_file,
    trials_by_number,
)
from optuna.trial import TrialState, create_trial
from studies import BAD_ROPE, GOOD_HYBRID, paper_trials, study

from search import driver
from search.cli import main as cli_main
from search.optuna_adapter import claim_waiting
from search.seed_rounds import (
    compares,
    first_seeds,
    format_decisions,
    queue_requests,
    queued_seed_trials,
    rounds_left,
)
from search.signature import budget_key, sweep_seeds
from search.status import format_seed_plan, seed_plan_summary
from search.trials import (
    adds_seeds,
    count_toward_target,
    find_reusable,
    reconcile_interrupted,
)
from space import load_config
from space.errors import ConfigError
from space.outcomes import Reason
from space.schema import parse_config, parse_yaml
from space.trial_attrs import (
    ATTR_BUDGET,
    ATTR_CANDIDATE_ID,
    ATTR_PRESET,
    ATTR_REASON,
    ATTR_REPEATS,
    ATTR_REQUESTED_FOR,
    ATTR_REQUESTED_SEEDS,
    ATTR_RERUN_OF,
    ATTR_RESUMED_FROM_STEP,
    ATTR_REUSED_FROM,
    ATTR_SEED,
    ATTR_TRIAL_DIR,
)
from tracking.aggregate import aggregate_study
from tracking.seed_plan import DECIDED, EXHAUSTED, plan_for_study
from workers.ray_seeds import INTERVAL_FILE

SPACE = SWEEP_SPACE  # sampled candidates have local layers: never one of the presets
BIG, NULL = "nope_worse_short", "nope_flat_past_T"
HYPOTHESES = {
    "hypotheses": [
        {
            "name": BIG,
            "statement": "NoPE's short-context loss is worse than RoPE's (a 100-bit handicap).",
            "a": "nope",
            "b": "rope",
            "quantity": "short_bpb",
            "direction": "greater",
        },
        {
            "name": NULL,
            "statement": "NoPE's loss at 2x T is above its loss at T (here by zero on average).",
            "a": {"preset": "nope", "quantity": "extrap_bpb@2x"},
            "b": {"preset": "nope", "quantity": "short_bpb"},
            "direction": "greater",
            "test": "paired",
        },
    ]
}
REPEATS = {"min": 2, "max": 3, "others": 1}


def _sweep_file(tmp_path: Path, name: str, resources: dict | None = None, **study) -> Path:
    return tiny_config_file(
        tmp_path / f"{name}.yaml",
        study={"name": name, "trials": 3, "repeats": REPEATS, **study},
        space=SPACE,
        presets=["rope", "nope"],
        hypotheses=HYPOTHESES,
        resources=resources or {},
    )


# -- the pieces, without engines -------------------------------------------------------


def test_schema_reads_repeats_others_and_refuses_what_cannot_be(tmp_path):
    config = load_config(_sweep_file(tmp_path, "a"))
    s = config.study
    assert (s.repeats, s.max_repeats, s.others_repeats, s.adaptive, s.looks) == (2, 3, 1, True, 2)
    plain = load_config(_sweep_file(tmp_path, "b", repeats={"min": 2, "max": 3}))
    assert plain.study.others_repeats == 2  # every candidate gets min, as without others
    with pytest.raises(ConfigError, match=r"study\.repeats\.others: others 4 is above max 3"):
        load_config(_sweep_file(tmp_path, "c", repeats={**REPEATS, "others": 4}))
    with pytest.raises(ConfigError, match=r"study\.repeats\.others: expected a whole number"):
        load_config(_sweep_file(tmp_path, "d", repeats={**REPEATS, "others": 0}))
    bare = tiny_config_file(
        tmp_path / "e.yaml", study={"name": "e", "repeats": {"min": 2, "max": 2, "others": 1}}
    )
    with pytest.raises(ConfigError, match=r"study\.repeats\.others: others sets the seeds"):
        load_config(bare)


def test_first_seeds_are_min_for_compared_candidates_and_others_for_the_rest(tmp_path):
    config = load_config(_sweep_file(tmp_path, "s"))
    rope, nope = config.preset_candidate("rope"), config.preset_candidate("nope")
    sampled = config.candidate({**SPACE, "global_position": "rope", "local_rope_base": 1e4,
                                "local_window": 8})  # fmt: skip
    assert compares(config.hypotheses, rope.layers, "rope")
    assert not compares(config.hypotheses, sampled.layers, None)
    assert first_seeds(config, rope, "rope") == (0, 1) == sweep_seeds(config)
    assert first_seeds(config, nope, "nope") == (0, 1)
    assert first_seeds(config, sampled, None) == (0,)
    # A side that selects by layers alone names every candidate whose layers fit.
    where = {"where": {"local": {"windowed": True}}}
    by_layers = {"hypotheses": [{**HYPOTHESES["hypotheses"][0], "b": where}]}
    other = load_config(
        tiny_config_file(
            tmp_path / "w.yaml",
            study={"name": "w", "trials": 3, "repeats": REPEATS},
            space=SPACE,
            presets=["rope", "nope"],
            hypotheses=by_layers,
        )
    )
    assert first_seeds(other, sampled, None) == (0, 1)
    assert first_seeds(other, rope, "rope") == (0,)  # all-global: neither side names it


def test_budget_key_of_other_seeds_is_another_result(tmp_path):
    config = load_config(_sweep_file(tmp_path, "k"))
    base = budget_key(config)
    assert budget_key(config, sweep_seeds(config)) == base  # what existing studies hold
    assert (
        len({base, budget_key(config, (2,)), budget_key(config, (0,)), budget_key(config, (2, 3))})
        == 4
    )
    first = create_trial(
        state=TrialState.COMPLETE,
        values=[0.5, 2.0, 1.0],
        user_attrs={ATTR_CANDIDATE_ID: "c", ATTR_BUDGET: base},
    )
    assert find_reusable([first], "c", base) is first
    assert find_reusable([first], "c", budget_key(config, (2,))) is None  # never deduplicated


def _paper_config(tmp_path: Path, repeats: dict):
    """configs/paper.yaml with adaptive ``repeats`` (its hypotheses_from still resolves:
    to the shipped configs/ folder)."""
    text = (REPO / "configs" / "paper.yaml").read_text()
    assert "  repeats: 3\n" in text
    path = tmp_path / "paper.yaml"
    path.write_text(text.replace("  repeats: 3\n", f"  repeats: {json.dumps(repeats)}\n"))
    return load_config(path)


def _two_seeds_of_the_paper_variants() -> optuna.Study:
    """Seeds 0 and 1 of rope / qknorm / nope / rnope_swa, one trial per seed."""
    return study(paper_trials(hybrid_acc=GOOD_HYBRID, rope_acc=BAD_ROPE, seeds=(0, 1)))


def test_queued_seed_trials_link_their_candidate_and_never_count(tmp_path):
    config = _paper_config(tmp_path, {"min": 2, "max": 4})
    s = _two_seeds_of_the_paper_variants()
    trials = s.get_trials(deepcopy=False)
    plan = plan_for_study(s, config)
    assert plan is not None and plan.requests and not plan.done
    assert rounds_left(s, config)
    shown = "\n".join(format_seed_plan(seed_plan_summary(s, config)))
    assert "adaptive seeds (2..4 per candidate; trials of more seeds: none yet):" in shown
    assert "    qknorm_flattens_attention: open at look 1/3 (2 seeds), interval [" in shown
    assert "asks 2 more runs (rope, qknorm), at most 4 up to max seeds" in shown
    # RoPE and QK-norm score the same long_acc on both seeds: no seed is bought for it.
    assert "qknorm_hurts_retrieval: undecided, no more seeds after look 1/3 (futile: " in shown
    assert "    hybrid_less_kv: supported at look 1/3 (2 seeds x 2 candidates = 4 runs)" in shown
    queued = queue_requests(s, config, plan.requests, trials)
    assert [block for _, block in queued] == [(2,)] * len(plan.requests)
    waiting = queued_seed_trials(s.get_trials(deepcopy=False))
    assert len(waiting) == len(plan.requests)
    by_id = {r.candidate_id: r for r in plan.requests}
    presets = {t.user_attrs[ATTR_CANDIDATE_ID]: t.user_attrs.get(ATTR_PRESET) for t in trials}
    for t in waiting:
        r = by_id[t.user_attrs[ATTR_CANDIDATE_ID]]
        assert t.user_attrs[ATTR_REQUESTED_SEEDS] == [2]
        assert t.user_attrs[ATTR_REQUESTED_FOR] == list(r.hypotheses)
        assert (t.user_attrs[ATTR_SEED], t.user_attrs[ATTR_REPEATS]) == (2, 1)
        assert t.user_attrs[ATTR_PRESET] == presets[r.candidate_id]
        assert adds_seeds(t) and not count_toward_target([t])
    # Queued seeds are on their way: the planner asks for nothing more meanwhile.
    assert not plan_for_study(s, config).requests
    shown = "\n".join(format_seed_plan(seed_plan_summary(s, config)))
    assert f"trials of more seeds: waiting {len(plan.requests)}" in shown
    assert "qknorm_flattens_attention: waiting at look 1/3 (2 seeds)" in shown
    assert rounds_left(s, config)  # ... and the sweep is not done
    # The driver starts exactly the trial it queued, whatever else waits in the queue.
    first = waiting[0]
    trial = claim_waiting(s, first)
    assert trial is not None and trial.number == first.number
    assert claim_waiting(s, first) is None  # already started
    assert [t.number for t in queued_seed_trials(s.get_trials())] == [t.number for t in waiting[1:]]
    # Seeds that are not consecutive go to one trial per run of them (seed, repeats).
    gappy = replace(plan.requests[0], seeds=(5, 6, 8))
    blocks = [b for _, b in queue_requests(s, config, [gappy], s.get_trials())]
    assert blocks == [(5, 6), (8,)]
    last = queued_seed_trials(s.get_trials())[-2:]
    assert [(t.user_attrs[ATTR_SEED], t.user_attrs[ATTR_REPEATS]) for t in last] == [(5, 2), (8, 1)]


def test_interrupted_seed_trial_reruns_the_same_seeds_and_is_not_spent(tmp_path):
    config = _paper_config(tmp_path, {"min": 2, "max": 4})
    s = _two_seeds_of_the_paper_variants()
    plan = plan_for_study(s, config)
    queue_requests(s, config, plan.requests[:1], s.get_trials())
    (frozen,) = queued_seed_trials(s.get_trials())
    claim_waiting(s, frozen)  # RUNNING, then its driver dies
    closed = reconcile_interrupted(s, s._storage, lambda t: True)
    assert [n for n, _ in closed] == [frozen.number]
    trials = s.get_trials()
    dead = next(t for t in trials if t.number == frozen.number)
    assert dead.user_attrs[ATTR_REASON] == Reason.INTERRUPTED
    (rerun,) = queued_seed_trials(trials)
    assert rerun.user_attrs[ATTR_RERUN_OF] == frozen.number
    for key in (ATTR_REQUESTED_SEEDS, ATTR_REQUESTED_FOR, ATTR_CANDIDATE_ID, ATTR_SEED):
        assert rerun.user_attrs[key] == frozen.user_attrs[key]
    # The dead trial's seed is not spent (it runs again) and the re-run's is pending.
    cid = frozen.user_attrs[ATTR_CANDIDATE_ID]
    (c,) = [c for c in aggregate_study(s).candidates if c.candidate_id == cid]
    assert 2 not in c.spent_seeds and c.pending_seeds == (2,)
    assert all(cid != r.candidate_id for r in plan_for_study(s, config).requests)


# -- real sweeps -----------------------------------------------------------------------


def _check_finished_sweep(url: str, name: str, config) -> dict:
    """What an adaptive sweep of ``_sweep_file`` must end with; returns the trials by
    kind for more checks."""
    s = optuna.load_study(study_name=name, storage=url)
    trials = s.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert count_toward_target(trials) == 3  # study.trials counts candidates
    seeds = {c.name: tuple(sorted(c.seeds)) for c in aggregate_study(s).candidates}
    rope, nope = config.preset_candidate("rope"), config.preset_candidate("nope")
    sampled = [n for n in seeds if n not in ("rope", "nope")]
    # The decided hypothesis (rope's only one) got no seed beyond min; the open one gave
    # nope its third; the sampled candidate no hypothesis compares has one seed.
    assert seeds == {"rope": (0, 1), "nope": (0, 1, 2), sampled[0]: (0,)}
    (extra,) = [t for t in complete if adds_seeds(t)]
    assert extra.user_attrs[ATTR_CANDIDATE_ID] == nope.id
    assert extra.user_attrs[ATTR_PRESET] == "nope"
    assert extra.user_attrs[ATTR_REQUESTED_SEEDS] == [2]
    assert extra.user_attrs[ATTR_REQUESTED_FOR] == [NULL]
    assert ATTR_REUSED_FROM not in extra.user_attrs
    assert [e["seed"] for e in extra.user_attrs["seeds"]] == [2]
    firsts = {t.user_attrs.get(ATTR_PRESET): t for t in complete if not adds_seeds(t)}
    assert firsts["rope"].user_attrs[ATTR_CANDIDATE_ID] == rope.id
    assert extra.user_attrs[ATTR_BUDGET] != firsts["nope"].user_attrs[ATTR_BUDGET]
    plan = plan_for_study(s, config)
    states = {h.name: (h.state, h.look, h.verdict.value) for h in plan.hypotheses}
    assert states == {BIG: (DECIDED, 1, "supported"), NULL: (EXHAUSTED, 2, "undecided")}
    assert plan.done and not plan.requests
    return {"extra": extra, "trials": trials}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_adaptive_sweep_adds_seeds_only_where_undecided(tmp_path, runs_home, ray_local, capsys):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = _sweep_file(tmp_path, "adaptive")
    config = load_config(path)
    summary = driver.submit(path, storage=url, runner=seed_effect_runner, progress=False)
    assert summary.counts["COMPLETE"] == 4 and summary.runs == 6
    _check_finished_sweep(url, "adaptive", config)
    lines = "\n".join(format_decisions(summary.seed_plan))
    assert f"{BIG}: supported at look 1/2 (2 seeds x 2 candidates = 4 runs)" in lines
    assert f"{NULL}: undecided at max seeds, look 2/2 (3 seeds x 1 candidate = 3 runs)" in lines

    capsys.readouterr()
    assert cli_main(["status", "adaptive", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "adaptive seeds (2..3 per candidate; trials of more seeds: complete 1)" in out
    assert f"settled:\n    {BIG}: supported at look 1/2" in out
    assert f"    {NULL}: undecided at max seeds, look 2/2" in out
    assert "done: every hypothesis" in out and "open:" not in out
    assert cli_main(["status", "adaptive", "--storage", url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["seed_plan"]
    assert data["done"] and [h["state"] for h in data["hypotheses"]] == [DECIDED, EXHAUSTED]

    # Nothing left: resuming trains nothing and says so.
    again = driver.resume("adaptive", storage=url, runner=seed_effect_runner, progress=False)
    assert again.trained == 0 and again.counts["COMPLETE"] == 4


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_adaptive_sweep_killed_between_rounds_resumes_the_same_plan(tmp_path, runs_home, ray_local):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = _sweep_file(tmp_path, "killed")
    config = load_config(path)
    # The driver joins the test's Ray cluster; seed 2 (the second round) trains slowly.
    command = runner_driver(
        f"driver.submit({str(path)!r}, storage={url!r}, address={ray_local!r}, progress=False,"
        " runner=functools.partial(engines.seed_effect_runner, slow_seeds=(2,)))"
    )

    def second_round_training():
        running = [t for t in trials_by_number("killed", url) if t.state == TrialState.RUNNING]
        return [t for t in running if adds_seeds(t) and t.intermediate_values]

    (killed,) = kill_driver_when(
        command, runs_home, second_round_training, timeout=200, what="the second round to train"
    )
    # What a dead driver left: the open hypothesis waits for the seed in training.
    plan = seed_plan_summary(optuna.load_study(study_name="killed", storage=url))
    assert "trials of more seeds: running 1" in "\n".join(format_seed_plan(plan))
    assert [h["state"] for h in plan["hypotheses"]] == [DECIDED, "waiting"]

    summary = driver.resume("killed", storage=url, runner=seed_effect_runner, progress=False)
    assert summary.reconciled == [killed.number]
    found = _check_finished_sweep(url, "killed", config)
    rerun = found["extra"]
    assert rerun.user_attrs[ATTR_RERUN_OF] == killed.number
    assert rerun.user_attrs[ATTR_RESUMED_FROM_STEP] >= 10  # from its checkpoint
    dead = next(t for t in found["trials"] if t.number == killed.number)
    assert dead.user_attrs[ATTR_REASON] == Reason.INTERRUPTED


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_adaptive_sweep_with_parallel_seeds_is_the_sequential_sweep(tmp_path, runs_home, ray_local):
    """``resources.parallel_seeds``: the first round's two seeds of a candidate train at
    once, and the seed the planner adds later is a trial of its own, as sequentially; the
    plan, the trials and every number are the sequential sweep's."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    found = {}
    for name, parallel in (("apart", False), ("together", True)):
        path = _sweep_file(tmp_path, name, resources={"parallel_seeds": parallel})
        summary = driver.submit(path, storage=url, runner=seed_effect_runner, progress=False)
        assert summary.counts["COMPLETE"] == 4 and summary.runs == 6
        found[name] = _check_finished_sweep(url, name, load_config(path))

    def by_seeds(trials) -> dict:
        return {
            (t.user_attrs[ATTR_CANDIDATE_ID], tuple(e["seed"] for e in t.user_attrs["seeds"])): t
            for t in trials
            if t.state == TrialState.COMPLETE
        }

    apart, together = by_seeds(found["apart"]["trials"]), by_seeds(found["together"]["trials"])
    assert apart.keys() == together.keys()
    for key, trial in together.items():
        assert trial.values == apart[key].values, key
        folder = Path(trial.user_attrs[ATTR_TRIAL_DIR])
        spans = [json.loads(p.read_text()) for p in sorted(folder.glob(f"seed_*/{INTERVAL_FILE}"))]
        if len(key[1]) == 2:  # the first round of a compared candidate: its seeds at once
            assert max(s["started"] for s in spans) < min(s["ended"] for s in spans), spans
        else:  # one seed (the added one, the sampled candidate's): trained by the trial
            assert spans == []
    extra = found["together"]["extra"]
    assert [e["seed"] for e in extra.user_attrs["seeds"]] == [2]


def test_paper_adaptive_is_the_paper_sweep_with_adaptive_seeds():
    """configs/paper_adaptive.yaml (the README's benchmark) changes only the study name
    and the seeds: min 3 for the paper's four variants, rnope (the division of labour) and
    the base and ratio candidates, one for the five other ablations."""
    fixed = load_config(REPO / "configs" / "paper.yaml")
    adaptive = load_config(REPO / "configs" / "paper_adaptive.yaml")
    for section in ("model", "train", "data", "score", "resources", "space", "presets"):
        assert getattr(adaptive, section) == getattr(fixed, section), section
    assert adaptive.hypotheses == fixed.hypotheses
    assert adaptive.study.model_dump(
        exclude={"name", "repeats", "repeats_max", "repeats_others"}
    ) == (fixed.study.model_dump(exclude={"name", "repeats", "repeats_max", "repeats_others"}))
    seeds = {
        name: first_seeds(adaptive, adaptive.preset_candidate(name), name)
        for name in adaptive.presets
    }
    compared = {"rope", "qknorm", "nope", "rnope_swa", "rnope"}  # rnope: division of labour
    compared |= {"rnope_base1e5", "rnope_base1e6", "rnope_swa_1to1"}  # base and ratio claims
    assert {n: s for n, s in seeds.items() if s == (0, 1, 2)}.keys() == compared
    assert all(s == (0,) for n, s in seeds.items() if n not in compared)
    assert adaptive.study.max_repeats == 5


def test_raised_max_on_resume_keeps_the_look_count_stored_at_creation():
    """The looks are planned when the study is created (ropenope:decisions); a sweep
    file whose max is raised on resume plans no extra look, and the report judges at the
    stored level (0.05 over 3 looks, not over 6)."""
    from search.signature import record_config
    from space.names import STUDY_ATTR_DECISIONS
    from tracking.report.build import judge

    def config_with(max_seeds: int):
        raw = yaml.safe_load((REPO / "configs" / "demo_seeds.yaml").read_text())
        raw["study"]["repeats"] = {"min": 2, "max": max_seeds}
        return parse_config(parse_yaml(yaml.safe_dump(raw)), base_dir=REPO / "configs")

    s = study(paper_trials(hybrid_acc=GOOD_HYBRID, rope_acc=BAD_ROPE))
    record_config(s, config_with(4), None)
    assert s.user_attrs[STUDY_ATTR_DECISIONS] == {
        "repeats_min": 2, "repeats_max": 4, "looks": 3, "alpha": pytest.approx(0.05),
    }  # fmt: skip
    raised = config_with(7)
    record_config(s, raised, None)  # the resume: the stored plan is not rewritten
    assert s.user_attrs[STUDY_ATTR_DECISIONS]["looks"] == 3
    plan = plan_for_study(s, raised)
    assert {h.looks for h in plan.hypotheses} == {3}
    findings, _, _ = judge(aggregate_study(s), raised, s.user_attrs)
    rule = next(f.rule for f in findings if f.key == "hybrid_beats_rope_long")
    assert "0.05 split over 3 looks" in rule
    # A study created before plans were stored: the sweep file's looks.
    old = study(paper_trials(hybrid_acc=GOOD_HYBRID, rope_acc=BAD_ROPE), name="old")
    assert {h.looks for h in plan_for_study(old, raised).hypotheses} == {6}
