"""Why no stock Hugging Face class reproduces a candidate: each reason names a knob, its
value and what the classes lack (:mod:`workers.hf.classes` says which class does, and why
these are the rules). A per-layer field this module does not know is a reason that even
remote code cannot lift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from space.layers import (
    AttentionSink,
    LayerKind,
    LayerSpec,
    Mixer,
    OutputGate,
    Position,
    QKNorm,
    RopeScalingKind,
    RopeType,
    WindowKind,
)

# Keys of LayerSpec.to_dict() the exporter (and the remote-code model) implements. A new
# per-layer field appears in to_dict() only when it differs from its default, so its mere
# presence means the layer does something we cannot export.
KNOWN_LAYER_FIELDS = frozenset(
    {
        "index",
        "kind",
        "position",
        "rope_base",
        "window",
        "qk_norm",
        "temperature",
        "window_kind",
        "attention_sink",
        "rope_fraction",
        "rope_scaling",
        "rope_type",
    }
)
# Per-layer fields exported only for some mixers: a Mamba2 layer's (GraniteMoeHybrid's mamba
# layers) and a Gated DeltaNet layer's (Qwen3-Next's linear_attn layers), workers.hf.classes;
# our remote-code model has the same two transformers modules, and Kimi Linear's KDA module.
MIXER_FIELDS = frozenset({"mixer", "recurrent"})
EXPORTED_MIXERS = frozenset({Mixer.MAMBA2, Mixer.GATED_DELTANET, Mixer.KDA})
# Per-layer fields newer than the Llama block: the attention output gate, exported to
# Qwen3-Next's gated attention or to our remote-code model (which has it too).
GATE_FIELDS = frozenset({"output_gate"})


@dataclass(frozen=True)
class Reason:
    """Why no stock class reproduces a candidate: the knob, its value, and what is missing."""

    knob: str
    value: Any
    why: str

    def __str__(self) -> str:
        return f"{self.knob}={_show(self.value)} ({self.why})"


class NotExpressible(ValueError):
    """No stock class reproduces the candidate; ``remote_code_possible`` says whether our own
    modeling file (``--remote-code``) can."""

    def __init__(self, reasons: Sequence[Reason], remote_code_possible: bool = True) -> None:
        self.reasons = tuple(reasons)
        self.remote_code_possible = remote_code_possible
        super().__init__("; ".join(str(r) for r in self.reasons))


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _knob(knobs: Mapping[str, Any], name: str, fallback: Any) -> Any:
    return knobs.get(name, fallback)


def unknown_layer_fields(layers: Sequence[LayerSpec]) -> list[Reason]:
    """Per-layer fields no exporter implements (knobs newer than this module)."""
    reasons: list[Reason] = []
    seen: set[str] = set()
    for spec in layers:
        exported = MIXER_FIELDS if spec.mixer in EXPORTED_MIXERS else frozenset()
        exported |= GATE_FIELDS
        for key, value in spec.to_dict().items():
            if key not in KNOWN_LAYER_FIELDS | exported and key not in seen:
                seen.add(key)
                reasons.append(Reason(key, value, f"layer {spec.index}: not implemented by export"))
    return reasons


def _proportional_reasons(layers: Sequence[LayerSpec], knobs: Mapping[str, Any]) -> list[Reason]:
    """Proportional RoPE is Gemma 4's, and no stock class with our block has it."""
    proportional = [s for s in layers if s.rope_type is RopeType.PROPORTIONAL]
    if not proportional:
        return []
    return [
        Reason(
            "rope_type",
            _knob(knobs, "rope_type", "proportional"),
            f"proportional RoPE on layers {_indices(proportional)}: only Gemma 4 has it, and "
            "its block is not ours (norms after attention and the MLP as well as before, a "
            "GeGLU MLP, embeddings scaled by the square root of d_model)",
        )
    ]


def _kda_reasons(layers: Sequence[LayerSpec], knobs: Mapping[str, Any]) -> list[Reason]:
    """KDA layers are Kimi Linear's, and its block is not ours: its full-attention layers are
    MLA (a compressed latent key/value with a decoupled RoPE key), not grouped-query."""
    kda = [s for s in layers if s.mixer is Mixer.KDA]
    if not kda:
        return []
    return [
        Reason(
            "local_mixer",
            _knob(knobs, "local_mixer", "kda"),
            f"KDA layers {_indices(kda)}: only Kimi Linear has them, and its attention layers "
            "are MLA (a compressed latent key/value), not our grouped-query attention",
        )
    ]


