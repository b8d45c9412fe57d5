"""Hypotheses as data: what a sweep is meant to find out, validated with the sweep file.

A sweep file states its hypotheses in a ``hypotheses:`` section, or points at a file
of them with ``hypotheses_from: FILE`` (relative to the sweep file). Each hypothesis
compares two groups of candidates, ``a`` and ``b``::

    hypotheses:
      groups:                                   # optional: named selectors
        hybrid: {preset: rnope_swa, where: {global: {position: nope},
                                            local: {position: rope, windowed: true}}}
      hypotheses:
        - name: hybrid_beats_rope_long
          statement: The hybrid beats RoPE on retrieval beyond the training length.
          a: hybrid                             # a group's name, or a preset's
          b: {preset: rope}
          quantity: long_acc                    # any score a trial reports
          direction: greater                    # a - b > margin ("less": a - b < margin)
          margin: 0                             # or {relative: 0.02, of: b}
          test: welch                           # welch | paired (by seed) | exact

A side (``a`` / ``b``) picks candidates by ``preset`` (the candidate enqueued under that
name), by ``where`` (a :class:`space.predicates.Predicate` on its layers), or both (the
preset if the study ran it, else the candidates ``where`` selects stand in). Exactly one
candidate must be selected unless the side says what a claim about several means:
``candidates: every`` (the claim holds for every selected candidate: an
intersection-union test, supported only if each candidate's comparison supports it,
contradicted if one contradicts it) or ``candidates: mean`` (the group on average: one
value per candidate, its mean over seeds, compared as independent observations). Runs of
several candidates are never pooled as if they were seeds of one. A side may carry its own ``quantity`` (the two sides of a paired
within-candidate comparison, e.g. ``acc@1x`` against ``{mean: acc, from: 4}``) and, for
attention-mass quantities, the ``layers`` whose mass it reads (a
:class:`space.predicates.LayerMatch`; default every layer).

Quantities: a score name (``long_acc``, ``short_bpb``, ``acc@4x``, ``extrap_bpb@4x``,
``kv_cache_bytes``, ...); ``{mass: needle, at: 1x}`` (the fraction of attention on a
prompt segment at a length); ``{mean: acc, from: 4, to: 8}`` (per run, the mean of
``acc@Nx`` over the lengths N in [from, to] the study scored); ``{diff: [Q1, Q2]}`` (per
run, Q1 - Q2).

A hypothesis with ``measures: [...]`` (each a comparison as above, with a ``label``)
says how they combine, ``combine: any | all``:

- ``any`` (a claim with "or": "accuracy or loss degrades"): supported when one measure
  supports it, contradicted only when every measure contradicts it;
- ``all`` (a claim with "and"): supported only when every measure supports it,
  contradicted when one contradicts it;

undecided otherwise. Either way each measure spends its share of the error budget
(:class:`tracking.stats.ErrorBudget`).

**Competence gate**, at the level of a side: a comparison whose quantity reads
retrieval beyond the training length T (``long_acc``, ``acc@Nx``, ``token_acc@Nx`` or
``answer_nll@Nx`` with N > 1, ``long_answer_nll``, a mean over such lengths, attention
mass beyond 1x; bare or of one family, ``multiquery/long_acc``) asks whether each
side learned the task at T: a run passes when its exact-match accuracy at T *of the
same family* (``acc@1x``, ``multiquery/acc@1x``) is at least ``min`` (0.9). Each side's
pass count is reported; a side that passes on fewer than ``share`` (0.75) of its seeds
makes the comparison **invalid** ("the baseline does not learn the task at this
budget; raise the budget"): its lucky seeds are not kept to rescue it. Otherwise every
run is analysed (intention to treat, ``runs: all``, the default); ``runs: passing``
leaves out the runs that fail the gate instead (an explicit per-run filter: it selects
on an outcome the layout may cause). ``gate: {min: 0.8, share: 0.5}`` (or ``{score:
..., ...}``) changes it, ``gate: false`` turns it off, ``gate: true`` forces it on. The
gate score must be scored by the sweep (checked with the sweep file).

What needs the study (a selector that matches no candidate, a score no trial reports, a
paired test without common seeds) is found when the hypotheses are evaluated and
reported as an undecided verdict naming the hypothesis and the field, not here. Reading
the section, the file and the checks against the sweep's scoring are in
:mod:`space.hypothesis_files`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from space.names import (
    LAYOUT_SCORES,
    LONG_ACC,
    LONG_ANSWER_NLL,
    is_score_name,
    multiple_of,
    split_task_score,
    task_score,
)
from space.predicates import LayerMatch, Predicate
from space.tasks import SEGMENTS

__all__ = ["Gate", "Hypothesis", "Margin", "Measure", "Quantity", "Side"]

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"  # also an MLflow tag key: hypothesis.<name>
ACC_AT_1X = "acc@1x"  # the competence gate's score: exact-match accuracy at T


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, serialize_by_alias=True
    )


def _length_key(value: Any) -> str:
    """``1``, ``"1x"`` -> ``"1x"`` (the key of a length in the attention-mass records)."""
    text = str(value)
    m = multiple_of("@" + (text if text.endswith("x") else text + "x"), "@")
    if m is None or m < 1 or isinstance(value, bool):
        raise ValueError(f"expected a length multiple like 1x or 4x, got {value!r}")
    return f"{m}x"


class Quantity(_Model):
    """One number per run: a score, an attention mass, a mean over lengths or a
    difference of two quantities. Exactly one of ``score``, ``mass``, ``mean``,
    ``diff`` is set."""

    score: str | None = None
    mass: str | None = None  # a prompt segment (space.tasks.SEGMENTS)
    at: str | None = None
    mean: Literal["acc", "extrap_bpb"] | None = None
    from_: int | None = Field(default=None, alias="from", ge=1)
    to: int | None = Field(default=None, ge=1)
    diff: tuple[Quantity, Quantity] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"score": value} if isinstance(value, str) else value

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, value: Any) -> Any:
        return None if value is None else _length_key(value)

    @model_validator(mode="after")
    def _one_form(self) -> Quantity:
        forms = [f for f in ("score", "mass", "mean", "diff") if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError(
                "a quantity is a score name, {mass: SEGMENT, at: 1x}, {mean: acc, from: N} "
                f"or {{diff: [Q1, Q2]}}; got {forms or 'none of them'}"
            )
        if self.score is not None and not is_score_name(self.score):
            raise ValueError(f"unknown score {self.score!r}")
        if self.mass is not None and self.mass not in SEGMENTS:
            raise ValueError(f"unknown segment {self.mass!r}; expected one of {list(SEGMENTS)}")
        if self.at is not None and self.mass is None:
            raise ValueError("'at' belongs to a mass quantity")
        if self.mass is not None and self.at is None:
            raise ValueError(f"say at which length: {{mass: {self.mass}, at: 1x}}")
        if (self.from_ is not None or self.to is not None) and self.mean is None:
            raise ValueError("'from' and 'to' belong to a mean quantity")
        if self.mean is not None and self.from_ is None:
            raise ValueError(f"say from which length: {{mean: {self.mean}, from: 4}}")
        if self.to is not None and self.from_ is not None and self.to < self.from_:
            raise ValueError(f"to {self.to} < from {self.from_}")
        return self

    def reads_beyond_t(self) -> bool:
        """Whether this reads retrieval beyond the training length (gated by default):
        exact-match or graded (token accuracy, answer NLL), of any family."""
        if self.diff is not None:
            return any(q.reads_beyond_t() for q in self.diff)
        if self.score is not None:
            _, base = split_task_score(self.score)
            if base in (LONG_ACC, LONG_ANSWER_NLL):
                return True
            for prefix in ("acc@", "token_acc@", "answer_nll@"):
                m = multiple_of(base, prefix)
                if m is not None and m > 1:
                    return True
            return False
        if self.mass is not None:
            return self.at != "1x"
        return self.mean == "acc" and (self.to is None or self.to > 1)

    def task_family(self) -> str | None:
        """The task family a retrieval score reads (``multiquery`` for
        ``multiquery/long_acc``); None for the primary family or a non-task quantity."""
        if self.diff is not None:
            families = {q.task_family() for q in self.diff} - {None}
            return families.pop() if len(families) == 1 else None
        if self.score is None:
            return None
        return split_task_score(self.score)[0]

    def multiple_range(self) -> tuple[int, int | None]:
        return (self.from_ or 1, self.to)

    def describe(self) -> str:
        if self.score is not None:
            return self.score
        if self.mass is not None:
            return f"{self.mass} mass at {self.at} T"
        if self.mean is not None:
            upto = f" to {self.to}x" if self.to is not None else ""
            return f"mean {self.mean}@Nx from {self.from_}x{upto}"
        left, right = self.diff
        return f"({left.describe()} - {right.describe()})"


class Margin(_Model):
    """The threshold on ``a - b``: absolute, or a fraction of one side's mean."""

    value: float = 0.0
    relative_to: Literal["a", "b"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"value": float(value)}
        if isinstance(value, Mapping) and "relative" in value:
            unknown = sorted(set(value) - {"relative", "of"})
            if unknown:
                raise ValueError(f"a relative margin is {{relative: x, of: a|b}}; got {unknown}")
            rel = value["relative"]
            if isinstance(rel, bool) or not isinstance(rel, int | float):
                raise ValueError(f"relative must be a number, got {rel!r}")
            return {"value": float(rel), "relative_to": value.get("of", "b")}
        return value

    def describe(self) -> str:
        if self.relative_to is None:
            return f"{self.value:g}"
        return f"{self.value:+.3g} x mean({self.relative_to})"


