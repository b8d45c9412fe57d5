"""Per-layer specs: the only form of the architecture the model ever sees.

Knobs (``global_every``, ``local_window``, ...) are expanded into a tuple of
:class:`LayerSpec` by :func:`space.expand.expand_layers`; the model reads each
layer's spec and never does ``layer_idx % k`` arithmetic itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class LayerKind(StrEnum):
    LOCAL = "local"
    GLOBAL = "global"


class Position(StrEnum):
    # The order is the ``global_position`` knob's (its error messages list nope first).
    NOPE = "nope"
    ROPE = "rope"


class QueryTemperature(StrEnum):
    """The ``global_temperature`` knob: ``LOG`` scales NoPE queries by position (Llama 4,
    see :class:`Temperature`); ``NONE`` leaves them as they are."""

    NONE = "none"
    LOG = "log"


class QKNorm(StrEnum):
    NONE = "none"
    PRE_ROPE = "pre_rope"
    POST_ROPE = "post_rope"


class LayerPlacement(StrEnum):
    """Which layer kinds a per-layer option (QK-norm, sinks, RoPE scaling) applies to."""

    ALL = "all"
    LOCAL = "local"
    GLOBAL = "global"

    def covers(self, kind: LayerKind) -> bool:
        return self is LayerPlacement.ALL or self.value == kind.value


class WindowKind(StrEnum):
    """How a window of ``W`` tokens limits attention.

    ``SLIDING``: the query at position ``i`` sees keys ``i - W < j <= i`` (Mistral, Gemma,
    gpt-oss). ``CHUNKED``: positions are cut into chunks ``[cW, (c + 1)W)`` counted from
    position 0, and a query sees the keys of its own chunk up to itself (Llama 4's
    ``attention_chunk_size``): the first query of a chunk sees only itself.
    """

    SLIDING = "sliding"
    CHUNKED = "chunked"


class AttentionSink(StrEnum):
    """``LEARNED``: one logit per query head, a virtual key that every query sees, which takes
    softmax mass and adds nothing to the output (gpt-oss ``sinks``)."""

    NONE = "none"
    LEARNED = "learned"


class RopeType(StrEnum):
    """Which dimensions a partial rotary (``rope_fraction`` < 1) turns, and how fast.

    ``NEOX``: the leading ``R = int(D * fraction)`` dimensions turn as a RoPE of ``R``
    dimensions (pairs ``(i, i + R/2)``, frequencies ``base ** (-2k / R)``); the rest pass
    through (GPT-NeoX ``rotary_pct``, Qwen3-Next). ``PROPORTIONAL``: the whole head keeps its
    RoPE pairs ``(i, i + D/2)`` and frequencies ``base ** (-2k / D)``, and only the
    ``int(D * fraction) // 2`` fastest pairs turn; the slowest get frequency 0 (Hugging
    Face's ``proportional`` rope type, Gemma 4's global layers).
    """

    NEOX = "neox"
    PROPORTIONAL = "proportional"


class Parametrization(StrEnum):
    """How weights are initialised and how their learning rates scale with width.
    ``STANDARD``: one init std and one learning rate for every weight. ``MUP``: maximal
    update parametrization (Yang et al., Tensor Programs V; the ``mup`` package's rules,
    written into ``workers.model``), relative to a base width, so a learning rate tuned at
    the base width stays the best one at larger widths."""

    STANDARD = "standard"
    MUP = "mup"


class Mixer(StrEnum):
    """What mixes tokens in a layer. ``SOFTMAX``: attention, with every positional and window
    option. ``GATED_DELTANET``: Qwen3-Next's Gated DeltaNet, a recurrent (linear-attention)
    layer whose state has a constant size (:class:`RecurrentShape`). ``MAMBA2``: the Mamba2
    selective state-space layer (:class:`Mamba2Shape`; Granite 4.0-H, Bamba, Nemotron-H).
    ``KDA``: Kimi Linear's Kimi Delta Attention, the Gated DeltaNet's delta rule with a decay
    per key channel (:class:`RecurrentShape` with as many value heads as key heads). A
    recurrent layer takes no position, window, QK-norm, sink or output-gate option."""

    SOFTMAX = "softmax"
    GATED_DELTANET = "gated_deltanet"
    MAMBA2 = "mamba2"
    KDA = "kda"


@dataclass(frozen=True)
class RecurrentShape:
    """The sizes of a Gated DeltaNet layer (Qwen3-Next's ``linear_*`` config fields): query/key
    heads, value heads (a multiple of them), one head size for keys and values, and the
    depthwise causal convolution's kernel in tokens. A KDA layer has the same sizes with as
    many value heads as key heads (Kimi Linear's ``linear_num_heads``, ``linear_head_dim``,
    ``linear_conv_kernel_dim``)."""

    key_heads: int
    value_heads: int
    head_dim: int
    conv_tokens: int = 4

    def __post_init__(self) -> None:
        for name in ("key_heads", "value_heads", "head_dim", "conv_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.value_heads % self.key_heads:
            raise ValueError(
                f"value heads {self.value_heads} must be a multiple of key heads {self.key_heads}"
            )

    @property
    def conv_channels(self) -> int:
        """Queries, keys and values go through the convolution: ``2 Hk Dk + Hv Dv``."""
        return (2 * self.key_heads + self.value_heads) * self.head_dim

    def state_elements(self) -> int:
        """Elements one sequence's decoding state holds, whatever its length: the last
        ``conv_tokens - 1`` convolution inputs and a ``Dk x Dv`` matrix per value head."""
        conv = self.conv_channels * (self.conv_tokens - 1)
        return conv + self.value_heads * self.head_dim * self.head_dim

    def to_dict(self) -> dict[str, int]:
        return {
            "key_heads": self.key_heads,
            "value_heads": self.value_heads,
            "head_dim": self.head_dim,
            "conv_tokens": self.conv_tokens,
        }

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """The recurrent state of one sequence: a ``Dk x Dv`` matrix per value head."""
        return (self.value_heads, self.head_dim, self.head_dim)


@dataclass(frozen=True)
class Mamba2Shape:
    """The sizes of a Mamba2 layer (transformers' ``Mamba2Config``): ``heads`` of
    ``head_dim`` channels (together the inner width, ``expand x d_model``), the state size
    ``N`` per channel, ``groups`` of heads sharing one ``B`` and ``C`` projection (and one
    group of the gated norm), and the depthwise causal convolution's kernel in tokens."""

    heads: int
    head_dim: int
    state_size: int
    groups: int = 1
    conv_tokens: int = 4

    def __post_init__(self) -> None:
        for name in ("heads", "head_dim", "state_size", "groups", "conv_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.heads % self.groups:
            raise ValueError(f"groups {self.groups} must divide heads {self.heads}")

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    @property
    def conv_channels(self) -> int:
        """x, B and C go through the convolution: ``inner + 2 groups N``."""
        return self.inner + 2 * self.groups * self.state_size

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """The recurrent state of one sequence: ``head_dim x N`` per head."""
        return (self.heads, self.head_dim, self.state_size)

    def state_elements(self) -> int:
        """Elements one sequence's decoding state holds, whatever its length: the last
        ``conv_tokens - 1`` convolution inputs and ``heads x head_dim x N`` of state."""
        return self.conv_channels * (self.conv_tokens - 1) + self.inner * self.state_size

    def to_dict(self) -> dict[str, int]:
        return {
            "heads": self.heads,
            "head_dim": self.head_dim,
            "state_size": self.state_size,
            "groups": self.groups,
            "conv_tokens": self.conv_tokens,
        }


# The sizes each recurrent mixer takes (``LayerSpec.recurrent``).
RECURRENT_SHAPES: dict[Mixer, type] = {
    Mixer.GATED_DELTANET: RecurrentShape,
    Mixer.MAMBA2: Mamba2Shape,
    Mixer.KDA: RecurrentShape,
}


class OutputGate(StrEnum):
    """A sigmoid gate on each head's attention output, computed from the layer's input, before
    ``o_proj`` (Gated Attention, arXiv 2505.06708; Qwen3-Next's full-attention layers).

    ``HEADWISE``: one gate per head (a scalar for its whole output vector). ``ELEMENTWISE``: one
    gate per output dimension of each head (Qwen3-Next).
    """

    NONE = "none"
    HEADWISE = "headwise"
    ELEMENTWISE = "elementwise"


class RopeScalingKind(StrEnum):
    """RoPE frequency scaling, as Hugging Face's ``rope_type`` (``modeling_rope_utils``).

    ``LINEAR``: every frequency divided by the factor (position interpolation).
    ``NTK``: Hugging Face ``dynamic``: the base grows with the current length ``L`` past the
    original length, ``base * (factor * L / original - (factor - 1)) ** (d / (d - 2))``;
    exactly the unscaled RoPE while ``L <= original``.
    ``YARN``: high frequencies kept, low ones interpolated by the factor, a linear ramp
    between (``beta_fast``, ``beta_slow`` rotations over the original length), and the
    rotation tables multiplied by ``attention_factor``.
    """

    LINEAR = "linear"
    NTK = "ntk"
    YARN = "yarn"


def yarn_default_attention_factor(factor: float) -> float:
    """YaRN's ``0.1 * ln(factor) + 1`` (1 for factor <= 1), Hugging Face's default."""
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


@dataclass(frozen=True)
class RopeScaling:
    """One RoPE layer's frequency scaling. Only the fields its kind uses count (``to_dict``)."""

    kind: RopeScalingKind
    factor: float
    original_tokens: int  # the length the unscaled base was trained at (NTK, YaRN)
    beta_fast: float = 32.0  # YaRN
    beta_slow: float = 1.0  # YaRN
    attention_factor: float = 1.0  # YaRN: multiplies the cos/sin tables

    def __post_init__(self) -> None:
        if not self.factor >= 1:
            raise ValueError(f"a RoPE scaling factor must be >= 1, got {self.factor:g}")
        if self.kind is RopeScalingKind.YARN and not self.beta_fast > self.beta_slow:
            raise ValueError(
                f"rope_scaling_beta_fast={self.beta_fast:g} must exceed rope_scaling_beta_slow="
                f"{self.beta_slow:g} (YaRN interpolates dimensions that turn fewer than "
                "beta_slow times)"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RopeScaling:
        """The inverse of :meth:`to_dict` (fields a kind does not use take their defaults)."""
        return cls(
            kind=RopeScalingKind(d["kind"]),
            factor=float(d["factor"]),
            original_tokens=int(d.get("original_tokens", 0)),
            beta_fast=float(d.get("beta_fast", 32.0)),
            beta_slow=float(d.get("beta_slow", 1.0)),
            attention_factor=float(d.get("attention_factor", 1.0)),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "factor": self.factor}
        if self.kind is not RopeScalingKind.LINEAR:
            out["original_tokens"] = self.original_tokens
        if self.kind is RopeScalingKind.YARN:
            out.update(
                beta_fast=self.beta_fast,
                beta_slow=self.beta_slow,
                attention_factor=self.attention_factor,
            )
        return out


@dataclass(frozen=True)
class Temperature:
    """Llama 4 query temperature for NoPE layers.

    A query at 0-based position ``p`` is multiplied by
    ``1 + scale * log(1 + floor((p + 1) / floor_tokens))``: exactly 1 until the
    position reaches ``floor_tokens``, then growing slowly with the log of the
    length (Hugging Face ``Llama4TextAttention``: ``floor_scale``, ``attn_scale``).
    """

    floor_tokens: int
    scale: float

    def __post_init__(self) -> None:
        if self.floor_tokens < 1:
            raise ValueError(f"a temperature floor must be >= 1 token, got {self.floor_tokens}")


@dataclass(frozen=True)
class LayerSpec:
    """What one transformer layer does. ``None`` means "not applicable/full".

    The fields after ``temperature`` came later; at their defaults they leave the layer (and
    its ``to_dict``, hence every candidate id made before them) as it was.
    """

    index: int
    kind: LayerKind
    position: Position
    rope_base: float | None  # None exactly when position is NOPE
    window_tokens: int | None  # None = full causal attention
    qk_norm: QKNorm
    temperature: Temperature | None  # only on NoPE layers
    window_kind: WindowKind = WindowKind.SLIDING  # how window_tokens limits attention
    attention_sink: AttentionSink = AttentionSink.NONE
    rope_fraction: float = 1.0  # RoPE layers: the leading fraction of head dims rotated
    rope_scaling: RopeScaling | None = None  # RoPE layers only
    output_gate: OutputGate = OutputGate.NONE  # a sigmoid gate on each head's output
    rope_type: RopeType = RopeType.NEOX  # RoPE layers: which dims rope_fraction turns
    mixer: Mixer = Mixer.SOFTMAX
    recurrent: RecurrentShape | Mamba2Shape | None = None  # exactly for a recurrent mixer

    def __post_init__(self) -> None:
        """A spec is valid by construction: what holds for every layer whatever the model's
        size. What depends on the heads' size is :meth:`head_dim_problem`."""
        where = f"layer {self.index}"
        if self.index < 0:
            raise ValueError(f"{where}: a layer index is >= 0")
        rope = self.position is Position.ROPE
        if rope != (self.rope_base is not None):
            raise ValueError(f"{where}: rope_base must be set exactly for RoPE layers")
        if rope and not self.rope_base > 0:
            raise ValueError(f"{where}: rope_base must be > 0, got {self.rope_base}")
        if self.window_tokens is not None and self.window_tokens < 1:
            raise ValueError(f"{where}: window_tokens must be >= 1, got {self.window_tokens}")
        if self.temperature is not None and rope:
            raise ValueError(f"{where}: temperature applies to NoPE layers only")
        if self.rope_scaling is not None and not rope:
            raise ValueError(f"{where}: rope_scaling applies to RoPE layers only")
        if not 0 < self.rope_fraction <= 1:
            raise ValueError(f"{where}: rope_fraction must be in (0, 1], got {self.rope_fraction}")
        if self.rope_type is not RopeType.NEOX and not rope:
            raise ValueError(f"{where}: rope_type applies to RoPE layers only")
        if self.rope_type is RopeType.PROPORTIONAL and self.rope_scaling is not None:
            raise ValueError(f"{where}: rope_type: proportional takes no rope_scaling")
        softmax = self.mixer is Mixer.SOFTMAX
        if softmax != (self.recurrent is None):
            raise ValueError(f"{where}: recurrent sizes are set exactly for a recurrent mixer")
        if not softmax and not isinstance(self.recurrent, RECURRENT_SHAPES[self.mixer]):
            raise ValueError(
                f"{where}: a {self.mixer.value} layer needs {RECURRENT_SHAPES[self.mixer].__name__}"
            )
        if self.mixer is Mixer.KDA and self.recurrent.value_heads != self.recurrent.key_heads:
            raise ValueError(f"{where}: a kda layer has as many value heads as key heads")
        attention_only = {
            "position: rope": rope,
            "window_tokens": self.window_tokens is not None,
            "qk_norm": self.qk_norm is not QKNorm.NONE,
            "temperature": self.temperature is not None,
            "attention_sink": self.attention_sink is not AttentionSink.NONE,
            "output_gate": self.output_gate is not OutputGate.NONE,
        }
        if not softmax:
            for name, present in attention_only.items():
                if present:
                    raise ValueError(f"{where}: a {self.mixer.value} layer takes no {name}")

    def head_dim_problem(self, head_dim: int) -> str | None:
        """Why this layer cannot run on heads of ``head_dim`` dimensions (None: it can).
        RoPE turns pairs of dimensions: the rotated part must be even (and NTK's exponent
        ``d / (d - 2)`` needs ``d >= 4``)."""
        if self.position is not Position.ROPE:
            return None
        if self.rope_type is RopeType.PROPORTIONAL:
            return proportional_problem(self.rope_fraction, head_dim)
        problem = rotary_problem(self.rope_fraction, head_dim)
        if problem is not None:
            return problem
        dims = self.rotary_dims(head_dim)
        ntk = self.rope_scaling is not None and self.rope_scaling.kind is RopeScalingKind.NTK
        if ntk and dims < 4:
            return f"rope_scaling: ntk needs >= 4 rotated dimensions, got {dims}"
        return None

    def rotary_dims(self, head_dim: int) -> int:
        """Head dimensions that turn: ``int(head_dim * rope_fraction)`` (GPT-NeoX
        ``rotary_ndims``, the leading ones), two per turning pair for ``PROPORTIONAL``; 0 on a
        NoPE layer."""
        if self.position is Position.NOPE:
            return 0
        if self.rope_type is RopeType.PROPORTIONAL:
            return 2 * int(head_dim * self.rope_fraction // 2)
        return int(head_dim * self.rope_fraction)

    def to_dict(self) -> dict:
        out = {
            "index": self.index,
            "kind": self.kind.value,
            "position": self.position.value,
            "rope_base": self.rope_base,
            "window": self.window_tokens,
            "qk_norm": self.qk_norm.value,
            "temperature": None
            if self.temperature is None
            else {"floor_tokens": self.temperature.floor_tokens, "scale": self.temperature.scale},
        }
        # Later fields only where they differ from their default: ids stay stable.
        if self.window_kind is not WindowKind.SLIDING:
            out["window_kind"] = self.window_kind.value
        if self.attention_sink is not AttentionSink.NONE:
            out["attention_sink"] = self.attention_sink.value
        if self.rope_fraction != 1.0:
            out["rope_fraction"] = self.rope_fraction
        if self.rope_scaling is not None:
            out["rope_scaling"] = self.rope_scaling.to_dict()
        if self.output_gate is not OutputGate.NONE:
            out["output_gate"] = self.output_gate.value
        if self.rope_type is not RopeType.NEOX:
            out["rope_type"] = self.rope_type.value
        if self.mixer is not Mixer.SOFTMAX:
            out["mixer"] = self.mixer.value
            out["recurrent"] = self.recurrent.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> LayerSpec:
        """The inverse of :meth:`to_dict`."""
        temp = d.get("temperature")
        scaling = d.get("rope_scaling")
        mixer = Mixer(d.get("mixer", Mixer.SOFTMAX.value))
        return cls(
            index=int(d["index"]),
            kind=LayerKind(d["kind"]),
            position=Position(d["position"]),
            rope_base=None if d.get("rope_base") is None else float(d["rope_base"]),
            window_tokens=d.get("window"),
            qk_norm=QKNorm(d["qk_norm"]),
            temperature=None
            if temp is None
            else Temperature(int(temp["floor_tokens"]), float(temp["scale"])),
            window_kind=WindowKind(d.get("window_kind", WindowKind.SLIDING.value)),
            attention_sink=AttentionSink(d.get("attention_sink", AttentionSink.NONE.value)),
            rope_fraction=float(d.get("rope_fraction", 1.0)),
            rope_scaling=None if scaling is None else RopeScaling.from_dict(scaling),
            output_gate=OutputGate(d.get("output_gate", OutputGate.NONE.value)),
            rope_type=RopeType(d.get("rope_type", RopeType.NEOX.value)),
            mixer=mixer,
            recurrent=None
            if d.get("recurrent") is None
            else RECURRENT_SHAPES[mixer](**d["recurrent"]),
        )

    def parameter_layout(self) -> tuple[bool, bool, str, str]:
        """What this layer adds to the attention's parameters: (QK-norm weights, sink logits,
        output gate).

        Two specs with the same layout can share one set of weights (a later training stage
        may switch between them); anything else changes parameter shapes.
        """
        return (
            self.qk_norm is not QKNorm.NONE,
            self.attention_sink is AttentionSink.LEARNED,
            self.output_gate.value,
            self.mixer.value,
        )


def proportional_problem(fraction: float, head_dim: int) -> str | None:
    """Why proportional RoPE cannot turn ``fraction`` of a head of ``head_dim`` (None: it can)."""
    pairs = int(head_dim * fraction // 2)
    if head_dim % 2 == 0 and pairs >= 1:
        return None
    return (
        f"rope_type: proportional with rope_fraction={fraction:g} turns int({head_dim} x "
        f"{fraction:g} // 2) = {pairs} pairs of head_dim {head_dim}; it needs an even head_dim "
        "and >= 1 pair"
    )


def rotary_problem(fraction: float, head_dim: int) -> str | None:
    """Why ``rope_fraction`` cannot rotate part of a head of ``head_dim`` (None: it can)."""
    dims = int(head_dim * fraction)
    if dims >= 2 and dims % 2 == 0:
        return None
    return (
        f"rope_fraction={fraction:g} rotates int({head_dim} x {fraction:g}) = {dims} of "
        f"head_dim {head_dim} dimensions; RoPE needs an even number >= 2"
    )


GLOBAL_LETTER, LOCAL_LETTER = "G", "L"


def layout_problem(layout: str, n_layers: int | None = None) -> str | None:
    """Why ``layout`` is not a placement of ``n_layers`` layers (None: it is one).

    A layout is one letter per layer, first layer first: ``G`` global, ``L`` local.
    """
    letters = set(layout) - {GLOBAL_LETTER, LOCAL_LETTER}
    if not layout or letters:
        return f"expected one letter per layer, G (global) or L (local), got {layout!r}"
    if n_layers is not None and len(layout) != n_layers:
        return f"layout {layout!r} places {len(layout)} layers; the model has {n_layers}"
    return None


def global_layer_indices(
    n_layers: int, global_every: int, layout: str | None = None
) -> tuple[int, ...]:
    """0-based indices of the global layers.

    ``layout`` (one letter per layer, ``G`` global) when given; else ``k-1, 2k-1, ...`` for
    ``global_every: k`` (empty for ``k = 0``), the Hugging Face Cohere2 / Llama 4 convention.
    """
    if layout is not None:
        problem = layout_problem(layout, n_layers)
        if problem is not None:
            raise ValueError(problem)
        return tuple(i for i, letter in enumerate(layout) if letter == GLOBAL_LETTER)
    if global_every == 0:
        return ()
    return tuple(range(global_every - 1, n_layers, global_every))


def layer_kind(spec: LayerSpec) -> str:
    """``local_rope``, ``global_nope``, ``global_rope`` (or ``local_nope``): the label the
    attention-mass score groups layers by."""
    return f"{spec.kind.value}_{spec.position.value}"


@dataclass(frozen=True)
class ModelShape:
    """The fixed size of a candidate (not searched, except ``n_kv_heads``)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden: int
    vocab_size: int
    init_std: float = 0.02
    norm_eps: float = 1e-6
    parametrization: Parametrization = Parametrization.STANDARD
    # µP's base width: the width whose init and learning rates the standard ones are (None
    # with the standard parametrization).
    base_d_model: int | None = None

    def __post_init__(self) -> None:
        # from a dict (Candidate.from_dict): the enum's value
        object.__setattr__(self, "parametrization", Parametrization(self.parametrization))
        mup = self.parametrization is Parametrization.MUP
        if mup != (self.base_d_model is not None):
            raise ValueError("base_d_model is given exactly when the parametrization is mup")
        if mup and (self.base_d_model < 1 or self.base_d_model % self.n_heads):
            raise ValueError(
                f"base_d_model={self.base_d_model} must be a positive multiple of "
                f"n_heads={self.n_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def width_mult(self) -> float:
        """d_model / base_d_model under µP; 1 with the standard parametrization."""
        if self.base_d_model is None:
            return 1.0
        return self.d_model / self.base_d_model
