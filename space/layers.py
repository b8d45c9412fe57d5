"""Per-layer specs: the only form of the architecture the model ever sees.

Knobs (``global_every``, ``local_window``, ...) are expanded into a tuple of
:class:`LayerSpec` by :func:`space.expand.expand_layers`; the model reads each
layer's spec and never does ``layer_idx % k`` arithmetic itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LayerKind(StrEnum):
    LOCAL = "local"
    GLOBAL = "global"


class Position(StrEnum):
    ROPE = "rope"
    NOPE = "nope"


class QKNorm(StrEnum):
    NONE = "none"
    PRE_ROPE = "pre_rope"
    POST_ROPE = "post_rope"


class QKNormLayers(StrEnum):
    ALL = "all"
    LOCAL = "local"
    GLOBAL = "global"


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


@dataclass(frozen=True)
class LayerSpec:
    """What one transformer layer does. ``None`` means "not applicable/full"."""

    index: int
    kind: LayerKind
    position: Position
    rope_base: float | None  # None exactly when position is NOPE
    window_tokens: int | None  # None = full causal attention
    qk_norm: QKNorm
    temperature: Temperature | None  # only on NoPE layers

    def to_dict(self) -> dict:
        return {
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

    @classmethod
    def from_dict(cls, d: dict) -> LayerSpec:
        """The inverse of :meth:`to_dict`."""
        temp = d.get("temperature")
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
        )


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

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads
