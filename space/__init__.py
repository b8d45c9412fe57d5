"""space: what can vary.

The sweep-file schema (:func:`load_config`), the knob vocabulary (one :class:`Knob` row
each in :data:`KNOBS`), the shipped
presets, the training stages, the expansion of knobs into per-layer specs
(:func:`build_candidate`), a scale ladder's rungs (:class:`LadderSection`,
:func:`apply_rung`), and hypotheses as data (:class:`Hypothesis`, selecting
candidates by a :class:`Predicate` on their layers; the paper's claims:
:func:`shipped_hypotheses`).
"""

from space.errors import ConfigError, InvalidCandidate
from space.expand import (
    Candidate,
    CandidateStage,
    build_candidate,
    candidate_name,
    global_layer_indices,
)
from space.hypotheses import Hypothesis
from space.hypothesis_files import load_hypotheses, parse_hypotheses, shipped_hypotheses
from space.knobs import KNOB_DEFAULTS, KNOB_NAMES, KNOBS, Knob, KnobSpec
from space.ladder import LadderSection, apply_rung
from space.layers import (
    AttentionSink,
    LayerKind,
    LayerPlacement,
    LayerSpec,
    ModelShape,
    OutputGate,
    Position,
    QKNorm,
    QueryTemperature,
    RopeScaling,
    RopeScalingKind,
    RopeType,
    Temperature,
    WindowKind,
)
from space.predicates import LayerMatch, Predicate
from space.presets import BUILTIN_PRESETS
from space.schema import SweepConfig, load_config, parse_config
from space.stages import StagePlan

__all__ = [
    "BUILTIN_PRESETS",
    "KNOB_DEFAULTS",
    "KNOB_NAMES",
    "KNOBS",
    "AttentionSink",
    "Candidate",
    "CandidateStage",
    "ConfigError",
    "Hypothesis",
    "InvalidCandidate",
    "Knob",
    "KnobSpec",
    "LadderSection",
    "LayerMatch",
    "LayerKind",
    "LayerPlacement",
    "LayerSpec",
    "ModelShape",
    "OutputGate",
    "Position",
    "Predicate",
    "QKNorm",
    "QueryTemperature",
    "RopeScaling",
    "RopeScalingKind",
    "RopeType",
    "StagePlan",
    "SweepConfig",
    "Temperature",
    "WindowKind",
    "apply_rung",
    "build_candidate",
    "candidate_name",
    "global_layer_indices",
    "load_config",
    "load_hypotheses",
    "parse_config",
    "parse_hypotheses",
    "shipped_hypotheses",
]