def stock_reasons(layers: Sequence[LayerSpec], knobs: Mapping[str, Any]) -> list[Reason]:
    """Everything that keeps each stock class from reproducing ``layers`` (empty: one can).

    ``knobs`` are the candidate's resolved knobs, used only to name the cause in the user's
    words; the decision is made on the layers themselves.
    """
    kda = _kda_reasons(layers, knobs)
    if needs_qwen3_next(layers):
        return kda + _proportional_reasons(layers, knobs) + _qwen3_next_reasons(layers, knobs)
    reasons: list[Reason] = kda + _proportional_reasons(layers, knobs)
    temps = [s for s in layers if s.temperature is not None]
    if temps:
        t = temps[0].temperature
        reasons.append(
            Reason(
                "global_temperature",
                _knob(knobs, "global_temperature", "log"),
                f"Llama 4 scaling of NoPE queries from {t.floor_tokens} tokens on, scale "
                f"{t.scale:g}: only Llama4 has it, and it counts positions over left padding "
                "(cache_position), so a padded batch differs from ours",
            )
        )
    normed = [s for s in layers if s.qk_norm is not QKNorm.NONE]
    if normed and len(normed) < len(layers):
        reasons.append(
            Reason(
                "qk_norm_layers",
                _knob(knobs, "qk_norm_layers", "?"),
                f"QK-norm on layers {[s.index for s in normed]} only: Qwen3 normalises every "
                "layer, the others none",
            )
        )
    post = [s for s in normed if s.qk_norm is QKNorm.POST_ROPE and s.position is Position.ROPE]
    if post:
        reasons.append(
            Reason(
                "qk_norm",
                "post_rope",
                "a learned RMSNorm after the rotation: no stock Llama-block class has one "
                "(Llama 4's has no weight)",
            )
        )
    nope = [s for s in layers if s.position is Position.NOPE]
    if normed and nope:
        reasons.append(
            Reason(
                "global_position",
                _knob(knobs, "global_position", "nope"),
                f"NoPE layers {[s.index for s in nope]} with QK-norm "
                f"({_knob(knobs, 'qk_norm', normed[0].qk_norm.value)}): Qwen3 has QK-norm but "
                "no NoPE layers, SmolLM3 NoPE layers but no QK-norm",
            )
        )
    bases = sorted({s.rope_base for s in layers if s.position is Position.ROPE})
    if len(bases) > 1:
        local = [s.rope_base for s in layers if s.kind is LayerKind.LOCAL and s.rope_base]
        glob = [s.rope_base for s in layers if s.kind is LayerKind.GLOBAL and s.rope_base]
        value = f"{_show(local[0] if local else None)}, global_rope_base={_show(glob[0] if glob else None)}"
        reasons.append(
            Reason(
                "local_rope_base",
                value,
                "stock classes have one rope_theta for every RoPE layer",
            )
        )
    windows = sorted({s.window_tokens for s in layers if s.window_tokens is not None})
    if len(windows) > 1:
        reasons.append(
            Reason(
                "local_window",
                f"{_knob(knobs, 'local_window', windows[0])}, global_window="
                f"{_show(_knob(knobs, 'global_window', windows[-1]))}",
                "stock classes have one sliding_window for every windowed layer",
            )
        )
    reasons += _new_knob_reasons(layers, knobs)
    if any(s.mixer is Mixer.MAMBA2 for s in layers):
        reasons += _mamba2_reasons(layers, knobs)
    return reasons


def _mamba2_reasons(layers: Sequence[LayerSpec], knobs: Mapping[str, Any]) -> list[Reason]:
    """What GraniteMoeHybrid (Granite 4.0-H: Mamba2 layers and attention layers, each with
    the dense SwiGLU ``shared_mlp``) lacks for the attention layers of a Mamba2 hybrid: no
    window, no QK-norm, and one position for all of them (``position_embedding_type``)."""
    softmax = [s for s in layers if s.mixer is Mixer.SOFTMAX]
    reasons: list[Reason] = []
    windowed = [s for s in softmax if s.window_tokens is not None]
    if windowed:
        reasons.append(
            Reason(
                "global_window",
                _knob(knobs, "global_window", windowed[0].window_tokens),
                f"windowed attention on layers {_indices(windowed)}: GraniteMoeHybrid, the "
                "stock class with Mamba2 layers, has full attention only",
            )
        )
    if any(s.qk_norm is not QKNorm.NONE for s in softmax):
        reasons.append(
            Reason("qk_norm", _knob(knobs, "qk_norm", "?"), "GraniteMoeHybrid has no QK-norm")
        )
    if len({s.position for s in softmax}) > 1:
        reasons.append(
            Reason(
                "global_position",
                _knob(knobs, "global_position", "?"),
                "RoPE and NoPE attention layers: GraniteMoeHybrid has one "
                "position_embedding_type for all",
            )
        )
    if any(s.rope_scaling is not None or s.rope_fraction != 1.0 for s in softmax):
        reasons.append(
            Reason(
                "rope_scaling",
                _knob(knobs, "rope_scaling", "?"),
                "a RoPE scaling or partial rotary with Mamba2 layers: not exported",
            )
        )
    return reasons


