"""Which stock Hugging Face ``transformers`` class reproduces a candidate exactly, and its config.

Our block is the Llama block (pre-norm RMSNorm, SwiGLU, GQA, ``rotate_half`` RoPE, tied
embeddings, no biases); three stock classes add per-layer options on top of it, each checked
against our model in ``tests/test_hf_parity.py`` and ``tests/test_hf_export.py``:

- ``LlamaForCausalLM``: every layer RoPE with one base, full attention, no QK-norm.
- ``Qwen3ForCausalLM``: every layer RoPE with one base and QK-norm before the rotation (one
  RMSNorm weight for q and one for k, shared by the heads), each layer full or sliding with one
  window size (``layer_types``).
- ``SmolLM3ForCausalLM``: no QK-norm; each layer RoPE (one base) or NoPE (``no_rope_layers``,
  where 1 means RoPE), full or sliding with one window size (``layer_types``: always written,
  since SmolLM3's default pattern puts the window on the NoPE layers, DESIGN §7).

What none of them expresses (QK-norm on some layers only, a learned QK-norm after RoPE, QK-norm
together with NoPE layers, NoPE query temperature, two RoPE bases, two window sizes) is a
:class:`NotExpressible` naming the knob and its value; such a candidate exports with its own
modeling file (``--remote-code``). Per-layer fields this module does not know (new knobs) are
refused outright, remote code included, rather than exported as something else.

Pure: no torch, no transformers; the config is a plain dict for the class's ``from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from space.layers import LayerKind, LayerSpec, ModelShape, Position, QKNorm

# Keys of LayerSpec.to_dict() this module (and the remote-code model) implements. A new
# per-layer field appears in to_dict() only when it differs from its default, so its mere
# presence means the layer does something we cannot export.
KNOWN_LAYER_FIELDS = frozenset(
    {"index", "kind", "position", "rope_base", "window", "qk_norm", "temperature"}
)

LLAMA = "LlamaForCausalLM"
QWEN3 = "Qwen3ForCausalLM"
SMOLLM3 = "SmolLM3ForCausalLM"
MODEL_TYPES = {LLAMA: "llama", QWEN3: "qwen3", SMOLLM3: "smollm3"}

SLIDING = "sliding_attention"
FULL = "full_attention"
# The base written for a model without any RoPE layer (SmolLM3 needs one; no layer uses it).
UNUSED_ROPE_BASE = 10_000.0


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


@dataclass(frozen=True)
class StockLayout:
    """A stock class and the ``config.json`` fields that make it our candidate."""

    architecture: str  # e.g. "SmolLM3ForCausalLM"
    config: dict[str, Any]  # for the class's config, with "model_type" and "architectures"

    @property
    def model_type(self) -> str:
        return MODEL_TYPES[self.architecture]


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
        for key, value in spec.to_dict().items():
            if key not in KNOWN_LAYER_FIELDS and key not in seen:
                seen.add(key)
                reasons.append(Reason(key, value, f"layer {spec.index}: not implemented by export"))
    return reasons


def stock_reasons(layers: Sequence[LayerSpec], knobs: Mapping[str, Any]) -> list[Reason]:
    """Everything that keeps each stock class from reproducing ``layers`` (empty: one can).

    ``knobs`` are the candidate's resolved knobs, used only to name the cause in the user's
    words; the decision is made on the layers themselves.
    """
    reasons: list[Reason] = []
    temps = [s for s in layers if s.temperature is not None]
    if temps:
        t = temps[0].temperature
        reasons.append(
            Reason(
                "global_temperature",
                _knob(knobs, "global_temperature", "log"),
                f"Llama 4 scaling of NoPE queries from {t.floor_tokens} tokens on, scale "
                f"{t.scale:g}: only Llama4 has it, and its block is not ours",
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
    return reasons


def stock_layout(
    shape: ModelShape,
    layers: Sequence[LayerSpec],
    knobs: Mapping[str, Any] | None = None,
    *,
    max_position_embeddings: int,
    special_tokens: Mapping[str, int | None] | None = None,
) -> StockLayout:
    """The stock class that reproduces the candidate and its config; raises NotExpressible.

    ``special_tokens`` gives ``bos_token_id`` / ``eos_token_id`` / ``pad_token_id``.
    """
    knobs = dict(knobs or {})
    unknown = unknown_layer_fields(layers)
    if unknown:
        raise NotExpressible(unknown, remote_code_possible=False)
    reasons = stock_reasons(layers, knobs)
    if reasons:
        raise NotExpressible(reasons)

    rope = [s for s in layers if s.position is Position.ROPE]
    base = rope[0].rope_base if rope else UNUSED_ROPE_BASE
    windows = {s.window_tokens for s in layers if s.window_tokens is not None}
    window = windows.pop() if windows else None
    qk_norm = any(s.qk_norm is not QKNorm.NONE for s in layers)
    all_rope = len(rope) == len(layers)

    common: dict[str, Any] = {
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.d_model,
        "intermediate_size": shape.mlp_hidden,
        "num_hidden_layers": shape.n_layers,
        "num_attention_heads": shape.n_heads,
        "num_key_value_heads": shape.n_kv_heads,
        "hidden_act": "silu",
        "rms_norm_eps": shape.norm_eps,
        "initializer_range": shape.init_std,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(base)},
        "max_position_embeddings": int(max_position_embeddings),
        "tie_word_embeddings": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_cache": True,
        "dtype": "float32",  # the weights as trained (AdamW keeps fp32 masters)
        # Always explicit (DESIGN §7): which layers slide, in the stock classes' words.
        "layer_types": [SLIDING if s.window_tokens is not None else FULL for s in layers],
        **{k: v for k, v in (special_tokens or {}).items()},
    }
    if qk_norm:  # stock_reasons made sure: every layer RoPE, one base, normalised before RoPE
        architecture = QWEN3
        config = {
            **common,
            "head_dim": shape.head_dim,
            "use_sliding_window": window is not None,
            "sliding_window": window,
            "max_window_layers": shape.n_layers,  # unused: layer_types is explicit
        }
    elif all_rope and window is None:
        architecture = LLAMA
        config = {**common, "head_dim": shape.head_dim, "mlp_bias": False}
    else:
        architecture = SMOLLM3
        config = {
            **common,
            "mlp_bias": False,
            "use_sliding_window": window is not None,
            "sliding_window": window,
            # SmolLM3's inverted flag: 1 = this layer uses RoPE.
            "no_rope_layers": [int(s.position is Position.ROPE) for s in layers],
        }
    config["model_type"] = MODEL_TYPES[architecture]
    config["architectures"] = [architecture]
    return StockLayout(architecture=architecture, config=config)


__all__ = [
    "KNOWN_LAYER_FIELDS",
    "LLAMA",
    "QWEN3",
    "SMOLLM3",
    "NotExpressible",
    "Reason",
    "StockLayout",
    "stock_layout",
    "stock_reasons",
    "unknown_layer_fields",
]