class Gate(_Model):
    """A run learned the task when its ``score`` (None: ``acc@1x`` of the family the
    compared quantity reads) is at least ``min``; a side must pass on at least ``share``
    of its seeds, else the comparison is invalid. ``runs``: ``all`` analyses every run
    of a side that passes (intention to treat), ``passing`` only its passing runs."""

    score: str | None = None
    min: float = 0.9
    share: float = Field(default=0.75, ge=0.0, le=1.0)
    runs: Literal["all", "passing"] = "all"

    @field_validator("score")
    @classmethod
    def _score(cls, value: str | None) -> str | None:
        if value is not None and not is_score_name(value):
            raise ValueError(f"unknown score {value!r}")
        return value


class Side(_Model):
    """One group of a comparison; see the module docstring."""

    preset: str | None = None
    where: Predicate | None = None
    candidates: Literal["one", "every", "mean"] = "one"
    quantity: Quantity | None = None
    layers: LayerMatch | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_pool(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "pool" in value:
            raise ValueError(
                "pool is gone (it treated several candidates' runs as seeds of one): say "
                "candidates: every (the claim holds for each) or candidates: mean (the "
                "group on average, over candidate means)"
            )
        return value

    @model_validator(mode="after")
    def _selects(self) -> Side:
        if self.preset is None and self.where is None:
            raise ValueError("select candidates by preset, by where, or both")
        return self

    def describe(self) -> str:
        if self.preset is not None and self.where is not None:
            text = f"preset {self.preset} (else: {self.where.describe()})"
        elif self.preset is not None:
            text = f"preset {self.preset}"
        else:
            text = f"candidates with {self.where.describe()}"
        if self.candidates != "one":
            text += f", {self.candidates} candidate" + ("" if self.candidates == "every" else "s")
        if self.layers is not None:
            text += f" [layers: {self.layers.describe()}]"
        return text


Test = Literal["welch", "paired", "exact"]


class Measure(_Model):
    """One comparison of ``a`` and ``b``."""

    label: str | None = None
    a: Side
    b: Side
    quantity: Quantity | None = None
    direction: Literal["greater", "less"]
    margin: Margin = Margin()
    test: Test = "welch"
    gate: Gate | bool | None = None

    @model_validator(mode="after")
    def _complete(self) -> Measure:
        for side in ("a", "b"):
            if self.quantity is None and getattr(self, side).quantity is None:
                raise ValueError(f"no quantity for side {side}: give quantity (or {side}.quantity)")
        if self.test == "paired" and "mean" in (self.a.candidates, self.b.candidates):
            raise ValueError("a paired test pairs runs by seed: candidate means have none")
        if self.test == "exact":
            for side in ("a", "b"):
                q = self.quantity_of(side)
                if q.score not in LAYOUT_SCORES:
                    raise ValueError(
                        f"test exact is for scores computed from the layout ({list(LAYOUT_SCORES)}"
                        f"), which have no seed noise; {q.describe()} varies by seed"
                    )
        return self

    def quantity_of(self, side: str) -> Quantity:
        own = getattr(self, side).quantity
        return own if own is not None else self.quantity

    def effective_gate(self) -> Gate | None:
        """The competence gate this comparison applies (see the module docstring), its
        score resolved to ``acc@1x`` of the family the quantity reads."""
        if isinstance(self.gate, Gate):
            gate = self.gate
        elif self.gate is None:
            beyond = any(self.quantity_of(s).reads_beyond_t() for s in ("a", "b"))
            gate = Gate() if beyond else None
        else:
            gate = Gate() if self.gate else None
        if gate is None or gate.score is not None:
            return gate
        families = {self.quantity_of(s).task_family() for s in ("a", "b")} - {None}
        family = families.pop() if len(families) == 1 else None
        score = ACC_AT_1X if family is None else task_score(family, ACC_AT_1X)
        return gate.model_copy(update={"score": score})

    def describe(self) -> str:
        qa, qb = self.quantity_of("a"), self.quantity_of("b")
        what = qa.describe() if qa == qb else f"{qa.describe()} (a) vs {qb.describe()} (b)"
        sign = ">" if self.direction == "greater" else "<"
        return f"{what}: a - b {sign} {self.margin.describe()} ({self.test})"


class Hypothesis(_Model):
    """A named statement and the comparisons that decide it."""

    name: str = Field(pattern=NAME_PATTERN)
    statement: str = Field(min_length=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    measures: tuple[Measure, ...]
    # How several measures make one verdict (see the module docstring); required with
    # more than one measure: "or" and "and" claims are judged differently.
    combine: Literal["any", "all"] | None = None

    @model_validator(mode="after")
    def _measured(self) -> Hypothesis:
        if not self.measures:
            raise ValueError("a hypothesis needs a comparison (a, b, quantity, direction)")
        if len(self.measures) > 1 and self.combine is None:
            raise ValueError(
                "with several measures say how they combine: combine: any (one measure "
                "suffices, a claim with 'or') or combine: all (every measure must hold)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
