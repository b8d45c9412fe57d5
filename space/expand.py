"""Knobs -> per-layer specs. The only place where ratios and offsets become layers.

Global layers are the 0-based indices ``k-1, 2k-1, ...`` for ``global_every: k``
(Hugging Face Cohere2 / Llama 4 convention): ``k = 1`` makes every layer global,
``k = 0`` makes none global. ``layout: "GLLLGLLL"`` (one letter per layer) places them
explicitly instead, e.g. first or last layer global; set, it replaces ``global_every``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from space.errors import ConfigError, InvalidCandidate
from space.knobs import KNOB_DEFAULTS, KNOB_NAMES, check_value
from space.layers import (
    AttentionSink,
    LayerKind,
    LayerPlacement,
    LayerSpec,
    Mamba2Shape,
    Mixer,
    ModelShape,
    OutputGate,
    Parametrization,
    Position,
    QKNorm,
    QueryTemperature,
    RecurrentShape,
    RopeScaling,
    RopeScalingKind,
    RopeType,
    Temperature,
    WindowKind,
    global_layer_indices,
    layout_problem,
    yarn_default_attention_factor,
)
from space.stages import SHAPE_KNOBS, StagePlan, describe_layout_change, stage_knobs


def resolve_knobs(knobs: Mapping[str, Any], path: str = "knobs") -> dict[str, Any]:
    """Defaults overlaid with ``knobs``; every value validated. Raises ConfigError."""
    unknown = sorted(set(knobs) - set(KNOB_NAMES))
    if unknown:
        raise ConfigError.at(
            f"{path}.{unknown[0]}", f"unknown knob; expected one of {list(KNOB_NAMES)}"
        )
    out = dict(KNOB_DEFAULTS)
    for name, value in knobs.items():
        out[name] = check_value(name, value, f"{path}.{name}")
    return out


def expand_layers(
    knobs: Mapping[str, Any], shape: ModelShape, train_seq_len: int
) -> tuple[LayerSpec, ...]:
    """Expand resolved knobs into one LayerSpec per layer. Raises InvalidCandidate.

    ``train_seq_len`` is the training length T: the default floor of the NoPE temperature and
    the default original length of a RoPE scaling.
    """
    _check_placement(knobs, shape)
    globals_ = set(global_layer_indices(shape.n_layers, knobs["global_every"], knobs["layout"]))
    attention = _AttentionOptions.of(knobs, train_seq_len)
    local_mixer = Mixer(knobs["local_mixer"])
    recurrent = None
    if local_mixer is not Mixer.SOFTMAX:
        refuse_attention_knobs_on_recurrent(knobs)
        recurrent = _recurrent_shape(knobs, shape)
    layers = []
    for i in range(shape.n_layers):
        kind = LayerKind.GLOBAL if i in globals_ else LayerKind.LOCAL
        if kind is LayerKind.LOCAL and recurrent is not None:
            # attention's options (QK-norm, sinks, gates, RoPE) stay on the softmax layers
            layers.append(_recurrent_layer(i, local_mixer, recurrent))
        else:
            layers.append(attention.layer(i, kind, knobs))
    for layer in layers:
        problem = layer.head_dim_problem(shape.head_dim)
        if problem is not None:
            raise InvalidCandidate(problem)
    return tuple(layers)


def _check_placement(knobs: Mapping[str, Any], shape: ModelShape) -> None:
    """The layout string or ``global_every`` must place a global layer among the model's
    layers, and a query temperature needs NoPE global layers. Raises InvalidCandidate."""
    k = knobs["global_every"]
    layout = knobs["layout"]
    if layout is not None:
        problem = layout_problem(layout, shape.n_layers)
        if problem is not None:
            raise InvalidCandidate(f"layout: {problem}")
    elif k > shape.n_layers:
        raise InvalidCandidate(
            f"global_every={k} > layers={shape.n_layers}: no layer would be global"
        )
    temperature_kind = QueryTemperature(knobs["global_temperature"])
    if temperature_kind is not QueryTemperature.NONE and knobs["global_position"] != "nope":
        raise InvalidCandidate(
            "global_temperature scales NoPE queries; it needs global_position: nope"
        )


def _recurrent_layer(index: int, mixer: Mixer, recurrent: RecurrentShape) -> LayerSpec:
    return LayerSpec(
        index=index,
        kind=LayerKind.LOCAL,
        position=Position.NOPE,
        rope_base=None,
        window_tokens=None,
        qk_norm=QKNorm.NONE,
        temperature=None,
        mixer=mixer,
        recurrent=recurrent,
    )


@dataclass(frozen=True)
class _AttentionOptions:
    """The options of a softmax layer that depend on its kind only through a placement
    (``*_layers: all | local | global``), resolved once per candidate."""

    qk_norm: QKNorm
    qk_where: LayerPlacement
    sink: AttentionSink
    sink_where: LayerPlacement
    gate: OutputGate
    gate_where: LayerPlacement
    temperature: Temperature | None
    scaling: RopeScaling | None
    scaling_where: LayerPlacement
    fraction_where: LayerPlacement
    local_window_kind: WindowKind

    @classmethod
    def of(cls, knobs: Mapping[str, Any], train_seq_len: int) -> _AttentionOptions:
        temperature = None
        if QueryTemperature(knobs["global_temperature"]) is QueryTemperature.LOG:
            floor = knobs["global_temperature_floor"] or train_seq_len
            temperature = Temperature(
                floor_tokens=int(floor), scale=float(knobs["global_temperature_scale"])
            )
        return cls(
            qk_norm=QKNorm(knobs["qk_norm"]),
            qk_where=LayerPlacement(knobs["qk_norm_layers"]),
            sink=AttentionSink(knobs["attention_sink"]),
            sink_where=LayerPlacement(knobs["attention_sink_layers"]),
            gate=OutputGate(knobs["output_gate"]),
            gate_where=LayerPlacement(knobs["output_gate_layers"]),
            temperature=temperature,
            scaling=_rope_scaling(knobs, train_seq_len),
            scaling_where=LayerPlacement(knobs["rope_scaling_layers"]),
            fraction_where=LayerPlacement(knobs["rope_fraction_layers"]),
            local_window_kind=WindowKind(knobs["local_attention"]),
        )

    def layer(self, index: int, kind: LayerKind, knobs: Mapping[str, Any]) -> LayerSpec:
        if kind is LayerKind.GLOBAL:
            position = Position(knobs["global_position"])
            base = knobs["global_rope_base"] if position is Position.ROPE else None
            window = knobs["global_window"]
            window_kind = WindowKind.SLIDING
            temp = self.temperature
        else:
            position, base, window, temp = (
                Position.ROPE,
                knobs["local_rope_base"],
                knobs["local_window"],
                None,
            )
            window_kind = self.local_window_kind
        rope = position is Position.ROPE
        partial = rope and self.fraction_where.covers(kind)
        try:
            return LayerSpec(
                index=index,
                kind=kind,
                position=position,
                rope_base=None if base is None else float(base),
                window_tokens=window,
                qk_norm=self.qk_norm if self.qk_where.covers(kind) else QKNorm.NONE,
                temperature=temp,
                # chunked with no window is full attention: the same layer as sliding-none
                window_kind=window_kind if window is not None else WindowKind.SLIDING,
                attention_sink=self.sink if self.sink_where.covers(kind) else AttentionSink.NONE,
                rope_fraction=float(knobs["rope_fraction"]) if partial else 1.0,
                rope_type=RopeType(knobs["rope_type"]) if partial else RopeType.NEOX,
                rope_scaling=self.scaling if rope and self.scaling_where.covers(kind) else None,
                output_gate=self.gate if self.gate_where.covers(kind) else OutputGate.NONE,
            )
        except ValueError as err:  # well-formed knobs, an impossible layer
            raise InvalidCandidate(str(err)) from err


# Options of attention that a placement knob may put on the local layers alone.
_LOCAL_ONLY_OPTIONS = (
    ("qk_norm_layers", "qk_norm", "none"),
    ("attention_sink_layers", "attention_sink", "none"),
    ("output_gate_layers", "output_gate", "none"),
    ("rope_scaling_layers", "rope_scaling", "none"),
    ("rope_fraction_layers", "rope_fraction", 1.0),
)


def recurrent_option_problems(knobs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(knob, why) for each attention option the knobs put on recurrent local layers."""
    mixer = knobs["local_mixer"]
    why = f"the local layers are {mixer} (local_mixer), which take no "
    out = []
    if knobs["local_window"] is not None:
        out.append(("local_window", why + "window"))
    if knobs["local_attention"] != WindowKind.SLIDING.value:
        out.append(("local_attention", why + "window"))
    for where, option, off in _LOCAL_ONLY_OPTIONS:
        if knobs[where] == LayerPlacement.LOCAL.value and knobs[option] != off:
            out.append((where, why + option))
    return out


