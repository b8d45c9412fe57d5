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

``when`` makes a knob conditional: it is sampled only when every named knob has
the given value (or one of a list of values); otherwise it keeps its default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from space.errors import ConfigError
from space.yaml_io import echo

# name -> (default, kind). kind drives value validation.
_INT, _FLOAT, _WINDOW, _ENUM = "int", "float", "window", "enum"
_FRACTION, _FACTOR = "fraction", "factor"  # a real in (0, 1]; a real >= 1

_PLACEMENT = ("all", "local", "global")

ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "global_position": ("nope", "rope"),
    "global_temperature": ("none", "log"),
    "qk_norm": ("none", "pre_rope", "post_rope"),
    "qk_norm_layers": _PLACEMENT,
    "local_attention": ("sliding", "chunked"),
    "attention_sink": ("none", "learned"),
    "attention_sink_layers": _PLACEMENT,
    "rope_scaling": ("none", "linear", "ntk", "yarn"),
    "rope_scaling_layers": _PLACEMENT,
}

KNOB_KINDS: dict[str, str] = {
    "global_every": _INT,
    "global_position": _ENUM,
    "local_rope_base": _FLOAT,
    "global_rope_base": _FLOAT,
    "local_window": _WINDOW,
    "global_window": _WINDOW,
    "global_temperature": _ENUM,
    "global_temperature_floor": _INT,
    "global_temperature_scale": _FLOAT,
    "qk_norm": _ENUM,
    "qk_norm_layers": _ENUM,
    "kv_heads": _INT,
    # Llama 4 chunked local attention, gpt-oss sinks, GPT-NeoX partial rotary, RoPE scaling.
    "local_attention": _ENUM,
    "attention_sink": _ENUM,
    "attention_sink_layers": _ENUM,
    "rope_fraction": _FRACTION,
    "rope_scaling": _ENUM,
    "rope_scaling_factor": _FACTOR,
    "rope_scaling_layers": _ENUM,
    "rope_scaling_original_tokens": _INT,
    "rope_scaling_beta_fast": _FLOAT,
    "rope_scaling_beta_slow": _FLOAT,
    "rope_scaling_attention_factor": _FLOAT,
}

# Defaults describe the plain Llama-style baseline: every layer global, RoPE,
# full attention, no QK-norm. ``kv_heads: None`` means "as many as heads";
# ``global_temperature_floor: None`` means "the training length".
KNOB_DEFAULTS: dict[str, Any] = {
    "global_every": 1,
    "global_position": "rope",
    "local_rope_base": 10000.0,
    "global_rope_base": 10000.0,
    "local_window": None,
    "global_window": None,
    "global_temperature": "none",
    "global_temperature_floor": None,
    "global_temperature_scale": 0.1,
    "qk_norm": "none",
    "qk_norm_layers": "all",
    "kv_heads": None,
    # The knobs below came later; at these defaults a candidate is what it was before them.
    "local_attention": "sliding",
    "attention_sink": "none",
    "attention_sink_layers": "all",
    "rope_fraction": 1.0,
    "rope_scaling": "none",
    "rope_scaling_factor": None,  # required when rope_scaling is not none
    "rope_scaling_layers": "all",
    "rope_scaling_original_tokens": None,  # None = the training length (train.seq_len)
    "rope_scaling_beta_fast": 32.0,
    "rope_scaling_beta_slow": 1.0,
    "rope_scaling_attention_factor": None,  # None = YaRN's 0.1 ln(factor) + 1
}

# Knobs whose null is a value (a default decided later), not an error.
_NULLABLE = (
    "kv_heads",
    "global_temperature_floor",
    "rope_scaling_factor",
    "rope_scaling_original_tokens",
    "rope_scaling_attention_factor",
)

KNOB_NAMES: tuple[str, ...] = tuple(KNOB_KINDS)

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
    kind = KNOB_KINDS[name]
    if kind == _ENUM:
        if value is None and name == "global_temperature":
            return "none"
        if not isinstance(value, str) or value not in ENUM_VALUES[name]:
            raise ConfigError.at(
                path, f"expected one of {list(ENUM_VALUES[name])}, got {echo(value)}"
            )
        return value
    if kind == _WINDOW:
        if value is None:
            return None
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
    if value is None and name in _NULLABLE:
        return None
    if kind == _INT:
        if value is None and name == "global_every":
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError.at(path, f"expected an integer, got {echo(value)}")
        if value < 0 or (value == 0 and name != "global_every"):
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
    if name not in KNOB_KINDS:
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
    kind = KNOB_KINDS[name]
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
        if other not in KNOB_KINDS:
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


def rotary_problem(fraction: float, head_dim: int) -> str | None:
    """Why ``rope_fraction`` cannot rotate part of a head of ``head_dim`` (None: it can)."""
    dims = int(head_dim * fraction)
    if dims >= 2 and dims % 2 == 0:
        return None
    return (
        f"rope_fraction={fraction:g} rotates int({head_dim} x {fraction:g}) = {dims} of "
        f"head_dim {head_dim} dimensions; RoPE needs an even number >= 2"
    )
