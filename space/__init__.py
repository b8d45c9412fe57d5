"""space: what can vary.

The sweep-file schema (:func:`load_config`), the knob vocabulary, the shipped
presets and the expansion of knobs into per-layer specs (:func:`build_candidate`).
"""

from space.errors import ConfigError, InvalidCandidate
from space.expand import Candidate, build_candidate, candidate_name, global_layer_indices
from space.knobs import KNOB_DEFAULTS, KNOB_NAMES, KnobSpec
from space.layers import LayerKind, LayerSpec, ModelShape, Position, QKNorm, Temperature
from space.presets import BUILTIN_PRESETS
from space.schema import SweepConfig, load_config, parse_config

__all__ = [
    "BUILTIN_PRESETS",
    "KNOB_DEFAULTS",
    "KNOB_NAMES",
    "Candidate",
    "ConfigError",
    "InvalidCandidate",
    "KnobSpec",
    "LayerKind",
    "LayerSpec",
    "ModelShape",
    "Position",
    "QKNorm",
    "SweepConfig",
    "Temperature",
    "build_candidate",
    "candidate_name",
    "global_layer_indices",
    "load_config",
    "parse_config",
]