def refuse_attention_knobs_on_recurrent(knobs: Mapping[str, Any]) -> None:
    """InvalidCandidate naming the first attention option set on recurrent local layers."""
    problems = recurrent_option_problems(knobs)
    if problems:
        name, why = problems[0]
        raise InvalidCandidate(f"{name}={knobs[name]}: {why}")


def _recurrent_shape(knobs: Mapping[str, Any], shape: ModelShape) -> RecurrentShape | Mamba2Shape:
    """The local recurrent mixer's sizes. Gated DeltaNet: by default Qwen3-Next's
    proportions (as many key heads as the model has heads, of the model's head size, and twice
    as many value heads). KDA: the same knobs, one value head per key head. Mamba2: ``expand x d_model`` channels in heads of
    ``mamba2_head_dim``."""
    if Mixer(knobs["local_mixer"]) is Mixer.MAMBA2:
        return _mamba2_shape(knobs, shape)
    key_heads = knobs["deltanet_heads"] or shape.n_heads
    if Mixer(knobs["local_mixer"]) is Mixer.KDA:  # one value head per key head
        value_heads = knobs["deltanet_value_heads"]
        if value_heads not in (None, key_heads):
            raise InvalidCandidate(
                f"deltanet_value_heads={value_heads}: a kda layer has as many value heads as "
                f"key heads (deltanet_heads: {key_heads}); leave it null"
            )
        return RecurrentShape(
            key_heads=key_heads,
            value_heads=key_heads,
            head_dim=knobs["deltanet_head_dim"] or shape.head_dim,
            conv_tokens=knobs["deltanet_conv_tokens"],
        )
    try:
        return RecurrentShape(
            key_heads=key_heads,
            value_heads=knobs["deltanet_value_heads"] or 2 * key_heads,
            head_dim=knobs["deltanet_head_dim"] or shape.head_dim,
            conv_tokens=knobs["deltanet_conv_tokens"],
        )
    except ValueError as err:
        raise InvalidCandidate(f"deltanet_value_heads: {err}") from err


