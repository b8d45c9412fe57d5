"""A small declarative language that picks candidates by their per-layer specs.

Hypotheses (:mod:`space.hypotheses`) select the candidates they compare by preset name
or by a predicate on their layers, never by knob strings: two sweep files that spell
the same architecture differently still select the same models.

A **layer match** is a mapping of :class:`space.layers.LayerSpec` fields, every one of
which must hold for a layer: ``kind`` (local | global), ``position`` (rope | nope),
``window`` (tokens; ``null`` = full attention), ``windowed`` (true | false),
``rope_base``, ``qk_norm`` (none | pre_rope | post_rope), ``temperature`` (true:
Llama-4 query temperature scaling), ``mixer`` (softmax | gated_deltanet | mamba2 | kda) and
``output_gate`` (none | headwise | elementwise). A value is an exact value, a list of allowed
values, or a range ``{min: a, max: b}`` (inclusive, either end optional).

A **predicate** holds when all its clauses hold:

``all: MATCH``              every layer matches
``global: MATCH``           there is a global layer, and every global layer matches
``local: MATCH``            there is a local layer, and every local layer matches
``any: MATCH`` / ``none``   at least one / no layer matches
``layers``, ``global_layers``, ``local_layers``: a count (exact, list or range)
``local_per_global``        local layers per global layer (none global: never holds)
``any_of: [PREDICATE...]``  at least one holds;  ``not: PREDICATE``  it does not hold

Example, the paper's hybrid: ``{global: {position: nope}, local: {position: rope,
windowed: true}, all: {qk_norm: none}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from space.layers import LayerSpec

__all__ = ["LayerMatch", "NumberMatch", "Predicate"]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, serialize_by_alias=True
    )


class NumberMatch(_Model):
    """An exact number, one of several, or an inclusive range; ``exact`` may be None
    (e.g. ``window: null``: full attention)."""

    exact: float | None = None
    one_of: tuple[float | None, ...] | None = None
    min: float | None = None
    max: float | None = None
    is_exact: bool = False

    @classmethod
    def parse(cls, value: Any) -> NumberMatch:
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            return cls(exact=None if value is None else float(value), is_exact=True)
        if isinstance(value, list | tuple):
            items = []
            for v in value:
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise ValueError(f"expected numbers (or null) in the list, got {v!r}")
                items.append(None if v is None else float(v))
            if not items:
                raise ValueError("an empty list matches nothing")
            return cls(one_of=tuple(items))
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"min", "max"})
            if unknown or not value:
                raise ValueError(f"a range is {{min: a, max: b}}; got keys {sorted(value)}")
            bounds = {}
            for key in ("min", "max"):
                v = value.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise ValueError(f"range {key} must be a number, got {v!r}")
                bounds[key] = None if v is None else float(v)
            if None not in bounds.values() and bounds["min"] > bounds["max"]:
                raise ValueError(f"range min {bounds['min']:g} > max {bounds['max']:g}")
            return cls(**bounds)
        raise ValueError(f"expected a number, a list of numbers or {{min, max}}, got {value!r}")

    @model_serializer
    def _as_written(self) -> Any:
        """Dumped as the user writes it: a value, a list, or {min, max}."""
        if self.is_exact:
            return self.exact
        if self.one_of is not None:
            return list(self.one_of)
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}

    def matches(self, value: float | None) -> bool:
        if self.is_exact:
            return value == self.exact if value is not None else self.exact is None
        if self.one_of is not None:
            return value in self.one_of
        if value is None:
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        def num(x: float | None) -> str:
            return "null" if x is None else f"{x:g}"

        if self.is_exact:
            return num(self.exact)
        if self.one_of is not None:
            return "one of " + ", ".join(num(x) for x in self.one_of)
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)


def _number_match(value: Any) -> Any:
    return value if isinstance(value, NumberMatch) else NumberMatch.parse(value)


def _choices(value: Any) -> Any:
    if value is None:
        return None  # no condition
    return tuple(value) if isinstance(value, list | tuple) else (value,)


class LayerMatch(_Model):
    """Conditions on one layer's spec; every condition given must hold."""

    kind: tuple[Literal["local", "global"], ...] | None = None
    position: tuple[Literal["rope", "nope"], ...] | None = None
    window: NumberMatch | None = None
    windowed: bool | None = None
    rope_base: NumberMatch | None = None
    qk_norm: tuple[Literal["none", "pre_rope", "post_rope"], ...] | None = None
    temperature: bool | None = None
    mixer: tuple[Literal["softmax", "gated_deltanet", "mamba2", "kda"], ...] | None = None
    output_gate: tuple[Literal["none", "headwise", "elementwise"], ...] | None = None

    _choice = field_validator("kind", "position", "qk_norm", "mixer", "output_gate", mode="before")(
        lambda cls, v: _choices(v)
    )
    _number = field_validator("window", "rope_base", mode="before")(lambda cls, v: _number_match(v))

    def matches(self, layer: LayerSpec) -> bool:
        if self.kind is not None and layer.kind.value not in self.kind:
            return False
        if self.position is not None and layer.position.value not in self.position:
            return False
        if self.window is not None and not self.window.matches(layer.window_tokens):
            return False
        if self.windowed is not None and (layer.window_tokens is not None) != self.windowed:
            return False
        if self.rope_base is not None and not self.rope_base.matches(layer.rope_base):
            return False
        if self.qk_norm is not None and layer.qk_norm.value not in self.qk_norm:
            return False
        if self.mixer is not None and layer.mixer.value not in self.mixer:
            return False
        if self.output_gate is not None and layer.output_gate.value not in self.output_gate:
            return False
        return self.temperature is None or (layer.temperature is not None) == self.temperature

    def describe(self) -> str:
        parts = []
        for name in ("kind", "position", "qk_norm", "mixer", "output_gate"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name} {'/'.join(value)}")
        for name in ("window", "rope_base"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name} {value.describe()}")
        if self.windowed is not None:
            parts.append("windowed" if self.windowed else "full attention")
        if self.temperature is not None:
            parts.append("temperature scaling" if self.temperature else "no temperature scaling")
        return ", ".join(parts) or "any layer"