def needs_qwen3_next(layers: Sequence[LayerSpec]) -> bool:
    """Gated DeltaNet layers or an attention output gate: of the stock classes only
    Qwen3-Next has them with our block (:func:`_qwen3_next_reasons`)."""
    return any(
        s.mixer is Mixer.GATED_DELTANET or s.output_gate is not OutputGate.NONE for s in layers
    )


_QWEN3_NEXT = "Qwen3-Next, the one stock class with our block and Gated DeltaNet or gates, "


def _qwen3_next_reasons(layers: Sequence[LayerSpec], knobs: Mapping[str, Any]) -> list[Reason]:
    """What Qwen3-Next (Gated DeltaNet layers beside gated attention layers, each with the dense
    SwiGLU when ``num_experts`` is 0) lacks for a candidate with Gated DeltaNet layers or an
    output gate. Its attention layers all turn a leading fraction of each head with one base
    (``partial_rotary_factor``; one linear or YaRN scaling, not NTK), normalise q and k per head before the
    rotation, gate every output elementwise (``q_proj`` holds query and gate) and attend to the
    whole context. OlmoHybrid, the other stock class with Gated DeltaNet layers, is not our
    block: its attention layers are post-norm (the norm on the attention and MLP outputs, none
    on their inputs) with QK-norm over all heads at once, and its gated output norm has
    ``eps`` fixed at 1e-5."""
    softmax = [s for s in layers if s.mixer is Mixer.SOFTMAX]
    reasons: list[Reason] = []
    if any(s.mixer is Mixer.MAMBA2 for s in layers):
        reasons.append(
            Reason(
                "local_mixer",
                _knob(knobs, "local_mixer", "mamba2"),
                "Mamba2 layers beside Gated DeltaNet layers or an output gate: no stock class "
                "has both",
            )
        )
    reasons += _qwen3_next_gate_and_norm_reasons(softmax, knobs)
    reasons += _qwen3_next_rope_reasons([s for s in softmax if s.position is Position.ROPE], knobs)
    reasons += _qwen3_next_attention_reasons(softmax, knobs)
    shapes = {s.recurrent for s in layers if s.mixer is Mixer.GATED_DELTANET}
    if len(shapes) > 1:
        reasons.append(
            Reason(
                "local_mixer",
                "gated_deltanet",
                "Gated DeltaNet layers of different sizes: " + _QWEN3_NEXT + "has one set",
            )
        )
    return reasons


def _qwen3_next_gate_and_norm_reasons(
    softmax: Sequence[LayerSpec], knobs: Mapping[str, Any]
) -> list[Reason]:
    """Qwen3-Next gates every attention output elementwise, turns every attention layer and
    normalises its q and k before the rotation."""
    reasons: list[Reason] = []
    headwise = [s for s in softmax if s.output_gate is OutputGate.HEADWISE]
    if headwise:
        reasons.append(
            Reason(
                "output_gate",
                "headwise",
                f"one gate per head on layers {_indices(headwise)}: "
                + _QWEN3_NEXT
                + "gates each output dimension (its q_proj holds a gate row per query row)",
            )
        )
    ungated = [s for s in softmax if s.output_gate is OutputGate.NONE]
    if ungated:
        knob = "output_gate_layers" if len(ungated) < len(softmax) else "output_gate"
        reasons.append(
            Reason(
                knob,
                _knob(knobs, knob, "none"),
                f"attention layers {_indices(ungated)} without an output gate: "
                + _QWEN3_NEXT
                + "gates every attention output elementwise",
            )
        )
    nope = [s for s in softmax if s.position is Position.NOPE]
    if nope:
        reasons.append(
            Reason(
                "global_position",
                _knob(knobs, "global_position", "nope"),
                f"NoPE attention layers {_indices(nope)}: " + _QWEN3_NEXT + "turns every one",
            )
        )
    unnormed = [s for s in softmax if s.qk_norm is QKNorm.NONE]
    post = [s for s in softmax if s.qk_norm is QKNorm.POST_ROPE and s.position is Position.ROPE]
    if unnormed or post:
        knob = "qk_norm_layers" if unnormed and len(unnormed) < len(softmax) else "qk_norm"
        reasons.append(
            Reason(
                knob,
                _knob(knobs, knob, "none" if unnormed else "post_rope"),
                f"attention layers {_indices(unnormed or post)}: "
                + _QWEN3_NEXT
                + "normalises q and k per head before the rotation on every attention layer",
            )
        )
    return reasons


