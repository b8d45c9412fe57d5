"""Reading hypotheses: the ``hypotheses:`` section of a sweep file, a ``hypotheses_from``
file (and where it is looked up), the shipped paper hypotheses, and the checks of a
sweep's hypotheses against its own presets and scoring. Every problem is reported with
its path, ``hypotheses.<name>.<field>`` (the models are in :mod:`space.hypotheses`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from space.errors import ConfigError
from space.hypotheses import NAME_PATTERN, Hypothesis, Quantity
from space.names import LONG_ACC, multiple_of, split_task_score
from space.yaml_io import frozen, read_yaml_file

__all__ = [
    "PAPER_FILE",
    "check_hypotheses",
    "load_hypotheses",
    "parse_hypotheses",
    "resolve_hypotheses_file",
    "shipped_hypotheses",
    "sweep_hypotheses",
]

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "configs"
PAPER_FILE = "hypotheses/paper.yaml"

# -- parsing -------------------------------------------------------------------------

_HYPOTHESIS_KEYS = ("name", "statement", "confidence", "combine", "measures")


def _problems(err: ValidationError, prefix: str) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p != "function-after[_selects(), Side]")
        path = f"{prefix}.{loc}" if loc else prefix
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = re.sub(r"^(Value|Assertion) error, ", "", e["msg"])
        out.append((path, msg))
    return out


def _side(raw: Any, groups: Mapping[str, Any], path: str) -> Any:
    """A group's name or a preset's name -> its mapping; ``{group: g, ...}`` -> the
    group's mapping with the other keys on top."""
    if isinstance(raw, str):
        return dict(groups[raw]) if raw in groups else {"preset": raw}
    if isinstance(raw, Mapping) and "group" in raw:
        name = raw["group"]
        if name not in groups:
            raise ConfigError.at(f"{path}.group", f"no group {name!r}; defined: {list(groups)}")
        return {**groups[name], **{k: v for k, v in raw.items() if k != "group"}}
    return raw


def _measure(raw: Mapping[str, Any], groups: Mapping[str, Any], path: str) -> dict[str, Any]:
    out = dict(raw)
    for side in ("a", "b"):
        if side in out:
            out[side] = _side(out[side], groups, f"{path}.{side}")
    return out


def parse_hypotheses(raw: Any, path: str = "hypotheses") -> tuple[Hypothesis, ...]:
    """Validate a ``hypotheses:`` section (a list, or ``{groups, hypotheses}``). Raises
    ConfigError with every problem, each at ``hypotheses.<name>.<field>``."""
    groups: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    if isinstance(raw, Mapping):
        unknown = sorted(set(raw) - {"groups", "hypotheses"})
        if unknown:
            problems.append((f"{path}.{unknown[0]}", "unknown key; expected groups, hypotheses"))
        groups_raw = raw.get("groups") or {}
        if not isinstance(groups_raw, Mapping):
            problems.append((f"{path}.groups", "expected a mapping {name: selector}"))
            groups_raw = {}
        for name, value in groups_raw.items():
            if not re.match(NAME_PATTERN, str(name)):
                problems.append((f"{path}.groups.{name}", "a group name is letters, digits, _.-"))
            elif not isinstance(value, Mapping):
                problems.append((f"{path}.groups.{name}", "expected {preset, where, ...}"))
            else:
                groups[str(name)] = dict(value)
        items = raw.get("hypotheses")
    else:
        items = raw
    if not isinstance(items, list):
        problems.append((path, "expected a list of hypotheses (or {groups, hypotheses})"))
        raise ConfigError(problems)

    out: list[Hypothesis] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            problems.append((f"{path}[{i}]", "expected a mapping {name, statement, ...}"))
            continue
        name = item.get("name")
        where = f"{path}.{name}" if isinstance(name, str) and name else f"{path}[{i}]"
        try:
            fields = {k: item[k] for k in _HYPOTHESIS_KEYS if k in item}
            inline = {k: v for k, v in item.items() if k not in _HYPOTHESIS_KEYS}
            if "measures" in item:
                if inline:
                    first = sorted(inline)[0]
                    problems.append(
                        (f"{where}.{first}", "with measures, each measure holds its comparison")
                    )
                    continue
                if not isinstance(item["measures"], list):
                    problems.append((f"{where}.measures", "expected a list of comparisons"))
                    continue
                fields["measures"] = [
                    _measure(m, groups, f"{where}.measures.{j}") if isinstance(m, Mapping) else m
                    for j, m in enumerate(item["measures"])
                ]
            else:
                fields["measures"] = [_measure(inline, groups, where)]
            hypothesis = Hypothesis.model_validate(frozen(fields))
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        except ValidationError as err:
            found = _problems(err, where)
            if "measures" not in item:  # inline: the measure's fields sit on the hypothesis
                found = [(p.replace(f"{where}.measures.0", where, 1), m) for p, m in found]
            problems.extend(found)
            continue
        if hypothesis.name in seen:
            problems.append((f"{where}.name", f"hypothesis {hypothesis.name!r} named twice"))
            continue
        seen.add(hypothesis.name)
        out.append(hypothesis)
    if problems:
        raise ConfigError(problems)
    return tuple(out)


