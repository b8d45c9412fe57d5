"""The trial attributes' one owner (space.trial_attrs): keys, types, checks, typed reads."""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search.storage
from search.bookkeeping import set_trial_attrs
from search.storage import make_storage
from space.names import STEPS, TRAIN_SECONDS, VAL_BPB, is_score_name
from space.trial_attrs import (
    ATTR_ATTENTION_MASS,
    ATTR_CANDIDATE_NAME,
    ATTR_CLAIM_KEY,
    ATTR_CREATE_KEY,
    ATTR_KNOBS,
    ATTR_NIAH,
    ATTR_PRESET,
    ATTR_REPEATS,
    ATTR_SEED,
    ATTR_SEEDS,
    TRIAL_ATTRS,
    TrialAttrError,
    TrialAttrs,
    check_attrs,
)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "interface.json"


def test_trial_attrs_table_and_typed_record_name_the_same_keys():
    assert set(TRIAL_ATTRS) == {f.name for f in fields(TrialAttrs)} - {"scores"}


def test_trial_attrs_every_key_constant_is_defined_in_trial_attrs_only():
    """No module but space/trial_attrs.py defines a trial attribute key (ATTR_*)."""
    owners: dict[str, list[str]] = {}
    for package in ("space", "workers", "tracking", "search"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name) and target.id.startswith("ATTR_"):
                            owners.setdefault(target.id, []).append(str(path.relative_to(ROOT)))
    assert owners and all(where == ["space/trial_attrs.py"] for where in owners.values()), owners
    import space.trial_attrs as module

    keys = {getattr(module, name) for name in owners}
    # niah and attention_mass are keys of the per-seed entries too, and rows of the table:
    # single-seed trials of older studies carry them as trial attributes.
    assert keys == set(TRIAL_ATTRS)
    assert {ATTR_NIAH, ATTR_ATTENTION_MASS} <= set(TRIAL_ATTRS)


def test_trial_attrs_golden_trial_keys_are_owned():
    """Every trial attribute a real sweep writes (the golden file) is a row of the table
    or a score or result number."""
    golden = json.loads(GOLDEN.read_text())["optuna_trial_attrs"]
    keys = {key for kind in golden.values() for key in kind}
    unowned = {
        k
        for k in keys
        if k not in TRIAL_ATTRS
        and not is_score_name(k)
        and k not in (STEPS, TRAIN_SECONDS, VAL_BPB)
    }
    assert keys and not unowned


@pytest.mark.parametrize(
    "attrs",
    [
        {ATTR_SEED: "3"},
        {ATTR_REPEATS: True},
        {ATTR_KNOBS: ["global_every", 4]},
        {ATTR_CANDIDATE_NAME: 7},
        {ATTR_SEEDS: {"seed": 0}},
        {"short_bpb": "2.3"},
    ],
)
def test_check_attrs_refuses_a_value_of_the_wrong_type(attrs):
    with pytest.raises(TrialAttrError, match=repr(next(iter(attrs)))):
        check_attrs(attrs)


def test_check_attrs_accepts_the_types_and_null():
    attrs = {
        ATTR_SEED: 3,
        ATTR_KNOBS: {"global_every": 4},
        ATTR_SEEDS: [{"seed": 3}],
        ATTR_CANDIDATE_NAME: None,
        "short_bpb": 2.25,
        "acc@2x": None,
    }
    assert check_attrs(attrs) is attrs


