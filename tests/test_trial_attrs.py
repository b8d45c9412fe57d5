"""The trial attributes' one owner (space.trial_attrs): keys, types, checks, typed reads."""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import optuna
import pytest

from search.bookkeeping import set_trial_attrs
from space.names import STEPS, TRAIN_SECONDS, VAL_BPB, is_score_name
from space.trial_attrs import (
    ATTR_ATTENTION_MASS,
    ATTR_CANDIDATE_NAME,
    ATTR_KNOBS,
    ATTR_NIAH,
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

