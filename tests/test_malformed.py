"""Every malformed sweep file gets one clear error and nothing else (issue 11).

The corpus (``tests/malformed.py``) runs through ``ropenope space`` in this process: exit
status 2, no traceback, the key path or the cause in the message, the message short
(echoed values are cut) and bounded time (a hang guard, not a speed goal). A few cases also
run as a real subprocess, where a traceback would show on stderr.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from malformed import CASES, VALID, WARNING_CASES, Case, _dump

from search.cli import main

MAX_MESSAGE_CHARS = 1500
HANG_GUARD_S = 20.0


def _write(tmp_path: Path, case: Case) -> Path:
    path = tmp_path / f"{case.name}.yaml"
    if isinstance(case.content, bytes):
        path.write_bytes(case.content)
    else:
        path.write_text(case.content, encoding="utf-8")
    return path


def test_malformed_corpus_is_large():
    assert len(CASES) >= 100
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_malformed_file_exits_2_with_the_key_path(case, tmp_path, capsys):
    path = _write(tmp_path, case)
    started = time.monotonic()
    status = main(["space", str(path)])
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert status == 2, f"exit {status}; stdout {out[:300]!r}"
    assert out == ""
    assert "Traceback" not in err
    assert case.expect in err, err[:500]
    assert len(err) <= MAX_MESSAGE_CHARS, f"{len(err)} characters"
    assert elapsed < HANG_GUARD_S


@pytest.mark.parametrize(
    "name", ["alias_bomb", "latin1", "duplicate_nested", "deep_nesting", "int_5000_digits"]
)
def test_malformed_file_in_a_real_process_prints_one_message(name, tmp_path):
    case = next(c for c in CASES if c.name == name)
    path = _write(tmp_path, case)
    done = subprocess.run(
        [sys.executable, "-m", "search", "space", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and case.expect in done.stderr


@pytest.mark.parametrize("case", WARNING_CASES, ids=lambda c: c.name)
def test_suspicious_file_loads_with_its_warning(case, tmp_path, capsys):
    """A preset's window past train.seq_len gets the warning a searched one gets."""
    assert main(["space", str(_write(tmp_path, case))]) == 0
    err = capsys.readouterr().err
    assert case.expect in err and "Traceback" not in err, err[:500]


def test_valid_corpus_base_loads(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text(_dump(VALID))
    assert main(["space", str(path)]) == 0


def test_window_not_below_seq_len_is_a_warning_not_an_error(tmp_path, capsys):
    # Legal (the layer is windowed only past the training length), so never silent.
    doc = {**VALID, "space": {**VALID["space"], "local_window": {"choice": [16, 64, 10**9]}}}
    path = tmp_path / "wide.yaml"
    path.write_text(_dump(doc))
    assert main(["space", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: space.local_window" in err and "train.seq_len=64" in err
    assert main(["space", str(path), "--json"]) == 0
    assert '"space.local_window"' in capsys.readouterr().out


def test_billion_value_int_range_is_never_materialised(tmp_path, capsys):
    # A legal int range of 10^9 windows validates in bounded time and memory (the grid
    # sampler, which would visit them all, refuses it: see the corpus).
    doc = {**VALID, "space": {**VALID["space"], "local_window": {"int": [1, 10**9]}}}
    path = tmp_path / "range.yaml"
    path.write_text(_dump(doc))
    started = time.monotonic()
    assert main(["space", str(path)]) == 0
    assert time.monotonic() - started < HANG_GUARD_S