def test_set_trial_attrs_refuses_a_wrong_type_before_writing_any(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    with pytest.raises(TrialAttrError):
        set_trial_attrs(storage, trial._trial_id, {ATTR_KNOBS: {"k": 1}, ATTR_SEED: "x"})
    assert storage.get_trial(trial._trial_id).user_attrs == {}
    set_trial_attrs(storage, trial._trial_id, {ATTR_KNOBS: {"k": 1}, ATTR_SEED: 2})
    assert storage.get_trial(trial._trial_id).user_attrs == {ATTR_KNOBS: {"k": 1}, ATTR_SEED: 2}


def test_trial_attrs_of_reads_typed_fields_and_scores():
    read = TrialAttrs.of(
        {ATTR_SEED: 5, ATTR_CANDIDATE_NAME: 12, ATTR_REPEATS: 2, "short_bpb": 2, "acc@2x": None}
    )
    assert read.seed == 5 and read.repeats == 2
    assert read.candidate_name is None  # written with the wrong type: not trusted
    assert read.scores == {"short_bpb": 2.0}
    assert read.knobs is None


def test_trial_attrs_of_reads_an_older_trials_niah_and_attention_mass():
    read = TrialAttrs.of({ATTR_NIAH: {"1x": 0.5}, ATTR_ATTENTION_MASS: [0.1]})
    assert read.niah == {"1x": 0.5}
    assert read.attention_mass is None  # not a dict: not trusted


def test_trial_attrs_pick_carries_the_keys_that_have_a_value():
    read = TrialAttrs.of({ATTR_PRESET: "rope", ATTR_CANDIDATE_NAME: None, ATTR_SEED: 3})
    assert read.pick((ATTR_PRESET, ATTR_CANDIDATE_NAME)) == {ATTR_PRESET: "rope"}


@pytest.fixture
def waiting_trial(tmp_path):
    """A SQLite study through ropenope's storage with one queued (WAITING) trial."""
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({})
    return storage, study


def test_storage_create_key_of_the_wrong_type_is_refused_before_any_row(waiting_trial, monkeypatch):
    storage, study = waiting_trial
    monkeypatch.setattr(search.storage, "_new_key", lambda: 7)
    with pytest.raises(TrialAttrError, match=repr(ATTR_CREATE_KEY)):
        storage.create_new_trial(study._study_id)
    assert [t.state for t in storage.get_all_trials(study._study_id)] == [TrialState.WAITING]


def test_storage_claim_key_of_the_wrong_type_is_refused_before_the_claim(
    waiting_trial, monkeypatch
):
    storage, study = waiting_trial
    (queued,) = storage.get_all_trials(study._study_id)
    monkeypatch.setattr(search.storage, "_new_key", lambda: 7)
    with pytest.raises(TrialAttrError, match=repr(ATTR_CLAIM_KEY)):
        storage.set_trial_state_values(queued._trial_id, TrialState.RUNNING)
    (after,) = storage.get_all_trials(study._study_id)
    assert after.state == TrialState.WAITING
    assert TrialAttrs.of(after.user_attrs).claim_key is None
    assert TrialAttrs.of(after.user_attrs).create_key is not None  # written by enqueue


# Optuna's own system attribute (the params ``enqueue_trial`` fixed), read by the Optuna
# adapter: not a key of ropenope's trial record.
_NOT_OUR_RECORD = {("search/optuna_adapter.py", "_FIXED_PARAMS")}


def _raw_attr_reads(path: Path, rel: str | None = None) -> list[str]:
    """The places in ``path`` that read a trial attribute out of a raw dict by key:
    ``x.user_attrs[k]``, ``x.user_attrs.get(k)``, ``k in x.user_attrs`` (and the same
    on ``system_attrs``), and ``d[ATTR_*]``, ``d.get(ATTR_*)``, ``ATTR_* in d`` on any
    dict. A study's attributes (``STUDY_ATTR_*`` keys) are not a trial's record."""
    rel = rel if rel is not None else str(path.relative_to(ROOT))

    def is_raw(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr in ("user_attrs", "system_attrs")

    def key_name(node: ast.AST | None) -> str:
        return node.id if isinstance(node, ast.Name) else ""

    def exempt(node: ast.AST | None) -> bool:
        name = key_name(node)
        return name.startswith("STUDY_ATTR_") or (rel, name) in _NOT_OUR_RECORD

    tree = ast.parse(path.read_text())
    aliases: set[str] = set()  # names bound to a raw dict: ``attrs = trial.user_attrs``
    key_lists: set[str] = set()  # names bound to keys: ``CARRIED = (ATTR_A, ATTR_B)``
    loop_keys: set[str] = set()  # ``for key in (ATTR_A, ATTR_B)``, ``for key in CARRIED``

    def lists_keys(node: ast.AST) -> bool:
        if isinstance(node, ast.Tuple | ast.List):
            return any(key_name(e).startswith("ATTR_") for e in node.elts)
        return key_name(node) in key_lists

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            value = node.value
            if isinstance(value, ast.Call) and value.args:  # dict(trial.user_attrs)
                value = value.args[0]
            if isinstance(target, ast.Name) and value is not None and is_raw(value):
                aliases.add(target.id)
            if isinstance(target, ast.Name) and value is not None and lists_keys(value):
                key_lists.add(target.id)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.For)
            and isinstance(node.target, ast.Name)
            and lists_keys(node.iter)
        ):
            loop_keys.add(node.target.id)

    def is_raw_or_alias(node: ast.AST) -> bool:
        return is_raw(node) or key_name(node) in aliases

    def trial_key(node: ast.AST | None) -> bool:
        name = key_name(node)
        return name.startswith("ATTR_") or name in loop_keys

    hits = []
    for node in ast.walk(tree):
        read = False
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            read = (is_raw_or_alias(node.value) and not exempt(node.slice)) or trial_key(node.slice)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            key = node.args[0] if node.args else None
            if node.func.attr == "get":
                read = (is_raw_or_alias(node.func.value) and not exempt(key)) or trial_key(key)
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            raw = is_raw_or_alias(node.comparators[0]) and not exempt(node.left)
            read = raw or trial_key(node.left)
        if read:
            hits.append(f"{rel}:{node.lineno}: {ast.unparse(node)[:80]}")
    return hits


def test_trial_attrs_no_module_reads_a_raw_trial_attribute_by_key():
    """Every reader of a trial's attributes goes through :class:`TrialAttrs` (one typed
    record, one place that decides what a missing or mistyped value reads as)."""
    hits = [
        hit
        for package in ("space", "workers", "tracking", "search")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "space" / "trial_attrs.py"
        for hit in _raw_attr_reads(path)
    ]
    assert not hits, "\n".join(hits)


def test_raw_attr_scan_finds_each_pattern_and_not_the_typed_reads(tmp_path):
    source = tmp_path / "reader.py"
    source.write_text(
        """
a = t.user_attrs["knobs"]
b = t.user_attrs.get(ATTR_SEED)
c = ATTR_PRESET in t.user_attrs
d = t.system_attrs.get("fixed_params")
attrs = trial.user_attrs
e = attrs.get("seed")
f = row.get(ATTR_SEED)
for key in (ATTR_PRESET, ATTR_CANDIDATE_NAME):
    g = below[key]
KEYS = (ATTR_PRESET,)
for k in KEYS:
    h = src.get(k)
fine = study.user_attrs.get(STUDY_ATTR_CONFIG)
fine = TrialAttrs.of(t.user_attrs).seed
fine = dict(t.user_attrs)
out[ATTR_SEED] = 3
"""
    )
    hits = _raw_attr_reads(source, rel="reader.py")
    assert sorted(int(h.split(":")[1]) for h in hits) == [2, 3, 4, 5, 7, 8, 10, 13]