def _qwen3_next_rope_reasons(rope: Sequence[LayerSpec], knobs: Mapping[str, Any]) -> list[Reason]:
    """Qwen3-Next has one rope_theta, one partial_rotary_factor and one linear or YaRN scaling."""
    reasons: list[Reason] = []
    if len({s.rope_base for s in rope}) > 1:
        reasons.append(
            Reason(
                "local_rope_base",
                _knob(knobs, "local_rope_base", "?"),
                "two RoPE bases: " + _QWEN3_NEXT + "has one rope_theta",
            )
        )
    if len({s.rope_fraction for s in rope}) > 1:
        reasons.append(
            Reason(
                "rope_fraction_layers",
                _knob(knobs, "rope_fraction_layers", "?"),
                "two rotary fractions: " + _QWEN3_NEXT + "has one partial_rotary_factor",
            )
        )
    ntk = [
        s for s in rope if s.rope_scaling is not None and s.rope_scaling.kind is RopeScalingKind.NTK
    ]
    if ntk:
        reasons.append(
            Reason(
                "rope_scaling",
                "ntk",
                "Qwen3-Next's dynamic RoPE (Hugging Face's) keeps the frequencies of the longest "
                "sequence it has seen, so it differs from ours past "
                f"{ntk[0].rope_scaling.original_tokens} tokens",
            )
        )
    if len({s.rope_scaling for s in rope}) > 1:
        reasons.append(
            Reason(
                "rope_scaling_layers",
                _knob(knobs, "rope_scaling_layers", "?"),
                "a RoPE scaling on some RoPE layers only: "
                + _QWEN3_NEXT
                + "has one rope_parameters",
            )
        )
    return reasons


def _qwen3_next_attention_reasons(
    softmax: Sequence[LayerSpec], knobs: Mapping[str, Any]
) -> list[Reason]:
    """Qwen3-Next's attention is full, without sinks or a NoPE query temperature."""
    reasons: list[Reason] = []
    windowed = [s for s in softmax if s.window_tokens is not None]
    if windowed:
        knob = "local_window" if windowed[0].kind is LayerKind.LOCAL else "global_window"
        reasons.append(
            Reason(
                knob,
                _knob(knobs, knob, windowed[0].window_tokens),
                f"windowed attention on layers {_indices(windowed)}: "
                + _QWEN3_NEXT
                + "has full attention only",
            )
        )
    sinks = [s for s in softmax if s.attention_sink is not AttentionSink.NONE]
    if sinks:
        reasons.append(
            Reason(
                "attention_sink",
                _knob(knobs, "attention_sink", "learned"),
                f"sinks on layers {_indices(sinks)}: " + _QWEN3_NEXT + "has none",
            )
        )
    temps = [s for s in softmax if s.temperature is not None]
    if temps:
        reasons.append(
            Reason(
                "global_temperature",
                _knob(knobs, "global_temperature", "log"),
                _QWEN3_NEXT + "has no NoPE query temperature",
            )
        )
    return reasons


def _indices(layers: Sequence[LayerSpec]) -> list[int]:
    return [s.index for s in layers]


