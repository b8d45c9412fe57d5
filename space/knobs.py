"""The knob vocabulary (DESIGN §4) and how each knob is fixed or searched.

A knob in the ``space:`` section of a sweep file is either a plain value (fixed)
or a mapping with exactly one domain key::

    global_every: 4                          # fixed
    local_window: {choice: [32, 64, null]}   # categorical
    kv_heads: {int: [1, 4], step: 1}         # integer range (inclusive)
    global_temperature_scale: {float: [0.05, 0.2]}
    local_rope_base: {log: [1000, 1000000]}  # log-uniform float range
    global_rope_base: {log: [1.0e4, 1.0e6], when: {global_position: rope}}
    rope_fraction: {choice: [0.25, 0.5, 1.0]}  # a fraction in (0, 1]
    layout: {choice: [GLLLLLLL, LLLLLLLG]}   # explicit placement, one letter per layer

``when`` makes a knob conditional: it is sampled only when every named knob has
the given value (or one of a list of values); otherwise it keeps its default.

Every knob is one :class:`Knob` row of :data:`KNOBS`: its kind, default, the StrEnum of
:mod:`space.layers` its values come from, and what a null means. Adding a knob is adding
its row (and using it in :func:`space.expand.expand_layers`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from space.errors import ConfigError
from space.layers import (
    AttentionSink,
    LayerPlacement,
    Mixer,
    OutputGate,
    Position,
    QKNorm,
    QueryTemperature,
    RopeScalingKind,
    RopeType,
    WindowKind,
    layout_problem,
)
from space.yaml_io import echo


class KnobKind(StrEnum):
    """What values a knob takes; drives :func:`check_value` and which ranges it allows."""

    INT = "int"  # a whole number >= 1 (``Knob.minimum``)
    FLOAT = "float"  # a finite real > 0
    WINDOW = "window"  # tokens >= 1, or null: full attention
    ENUM = "enum"  # one of ``Knob.values``
    FRACTION = "fraction"  # a real in (0, 1]
    FACTOR = "factor"  # a real >= 1
    LAYOUT = "layout"  # one letter per layer, G (global) or L (local), or null


@dataclass(frozen=True)
class Knob:
    """One knob of the vocabulary: everything the code knows about it, in one row."""

    name: str
    kind: KnobKind
    default: Any
    doc: str = ""
    enum: type[StrEnum] | None = None  # an ENUM knob's values, from its type in space.layers
    off: str | None = None  # an ENUM knob's value for "absent", when no member stands for it
    nullable: bool = False  # null is a value (full attention, a default decided later)
    null_reads_as: Any = None  # what a null means when it is not a value of its own
    minimum: int = 1  # an INT knob's smallest value

    def __post_init__(self) -> None:
        if (self.kind is KnobKind.ENUM) != (self.enum is not None):
            raise ValueError(f"knob {self.name}: an enum knob, and only one, names its StrEnum")

    @property
    def values(self) -> tuple[str, ...]:
        """An ENUM knob's values, in order (``off`` first); () for the other kinds."""
        if self.enum is None:
            return ()
        return (*((self.off,) if self.off else ()), *(m.value for m in self.enum))


_INT, _FLOAT, _WINDOW, _ENUM = KnobKind.INT, KnobKind.FLOAT, KnobKind.WINDOW, KnobKind.ENUM
_FRACTION, _FACTOR, _LAYOUT = KnobKind.FRACTION, KnobKind.FACTOR, KnobKind.LAYOUT