def _mamba2_shape(knobs: Mapping[str, Any], shape: ModelShape) -> Mamba2Shape:
    inner, head_dim = knobs["mamba2_expand"] * shape.d_model, knobs["mamba2_head_dim"]
    if inner % head_dim:
        raise InvalidCandidate(
            f"mamba2_head_dim={head_dim} does not divide the inner width mamba2_expand x d_model "
            f"= {knobs['mamba2_expand']} x {shape.d_model} = {inner}"
        )
    heads = inner // head_dim
    if heads % knobs["mamba2_groups"]:
        raise InvalidCandidate(
            f"mamba2_groups={knobs['mamba2_groups']} does not divide the {heads} Mamba2 heads"
        )
    return Mamba2Shape(
        heads=heads,
        head_dim=head_dim,
        state_size=knobs["mamba2_state_size"],
        groups=knobs["mamba2_groups"],
        conv_tokens=knobs["mamba2_conv_tokens"],
    )


def _rope_scaling(knobs: Mapping[str, Any], train_seq_len: int) -> RopeScaling | None:
    if knobs["rope_scaling"] == "none":
        return None
    kind = RopeScalingKind(knobs["rope_scaling"])
    factor = knobs["rope_scaling_factor"]
    if factor is None:
        raise InvalidCandidate(f"rope_scaling: {kind.value} needs rope_scaling_factor (>= 1)")
    attention_factor = 1.0
    if kind is RopeScalingKind.YARN:
        attention_factor = knobs["rope_scaling_attention_factor"]
        if attention_factor is None:
            attention_factor = yarn_default_attention_factor(factor)
    try:
        return RopeScaling(
            kind=kind,
            factor=float(factor),
            original_tokens=int(knobs["rope_scaling_original_tokens"] or train_seq_len),
            beta_fast=float(knobs["rope_scaling_beta_fast"]),
            beta_slow=float(knobs["rope_scaling_beta_slow"]),
            attention_factor=float(attention_factor),
        )
    except ValueError as err:  # a well-formed knob value, an impossible combination
        raise InvalidCandidate(str(err)) from err