def sweep_hypotheses(
    raw: Mapping[str, Any], base_dir: Path | None, problems: list[tuple[str, str]]
) -> tuple[Hypothesis, ...]:
    """The ``hypotheses:`` section, or the file ``hypotheses_from`` names."""
    inline, from_file = raw.get("hypotheses"), raw.get("hypotheses_from")
    if inline is not None and from_file is not None:
        problems.append(("hypotheses_from", "give hypotheses: or hypotheses_from:, not both"))
        return ()
    if from_file is not None:
        if not isinstance(from_file, str) or not from_file:
            problems.append(("hypotheses_from", f"expected a file path, got {from_file!r}"))
            return ()
        try:
            path = resolve_hypotheses_file(from_file, base_dir)
            return load_hypotheses(path)
        except ConfigError as err:  # name the file: its problems are not in the sweep file
            at = from_file if err.source is not None else ""
            problems.extend((f"{at}: {p}" if at and p else at or p, m) for p, m in err.problems)
            return ()
    if inline is None:
        return ()
    try:
        return parse_hypotheses(inline)
    except ConfigError as err:
        problems.extend(err.problems)
        return ()


def resolve_hypotheses_file(name: str, base_dir: Path | None) -> Path:
    """Where ``hypotheses_from: name`` points: relative to the sweep file's folder, else
    (a sweep file read back from a study, or run from elsewhere) to the shipped
    ``configs/`` folder, then to ``./configs``. Raises ConfigError naming each place."""
    given = Path(name)
    tried = []
    bases = [base_dir] if base_dir is not None else []
    bases += [SHIPPED_DIR, Path.cwd() / "configs"]
    candidates = [given] if given.is_absolute() else [b / given for b in bases]
    for path in candidates:
        tried.append(str(path))
        if path.is_file():
            return path
    raise ConfigError.at("hypotheses_from", f"no such file (looked for {', '.join(tried)})")


def load_hypotheses(path: str | Path) -> tuple[Hypothesis, ...]:
    """Read a hypotheses file. Raises ConfigError naming the file."""
    path = Path(path)
    raw, _ = read_yaml_file(path)  # the sweep file's hardened YAML dialect; names the file
    try:
        return parse_hypotheses(raw)
    except ConfigError as err:
        raise ConfigError(err.problems, str(path)) from None


def shipped_hypotheses() -> tuple[Hypothesis, ...]:
    """The paper's claims (``configs/hypotheses/paper.yaml``): what a study whose sweep
    file states no hypotheses is reported against."""
    return load_hypotheses(resolve_hypotheses_file(PAPER_FILE, None))


def check_hypotheses(
    hypotheses: Sequence[Hypothesis],
    *,
    presets: Sequence[str],
    lengths: Sequence[int],
    extrap: Sequence[int],
    mass_lengths: Sequence[int],
    attention_mass: bool,
    path: str = "hypotheses",
    families: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """What a sweep file's hypotheses ask that its own scoring or presets cannot give,
    the competence gate's score included (an unscored gate would fail every run)."""
    problems: list[tuple[str, str]] = []
    for h in hypotheses:
        for j, m in enumerate(h.measures):
            where = f"{path}.{h.name}" + (f".measures.{j}" if len(h.measures) > 1 else "")
            gate = m.effective_gate()
            if gate is not None:
                task, base = split_task_score(gate.score)
                if task is not None and families and task not in families:
                    problems.append(
                        (
                            f"{where}.gate.score",
                            f"{gate.score} needs the task family {task!r} in score.tasks "
                            f"{list(families)}",
                        )
                    )
                for msg in _unscored(
                    Quantity(score=base), lengths, extrap, mass_lengths, attention_mass
                ):
                    problems.append((f"{where}.gate.score", msg))
            for side in ("a", "b"):
                s = getattr(m, side)
                if s.preset is not None and s.where is None and s.preset not in presets:
                    problems.append(
                        (
                            f"{where}.{side}.preset",
                            f"preset {s.preset!r} is not in this sweep's presets {list(presets)};"
                            " list it, or give where: to select candidates by their layers",
                        )
                    )
                field = f"{where}.{side}.quantity" if s.quantity else f"{where}.quantity"
                for msg in _unscored(
                    m.quantity_of(side), lengths, extrap, mass_lengths, attention_mass
                ):
                    problems.append((field, msg))
    return list(dict.fromkeys(problems))


def _unscored(
    q: Quantity,
    lengths: Sequence[int],
    extrap: Sequence[int],
    mass_lengths: Sequence[int],
    attention_mass: bool,
) -> list[str]:
    if q.diff is not None:
        return [
            m
            for part in q.diff
            for m in _unscored(part, lengths, extrap, mass_lengths, attention_mass)
        ]
    if q.score is not None:
        acc, bpb = multiple_of(q.score, "acc@"), multiple_of(q.score, "extrap_bpb@")
        if acc is not None and acc not in lengths:
            return [f"{q.score} needs {acc} in score.lengths {list(lengths)}"]
        if bpb is not None and bpb not in extrap:
            return [f"{q.score} needs {bpb} in score.extrap {list(extrap)}"]
        if q.score == LONG_ACC and not any(m > 1 for m in lengths):
            return ["long_acc needs a score.lengths multiple beyond 1"]
        return []
    if q.mass is not None:
        if not attention_mass:
            return ["attention mass is off (score.attention_mass: false)"]
        m = multiple_of("@" + q.at, "@")
        return [] if m in mass_lengths else [f"mass at {q.at} needs {m} in score.mass_lengths"]
    low, high = q.multiple_range()
    scored = lengths if q.mean == "acc" else extrap
    if not any(m >= low and (high is None or m <= high) for m in scored):
        where = "score.lengths" if q.mean == "acc" else "score.extrap"
        return [f"no {q.mean}@Nx between {low}x and {high or 'any'}x in {where} {list(scored)}"]
    return []