# The defaults describe the plain Llama-style baseline: every layer global, RoPE, full
# attention, no QK-norm. The knobs after ``kv_heads`` came later; at their defaults a
# candidate is what it was before them. Adding a knob is one row here (and its use in
# space.expand).
# fmt: off
KNOBS: tuple[Knob, ...] = (
    Knob("global_every", _INT, 1, minimum=0, null_reads_as=0, doc="every k-th layer is global (layers k-1, 2k-1, ...); 1: all, 0 or null: none"),
    Knob("layout", _LAYOUT, None, nullable=True, doc='explicit placement, one letter per layer, G global or L local (e.g. "GLLLGLLL"); set, it replaces global_every'),
    Knob("global_position", _ENUM, "rope", enum=Position, doc="the global layers' positions"),
    Knob("local_rope_base", _FLOAT, 10000.0, doc="the RoPE base of the local layers"),
    Knob("global_rope_base", _FLOAT, 10000.0, doc="the RoPE base of the global layers (with global_position: rope)"),
    Knob("local_window", _WINDOW, None, nullable=True, doc="the local layers' window in tokens (null: full attention)"),
    Knob("global_window", _WINDOW, None, nullable=True, doc="the global layers' window in tokens (null: full attention)"),
    Knob("global_temperature", _ENUM, "none", enum=QueryTemperature, null_reads_as="none", doc="Llama 4 position temperature of NoPE queries"),
    Knob("global_temperature_floor", _INT, None, nullable=True, doc="tokens before the temperature grows (null: the training length)"),
    Knob("global_temperature_scale", _FLOAT, 0.1, doc="how fast the temperature grows with log length"),
    Knob("qk_norm", _ENUM, "none", enum=QKNorm, doc="RMSNorm of queries and keys, before or after RoPE"),
    Knob("qk_norm_layers", _ENUM, "all", enum=LayerPlacement, doc="the layers QK-norm applies to"),
    Knob("kv_heads", _INT, None, nullable=True, doc="key/value heads (grouped-query attention; null: as many as heads)"),
    # Llama 4 chunked local attention, gpt-oss sinks, GPT-NeoX partial rotary, RoPE scaling.
    Knob("local_attention", _ENUM, "sliding", enum=WindowKind, doc="how the local window limits attention"),
    Knob("attention_sink", _ENUM, "none", enum=AttentionSink, doc="a learned sink logit per query head (gpt-oss)"),
    Knob("attention_sink_layers", _ENUM, "all", enum=LayerPlacement, doc="the layers with sinks"),
    Knob("output_gate", _ENUM, "none", enum=OutputGate, doc="a sigmoid gate on each head's attention output (Qwen3-Next, Gated Attention)"),
    Knob("output_gate_layers", _ENUM, "all", enum=LayerPlacement, doc="the layers with an output gate"),
    Knob("rope_fraction", _FRACTION, 1.0, doc="the leading fraction of each head's dimensions RoPE rotates"),
    Knob("rope_type", _ENUM, "neox", enum=RopeType, doc="which dimensions rope_fraction turns: the leading ones (neox) or the fastest pairs of the whole head (proportional, Gemma 4)"),
    Knob("rope_fraction_layers", _ENUM, "all", enum=LayerPlacement, doc="the RoPE layers rope_fraction and rope_type apply to (the others turn every dimension)"),
    Knob("local_mixer", _ENUM, "softmax", enum=Mixer, doc="what mixes tokens in the local layers: attention (softmax), Qwen3-Next's Gated DeltaNet, Mamba2 or Kimi Linear's KDA"),
    Knob("deltanet_heads", _INT, None, nullable=True, doc="Gated DeltaNet / KDA query/key heads (null: the model's heads)"),
    Knob("deltanet_value_heads", _INT, None, nullable=True, doc="Gated DeltaNet value heads, a multiple of deltanet_heads (null: twice them, as Qwen3-Next; KDA: as many, null or equal)"),
    Knob("deltanet_head_dim", _INT, None, nullable=True, doc="Gated DeltaNet / KDA key and value head size (null: the model's head_dim)"),
    Knob("deltanet_conv_tokens", _INT, 4, doc="Gated DeltaNet / KDA causal convolution kernel in tokens (Qwen3-Next, Kimi Linear: 4)"),
    # Mamba2: the defaults are transformers' Mamba2Config (groups: the state-spaces and Granite 4.0-H checkpoints' 1; Codestral's 8 needs >= 8 heads)
    Knob("mamba2_state_size", _INT, 128, doc="Mamba2 state size N per channel (Mamba2Config.state_size)"),
    Knob("mamba2_conv_tokens", _INT, 4, doc="Mamba2 causal convolution kernel in tokens (Mamba2Config.conv_kernel)"),
    Knob("mamba2_expand", _INT, 2, doc="Mamba2 inner width as a multiple of d_model (Mamba2Config.expand)"),
    Knob("mamba2_head_dim", _INT, 64, doc="Mamba2 channels per head; it must divide expand x d_model (Mamba2Config.head_dim)"),
    Knob("mamba2_groups", _INT, 1, doc="Mamba2 groups of heads sharing B and C; it must divide the heads (Mamba2Config.n_groups)"),
    Knob("rope_scaling", _ENUM, "none", enum=RopeScalingKind, off="none", doc="RoPE frequency scaling (Hugging Face rope_type)"),
    Knob("rope_scaling_factor", _FACTOR, None, nullable=True, doc="the scaling factor (required when rope_scaling is not none)"),
    Knob("rope_scaling_layers", _ENUM, "all", enum=LayerPlacement, doc="the RoPE layers scaled"),
    Knob("rope_scaling_original_tokens", _INT, None, nullable=True, doc="the length the unscaled base was trained at (null: train.seq_len)"),
    Knob("rope_scaling_beta_fast", _FLOAT, 32.0, doc="YaRN: dimensions turning more often than this are kept"),
    Knob("rope_scaling_beta_slow", _FLOAT, 1.0, doc="YaRN: dimensions turning less often than this are interpolated"),
    Knob("rope_scaling_attention_factor", _FLOAT, None, nullable=True, doc="YaRN: the tables' factor (null: 0.1 ln(factor) + 1)"),
)
# fmt: on