def check_shape(shape: ModelShape) -> None:
    if shape.d_model % shape.n_heads:
        raise InvalidCandidate(f"heads={shape.n_heads} does not divide d_model={shape.d_model}")
    if shape.n_heads % shape.n_kv_heads:
        raise InvalidCandidate(f"kv_heads={shape.n_kv_heads} does not divide heads={shape.n_heads}")
    if shape.head_dim % 2:
        raise InvalidCandidate(f"head_dim={shape.head_dim} must be even for RoPE")


@dataclass(frozen=True)
class CandidateStage:
    """One training stage of a candidate: its plan, the knobs in force and their layers."""

    plan: StagePlan
    knobs: dict[str, Any]
    layers: tuple[LayerSpec, ...]


@dataclass(frozen=True)
class Candidate:
    """One concrete architecture: resolved knobs, the model size and its layers.

    ``layers`` are the layers training starts with. ``stages`` is the training plan with the
    layers of each stage (empty: one stage, the train section); a later stage may override
    knobs, so the layers that are scored, ``final_layers``, can differ from ``layers``.
    """

    knobs: dict[str, Any]
    shape: ModelShape
    layers: tuple[LayerSpec, ...]
    stages: tuple[CandidateStage, ...] = ()

    @property
    def multi_stage(self) -> bool:
        return len(self.stages) > 1

    @property
    def final_layers(self) -> tuple[LayerSpec, ...]:
        """The layers in force after the last stage: what is scored and served."""
        return self.stages[-1].layers if self.stages else self.layers

    def canonical(self) -> dict[str, Any]:
        """What makes two candidates the same model (knobs that do not change a layer do not count).

        A plan of several stages is part of the candidate (its steps, lengths, schedules, task
        mixes and each stage's layers); one stage adds nothing, so ids made before stages existed
        stay the same.
        """
        out: dict[str, Any] = {
            "shape": {
                "n_layers": self.shape.n_layers,
                "d_model": self.shape.d_model,
                "n_heads": self.shape.n_heads,
                "n_kv_heads": self.shape.n_kv_heads,
                "mlp_hidden": self.shape.mlp_hidden,
                "vocab_size": self.shape.vocab_size,
                "init_std": self.shape.init_std,
                "norm_eps": self.shape.norm_eps,
            },
            "layers": [layer.to_dict() for layer in self.layers],
        }
        if self.shape.parametrization is not Parametrization.STANDARD:
            # only when set: candidates made before µP keep their ids
            out["shape"]["parametrization"] = self.shape.parametrization.value
            out["shape"]["base_d_model"] = self.shape.base_d_model
        if self.multi_stage:
            out["stages"] = [
                {
                    **{k: v for k, v in stage.plan.to_dict().items() if k != "knobs"},
                    "layers": [layer.to_dict() for layer in stage.layers],
                }
                for stage in self.stages
            ]
        return out

    @property
    def id(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        name = candidate_name(self.shape, self.layers)
        previous = self.layers
        for stage in self.stages[1:]:
            name += f" > T{stage.plan.seq_len}"
            if stage.layers != previous:
                name += " " + " ".join(_layout_parts(stage.layers))
            previous = stage.layers
        if self.shape.parametrization is Parametrization.MUP:
            name += f" mup/{self.shape.base_d_model}"
        return name

    def scaled_at_eval(self) -> dict[str, Any] | None:
        """The RoPE scaling in force when the candidate is scored, or None.

        ``{"layers": [indices], "scaling": {kind, factor, ...}}`` (the first scaled layer's
        scaling; one knob sets them all). Scores of a scaled candidate beyond T measure the
        scaling as much as the architecture: reports say which candidates had one.
        """
        scaled = [layer for layer in self.final_layers if layer.rope_scaling is not None]
        if not scaled:
            return None
        return {
            "layers": [layer.index for layer in scaled],
            "scaling": scaled[0].rope_scaling.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "name": self.name, "knobs": dict(self.knobs), **self.canonical()}
        if self.multi_stage:
            for entry, stage in zip(out["stages"], self.stages, strict=True):
                entry["knobs"] = dict(stage.plan.knobs)
        scaled = self.scaled_at_eval()
        if scaled is not None:
            out["rope_scaling_at_eval"] = scaled
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        """The inverse of :meth:`to_dict` (a candidate crossing to a trial process as data).
        Refuses a dict whose id does not match its content."""
        knobs = dict(d["knobs"])
        layers = tuple(LayerSpec.from_dict(layer) for layer in d["layers"])
        stages: list[CandidateStage] = []
        plans: list[StagePlan] = []
        for entry in d.get("stages", ()):
            plan = StagePlan(
                **{k: entry[k] for k in StagePlan.__dataclass_fields__ if k != "knobs"},
                knobs=dict(entry.get("knobs", {})),
            )
            plans.append(plan)
            stage_layers = tuple(LayerSpec.from_dict(layer) for layer in entry["layers"])
            stages.append(
                CandidateStage(plan, stage_knobs(knobs, plans, len(plans) - 1), stage_layers)
            )
        candidate = cls(
            knobs=knobs, shape=ModelShape(**d["shape"]), layers=layers, stages=tuple(stages)
        )
        if "id" in d and d["id"] != candidate.id:
            raise ValueError(f"candidate {d['id']} does not match its layers ({candidate.id})")
        return candidate


def _base(value: float) -> str:
    exp = math.log10(value)
    return f"1e{int(exp)}" if exp.is_integer() else f"{value:g}"


def _attn(spec: LayerSpec) -> str:
    r = spec.recurrent
    if spec.mixer is Mixer.MAMBA2:
        return f"mamba{r.heads}x{r.head_dim}s{r.state_size}"
    if spec.mixer is Mixer.KDA:
        return f"kda{r.key_heads}x{r.head_dim}"
    if spec.mixer is not Mixer.SOFTMAX:
        return f"gdn{r.key_heads}x{r.head_dim}v{r.value_heads}"
    if spec.position is Position.NOPE:
        pos = "nope"
    else:
        pos = f"rope{_base(spec.rope_base)}"
        if spec.rope_fraction != 1.0:
            pos += f" {'p' if spec.rope_type is RopeType.PROPORTIONAL else ''}rot{spec.rope_fraction:g}"
        if spec.rope_scaling is not None:
            pos += f" {spec.rope_scaling.kind.value}{spec.rope_scaling.factor:g}"
    win = ""
    if spec.window_tokens is not None:
        prefix = "chunk" if spec.window_kind is WindowKind.CHUNKED else "swa"
        win = f" {prefix}{spec.window_tokens}"
    temp = " temp" if spec.temperature is not None else ""
    sink = " sink" if spec.attention_sink is AttentionSink.LEARNED else ""
    gate = f" gate:{spec.output_gate.value}" if spec.output_gate is not OutputGate.NONE else ""
    return pos + win + temp + sink + gate


def _layout_parts(layers: tuple[LayerSpec, ...]) -> list[str]:
    """The interleaving and each kind's attention, e.g. ``["3:1", "rope1e4 swa32/nope"]``."""
    n_global = sum(layer.kind is LayerKind.GLOBAL for layer in layers)
    n_local = len(layers) - n_global
    local = next((layer for layer in layers if layer.kind is LayerKind.LOCAL), None)
    glob = next((layer for layer in layers if layer.kind is LayerKind.GLOBAL), None)
    if local is None:
        return ["global", _attn(glob)]
    if glob is None:
        return ["local", _attn(local)]
    ratio = f"{n_local // n_global}:1" if n_local % n_global == 0 else f"{n_local}:{n_global}"
    return [ratio + _placement(layers), f"{_attn(local)}/{_attn(glob)}"]


def _placement(layers: tuple[LayerSpec, ...]) -> str:
    """``""`` where the global layers are those of some ``global_every``; else where they are,
    e.g. ``"@G0,7"``: a ratio alone does not tell a first-layer-global model from the usual."""
    globals_ = tuple(layer.index for layer in layers if layer.kind is LayerKind.GLOBAL)
    n = len(layers)
    if any(globals_ == global_layer_indices(n, k) for k in range(1, n + 1)):
        return ""
    return "@G" + ",".join(map(str, globals_))


def candidate_name(shape: ModelShape, layers: tuple[LayerSpec, ...]) -> str:
    """Readable name, e.g. ``L4 3:1 rope1e4 swa32/nope qk:none``."""
    n_global = sum(layer.kind is LayerKind.GLOBAL for layer in layers)
    n_local = len(layers) - n_global
    parts = _layout_parts(layers)
    norms = {layer.qk_norm for layer in layers} - {QKNorm.NONE}
    if not norms:
        qk = "qk:none"
    else:
        normed = {layer.kind for layer in layers if layer.qk_norm is not QKNorm.NONE}
        where = (
            "" if len(normed) == 2 or n_global == 0 or n_local == 0 else f"@{normed.pop().value}"
        )
        qk = f"qk:{norms.pop().value}{where}"
    kv = f" kv{shape.n_kv_heads}" if shape.n_kv_heads != shape.n_heads else ""
    return f"L{shape.n_layers} {' '.join(parts)} {qk}{kv}"


def build_candidate(
    knobs: Mapping[str, Any],
    base_shape: ModelShape,
    train_seq_len: int,
    path: str = "knobs",
    stages: tuple[StagePlan, ...] = (),
) -> Candidate:
    """Resolve knobs, apply ``kv_heads`` to the shape, expand the layers of every stage.

    ``stages`` is the training plan (empty or one stage: the knobs alone decide the layers).
    Raises ConfigError for a malformed knob value and InvalidCandidate for a well-formed but
    impossible combination, a stage override that changes parameter shapes included.
    """
    resolved = resolve_knobs(knobs, path)
    kv_heads = resolved["kv_heads"] or base_shape.n_heads
    shape = ModelShape(
        n_layers=base_shape.n_layers,
        d_model=base_shape.d_model,
        n_heads=base_shape.n_heads,
        n_kv_heads=kv_heads,
        mlp_hidden=base_shape.mlp_hidden,
        vocab_size=base_shape.vocab_size,
        init_std=base_shape.init_std,
        norm_eps=base_shape.norm_eps,
        parametrization=base_shape.parametrization,
        base_d_model=base_shape.base_d_model,
    )
    check_shape(shape)
    layers = expand_layers(resolved, shape, train_seq_len)
    if not stages:
        return Candidate(knobs=resolved, shape=shape, layers=layers)
    if stages[0].knobs:
        raise InvalidCandidate(
            "the first stage trains the candidate's own knobs; it overrides none"
        )
    planned = [CandidateStage(stages[0], resolved, layers)]
    for i in range(1, len(stages)):
        where = f"train.stages[{i}].knobs"
        knobs_i = resolve_knobs(stage_knobs(resolved, stages, i), where)
        for name in SHAPE_KNOBS:
            if knobs_i[name] != resolved[name]:
                raise InvalidCandidate(f"{where}.{name}: a stage cannot change parameter shapes")
        layers_i = expand_layers(knobs_i, shape, train_seq_len)
        if [x.parameter_layout() for x in layers_i] != [x.parameter_layout() for x in layers]:
            change = describe_layout_change(resolved, knobs_i, shape.n_layers)
            raise InvalidCandidate(f"{where}: a stage cannot change parameter shapes ({change})")
        planned.append(CandidateStage(stages[i], knobs_i, layers_i))
    return Candidate(knobs=resolved, shape=shape, layers=layers, stages=tuple(planned))
