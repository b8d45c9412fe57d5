"""space: what can vary.

The sweep-file schema (:func:`load_config`), the knob vocabulary, the shipped
presets, the training stages and the expansion of knobs into per-layer specs
(:func:`build_candidate`).
"""

from space.errors import ConfigError, InvalidCandidate
from space.expand import (
    Candidate,
    CandidateStage,
    build_candidate,
    candidate_name,
    global_layer_indices,
)
from space.knobs import KNOB_DEFAULTS, KNOB_NAMES, KnobSpec
from space.layers import (
    AttentionSink,
    LayerKind,
    LayerPlacement,
    LayerSpec,
    ModelShape,
    Position,
    QKNorm,
    RopeScaling,
    RopeScalingKind,
    Temperature,
    WindowKind,
)
from space.presets import BUILTIN_PRESETS
from space.schema import SweepConfig, load_config, parse_config
from space.stages import StagePlan

__all__ = [
    "BUILTIN_PRESETS",
    "KNOB_DEFAULTS",
    "KNOB_NAMES",
    "AttentionSink",
    "Candidate",
    "CandidateStage",
    "ConfigError",
    "InvalidCandidate",
    "KnobSpec",
    "LayerKind",
    "LayerPlacement",
    "LayerSpec",
    "ModelShape",
    "Position",
    "QKNorm",
    "RopeScaling",
    "RopeScalingKind",
    "StagePlan",
    "SweepConfig",
    "Temperature",
    "WindowKind",
    "build_candidate",
    "candidate_name",
    "global_layer_indices",
    "load_config",
    "parse_config",
]