class Predicate(_Model):
    """Conditions on a candidate's whole layer stack; every clause given must hold."""

    all: LayerMatch | None = None
    global_: LayerMatch | None = Field(default=None, alias="global")
    local: LayerMatch | None = None
    any: LayerMatch | None = None
    none: LayerMatch | None = None
    layers: NumberMatch | None = None
    global_layers: NumberMatch | None = None
    local_layers: NumberMatch | None = None
    local_per_global: NumberMatch | None = None
    any_of: tuple[Predicate, ...] | None = None
    not_: Predicate | None = Field(default=None, alias="not")

    _number = field_validator(
        "layers", "global_layers", "local_layers", "local_per_global", mode="before"
    )(lambda cls, v: _number_match(v))
    _list = field_validator("any_of", mode="before")(
        lambda cls, v: tuple(v) if isinstance(v, list) else v
    )

    def matches(self, layers: Sequence[LayerSpec]) -> bool:
        globals_ = [s for s in layers if s.kind.value == "global"]
        locals_ = [s for s in layers if s.kind.value == "local"]
        if self.all is not None and not all(self.all.matches(s) for s in layers):
            return False
        for group, match in ((globals_, self.global_), (locals_, self.local)):
            if match is not None and not (group and all(match.matches(s) for s in group)):
                return False
        if self.any is not None and not any(self.any.matches(s) for s in layers):
            return False
        if self.none is not None and any(self.none.matches(s) for s in layers):
            return False
        counts = (
            (self.layers, layers),
            (self.global_layers, globals_),
            (self.local_layers, locals_),
        )
        for match, group in counts:
            if match is not None and not match.matches(float(len(group))):
                return False
        if self.local_per_global is not None:
            ratio = len(locals_) / len(globals_) if globals_ else None
            if not self.local_per_global.matches(ratio):
                return False
        if self.any_of is not None and not any(p.matches(layers) for p in self.any_of):
            return False
        return self.not_ is None or not self.not_.matches(layers)

    def describe(self) -> str:
        parts = []
        for label, match in (
            ("every layer", self.all),
            ("global layers", self.global_),
            ("local layers", self.local),
            ("some layer", self.any),
            ("no layer", self.none),
        ):
            if match is not None:
                parts.append(f"{label}: {match.describe()}")
        for label, match in (
            ("layers", self.layers),
            ("global layers", self.global_layers),
            ("local layers", self.local_layers),
            ("local per global", self.local_per_global),
        ):
            if match is not None:
                parts.append(f"{label} {match.describe()}")
        if self.any_of is not None:
            parts.append("any of (" + "; ".join(p.describe() for p in self.any_of) + ")")
        if self.not_ is not None:
            parts.append(f"not ({self.not_.describe()})")
        return "; ".join(parts) or "any candidate"