KNOB_ROWS: dict[str, Knob] = {knob.name: knob for knob in KNOBS}
KNOB_NAMES: tuple[str, ...] = tuple(KNOB_ROWS)
KNOB_DEFAULTS: dict[str, Any] = {knob.name: knob.default for knob in KNOBS}

# An integer knob (a window, a layer count, a temperature floor) above this is a typo.
MAX_INT_KNOB = 2**40


class Suggester(Protocol):
    """The subset of ``optuna.Trial`` that sampling needs (space/ does not import optuna)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


@dataclass(frozen=True)
class KnobSpec:
    """How one knob is set: ``domain`` is fixed | choice | int | float | log."""

    name: str
    domain: str
    value: Any = None  # fixed value
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = field(default=())

    @property
    def searched(self) -> bool:
        return self.domain != "fixed"

    def applies(self, knobs: Mapping[str, Any]) -> bool:
        return all(knobs.get(other) in allowed for other, allowed in self.when)

    def suggest(self, trial: Suggester) -> Any:
        if self.domain == "fixed":
            return self.value
        if self.domain == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.domain == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1)
            )
        if self.domain == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step)
        return trial.suggest_float(self.name, self.low, self.high, log=True)

    def grid_values(self) -> list[Any]:
        """Every value of a finite domain (for the grid sampler)."""
        if self.domain == "fixed":
            return [self.value]
        if self.domain == "choice":
            return list(self.choices)
        if self.domain == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.domain == "float" and self.step:
            n = int(round((self.high - self.low) / self.step))
            return [self.low + i * self.step for i in range(n + 1)]
        raise ConfigError.at(
            f"space.{self.name}",
            "the grid sampler needs a finite domain (choice, int, or float with step)",
        )

    def describe(self) -> str:
        cond = ""
        if self.when:
            cond = " when " + ", ".join(
                f"{k}={v[0] if len(v) == 1 else list(v)}" for k, v in self.when
            )
        if self.domain == "fixed":
            return f"{_show(self.value)}{cond}"
        if self.domain == "choice":
            return f"choice {[_show(c) for c in self.choices]}{cond}".replace("'", "")
        step = f" step {_show(self.step)}" if self.step else ""
        return f"{self.domain} [{_show(self.low)}, {_show(self.high)}]{step}{cond}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"domain": self.domain}
        if self.domain == "fixed":
            out["value"] = self.value
        elif self.domain == "choice":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.step:
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when}
        return out


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and value >= 1000 and math.log10(value).is_integer():
        return f"1e{int(math.log10(value))}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_value(name: str, value: Any, path: str) -> Any:
    """Validate and normalise one concrete value of knob ``name``; raise ConfigError."""
    knob = KNOB_ROWS[name]
    kind = knob.kind
    if value is None:
        if knob.nullable:
            return None
        if knob.null_reads_as is not None:
            return knob.null_reads_as
    if kind == _ENUM:
        if not isinstance(value, str) or value not in knob.values:
            raise ConfigError.at(path, f"expected one of {list(knob.values)}, got {echo(value)}")
        return value
    if kind == _LAYOUT:
        if not isinstance(value, str):
            raise ConfigError.at(
                path, f"expected a layout string such as GLLLGLLL or null, got {echo(value)}"
            )
        if len(value) > MAX_INT_KNOB:
            raise ConfigError.at(path, "expected a layout of at most one letter per layer")
        problem = layout_problem(value)
        if problem is not None:
            raise ConfigError.at(path, problem)
        return value
    if kind == _WINDOW:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError.at(
                path, f"expected a window in tokens (int > 0) or null, got {echo(value)}"
            )
        if value <= 0:
            raise ConfigError.at(
                path, f"expected a window > 0 tokens (or null = full), got {echo(value)}"
            )
        if value > MAX_INT_KNOB:
            raise ConfigError.at(path, f"expected a window <= {MAX_INT_KNOB:,} tokens")
        return value
    if kind == _INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError.at(path, f"expected an integer, got {echo(value)}")
        if value < knob.minimum:
            raise ConfigError.at(path, f"expected a positive integer, got {echo(value)}")
        if value > MAX_INT_KNOB:
            raise ConfigError.at(path, f"expected an integer <= {MAX_INT_KNOB:,}")
        return value
    # float, fraction, factor
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError.at(path, f"expected a number, got {echo(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError.at(path, f"expected a finite number, got {echo(value)}")
    if kind == _FRACTION and not 0 < number <= 1:
        raise ConfigError.at(path, f"expected a fraction in (0, 1], got {echo(value)}")
    if kind == _FACTOR and number < 1:
        raise ConfigError.at(path, f"expected a scaling factor >= 1, got {echo(value)}")
    if number <= 0:
        raise ConfigError.at(path, f"expected a positive number, got {echo(value)}")
    return number


_DOMAIN_KEYS = ("choice", "int", "float", "log")


def parse_knob(name: str, raw: Any, path: str) -> KnobSpec:
    """Parse one entry of the ``space:`` section."""
    if name not in KNOB_ROWS:
        raise ConfigError.at(path, f"unknown knob {name!r}; expected one of {list(KNOB_NAMES)}")
    if not isinstance(raw, Mapping):
        return KnobSpec(name, "fixed", value=check_value(name, raw, path))
    unknown = set(raw) - {*_DOMAIN_KEYS, "step", "when", "value"}
    if unknown:
        bad = sorted(unknown)[0]
        raise ConfigError.at(
            f"{path}.{bad}",
            f"unknown key; a knob takes one of {list(_DOMAIN_KEYS)} or value, plus step/when",
        )
    domains = [k for k in (*_DOMAIN_KEYS, "value") if k in raw]
    if len(domains) != 1:
        raise ConfigError.at(
            path, f"expected exactly one of {[*_DOMAIN_KEYS, 'value']}, got {domains or 'none'}"
        )
    when = _parse_when(raw.get("when"), f"{path}.when")
    domain = domains[0]
    if domain == "value":
        return KnobSpec(
            name, "fixed", value=check_value(name, raw["value"], f"{path}.value"), when=when
        )
    if domain == "choice":
        choices = raw["choice"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError.at(f"{path}.choice", "expected a non-empty list of values")
        checked = tuple(check_value(name, c, f"{path}.choice[{i}]") for i, c in enumerate(choices))
        if len(set(map(repr, checked))) != len(checked):
            raise ConfigError.at(f"{path}.choice", "values must be distinct")
        return KnobSpec(name, "choice", choices=checked, when=when)
    kind = KNOB_ROWS[name].kind
    bounds = raw[domain]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError.at(f"{path}.{domain}", "expected [low, high]")
    if domain == "int" and kind not in (_INT, _WINDOW):
        raise ConfigError.at(f"{path}.int", f"knob {name!r} is not an integer knob")
    if domain in ("float", "log") and kind not in (_FLOAT, _FRACTION, _FACTOR):
        raise ConfigError.at(f"{path}.{domain}", f"knob {name!r} is not a real-valued knob")
    low = check_value(name, bounds[0], f"{path}.{domain}[0]")
    high = check_value(name, bounds[1], f"{path}.{domain}[1]")
    if low is None or high is None:
        raise ConfigError.at(f"{path}.{domain}", "range bounds cannot be null")
    if not low < high:
        raise ConfigError.at(f"{path}.{domain}", f"empty range: low {low} must be < high {high}")
    step = raw.get("step")
    if step is not None:
        if domain == "log":
            raise ConfigError.at(f"{path}.step", "a log range cannot have a step")
        if (
            isinstance(step, bool)
            or not isinstance(step, int | float)
            or not math.isfinite(step)
            or step <= 0
        ):
            raise ConfigError.at(f"{path}.step", f"expected a positive number, got {echo(step)}")
        if domain == "int" and not isinstance(step, int):
            raise ConfigError.at(f"{path}.step", "an int range needs an integer step")
    return KnobSpec(name, domain, low=low, high=high, step=step, when=when)


def _parse_when(raw: Any, path: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError.at(path, "expected a mapping {knob: value or [values]}")
    out = []
    for other, allowed in raw.items():
        if other not in KNOB_ROWS:
            raise ConfigError.at(f"{path}.{other}", f"unknown knob {other!r} in condition")
        values = allowed if isinstance(allowed, list) else [allowed]
        checked = tuple(check_value(other, v, f"{path}.{other}") for v in values)
        out.append((other, checked))
    return tuple(out)


def knob_domain(spec: KnobSpec) -> Sequence[Any]:
    """Every value a knob can take, for finite domains (an int range stays a lazy
    ``range``: a billion values are never materialised); () for continuous ones."""
    if spec.domain == "fixed":
        return (spec.value,)
    if spec.domain == "choice":
        return spec.choices
    if spec.domain == "int":
        return range(int(spec.low), int(spec.high) + 1, int(spec.step or 1))
    return ()


def domain_holds(spec: KnobSpec, value: Any) -> bool:
    """Whether ``value`` is among the values the knob can take (no materialising)."""
    if spec.domain in ("fixed", "choice"):
        return any(repr(value) == repr(v) for v in knob_domain(spec))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if spec.domain == "int":
        return isinstance(value, int) and value in knob_domain(spec)
    return spec.low <= value <= spec.high


def grid_size(spec: KnobSpec) -> int | None:
    """How many values the grid sampler would visit for this knob; None if infinite."""
    if spec.domain in ("fixed", "choice", "int"):
        return len(knob_domain(spec))
    if spec.domain == "float" and spec.step:
        return int((spec.high - spec.low) // spec.step) + 1
    return None