def _new_knob_reasons(layers: Sequence[LayerSpec], knobs: Mapping[str, Any]) -> list[Reason]:
    """The knobs of issue 17: chunks, sinks, partial rotary, RoPE scaling (module docstring)."""
    reasons: list[Reason] = []
    chunked = [s for s in layers if s.window_kind is WindowKind.CHUNKED and s.window_tokens]
    if chunked:
        reasons += _chunked_reasons(layers, knobs, chunked)
    sinks = [s for s in layers if s.attention_sink is AttentionSink.LEARNED]
    if sinks:
        reasons.append(
            Reason(
                "attention_sink",
                "learned",
                f"learned sink logits on layers {_indices(sinks)}: only GptOss has them, and "
                "its block is not ours (a mixture of experts with a clamped SwiGLU)",
            )
        )
    rope = [s for s in layers if s.position is Position.ROPE]
    scalings = {s.rope_scaling for s in rope}
    scaled = [s for s in rope if s.rope_scaling is not None]
    ntk = [s for s in scaled if s.rope_scaling.kind is RopeScalingKind.NTK]
    if ntk:
        reasons.append(
            Reason(
                "rope_scaling",
                "ntk",
                "Hugging Face's dynamic RoPE keeps the frequencies of the longest sequence it "
                "has seen and caches keys turned at the length they were cached, so it differs "
                f"from ours past {ntk[0].rope_scaling.original_tokens} tokens",
            )
        )
    if len(scalings) > 1:
        reasons.append(
            Reason(
                "rope_scaling_layers",
                _knob(knobs, "rope_scaling_layers", "?"),
                f"RoPE scaling on layers {_indices(scaled)} of the RoPE layers "
                f"{_indices(rope)}: stock classes have one rope_parameters for every layer",
            )
        )
    fractions = sorted({s.rope_fraction for s in rope})
    if len(fractions) > 1:
        reasons.append(
            Reason(
                "rope_fraction",
                ", ".join(_show(f) for f in fractions),
                "stock classes rotate one fraction of every RoPE layer",
            )
        )
    partial = [s for s in rope if s.rope_fraction != 1.0]
    if partial:
        reasons += _partial_rotary_reasons(layers, knobs, partial[0].rope_fraction)
    return reasons


def _chunked_reasons(
    layers: Sequence[LayerSpec], knobs: Mapping[str, Any], chunked: Sequence[LayerSpec]
) -> list[Reason]:
    """Chunked attention is Llama4's alone (dense, ``moe_layers: []``): what of the rest it lacks
    (a temperature, sinks, NTK, two bases or two window sizes have reasons of their own)."""
    value = f"chunked (chunks of {chunked[0].window_tokens} on layers {_indices(chunked)}) with "
    why = "Llama4 (the stock class with attention_chunk_size) has {}"
    reasons = []
    sliding = [s for s in layers if s.window_tokens and s.window_kind is WindowKind.SLIDING]
    if sliding:
        reasons.append(
            Reason(
                "local_attention",
                value + f"sliding windows on layers {_indices(sliding)}",
                why.format("no sliding windows"),
            )
        )
    if any(s.qk_norm is not QKNorm.NONE for s in layers):
        reasons.append(
            Reason(
                "local_attention",
                value + f"qk_norm={_knob(knobs, 'qk_norm', '?')}",
                why.format("only a weightless L2 norm after RoPE"),
            )
        )
    if any(s.rope_fraction != 1.0 for s in layers):
        reasons.append(
            Reason(
                "local_attention",
                value + f"rope_fraction={_show(_knob(knobs, 'rope_fraction', '?'))}",
                why.format("no partial rotary"),
            )
        )
    return reasons


def _partial_rotary_reasons(
    layers: Sequence[LayerSpec], knobs: Mapping[str, Any], fraction: float
) -> list[Reason]:
    """Partial rotary is Phi3's alone: what of the rest Phi3 lacks."""
    value = f"{_show(fraction)} with "
    why = "Phi3 (the stock class with partial_rotary_factor) has {}; Llama, Qwen3 and SmolLM3 "
    why += "rotate whole heads"
    reasons = []
    nope = [s for s in layers if s.position is Position.NOPE]
    if nope:
        reasons.append(
            Reason("rope_fraction", value + f"NoPE layers {_indices(nope)}", why.format("no NoPE"))
        )
    if any(s.qk_norm is not QKNorm.NONE for s in layers):
        qk = _knob(knobs, "qk_norm", "?")
        reasons.append(Reason("rope_fraction", value + f"qk_norm={qk}", why.format("no QK-norm")))
    windows = {s.window_tokens for s in layers}
    if len(windows) > 1:
        reasons.append(
            Reason(
                "rope_fraction",
                value + "windows " + ", ".join(_show(w) for w in sorted(windows, key=str)),
                why.format("one sliding_window for every layer"),
            )
        )
    scaled = [s.rope_scaling for s in layers if s.rope_scaling is not None]
    if scaled:
        reasons.append(
            Reason(
                "rope_fraction",
                value + f"rope_scaling={scaled[0].kind.value}",
                why.format("no RoPE scaling but its own longrope"),
            )
        )
    return reasons
