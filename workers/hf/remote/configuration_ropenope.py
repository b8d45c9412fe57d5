"""Configuration of a ropenope hybrid-attention model (written by ``ropenope export``).

Self-contained: imports transformers only. ``layer_specs`` holds one entry per layer, exactly
the layer specs the model was trained with:

- ``position``: ``"rope"`` (rotary, ``rotate_half`` layout, base ``rope_base``) or ``"nope"``;
- ``window``: ``null`` for full causal attention, else the window in tokens;
  ``window_kind`` (absent = ``"sliding"``): ``"sliding"``, a query sees itself and the
  ``window - 1`` keys before it; ``"chunked"``, positions are cut into chunks of ``window``
  from position 0 and a query sees the keys of its own chunk up to itself (Llama 4);
- ``qk_norm``: ``"none"``, ``"pre_rope"`` or ``"post_rope"`` (RMSNorm over the head dimension
  on queries and keys, one learned weight each, before or after the rotation);
- ``temperature``: ``null``, or ``{"floor_tokens": F, "scale": s}``: queries at position ``p``
  are multiplied by ``1 + s * log(1 + floor((p + 1) / F))`` (Llama 4, NoPE layers);
- ``attention_sink`` (absent = ``"none"``): ``"learned"``, one logit per query head
  (``self_attn.sinks`` in the weights) that takes softmax mass and adds nothing (gpt-oss);
- ``rope_fraction`` (absent = 1): the first ``int(head_dim * rope_fraction)`` dimensions of each
  head turn, the rest are position-free (GPT-NeoX ``rotary_pct``);
- ``rope_scaling`` (absent = none): ``{"kind": "linear" | "ntk" | "yarn", "factor": f, ...}``
  with ``original_tokens`` (NTK, YaRN) and ``beta_fast``, ``beta_slow``, ``attention_factor``
  (YaRN), as Hugging Face's ``linear``, ``dynamic`` and ``yarn`` rope types.
"""

from __future__ import annotations

from typing import Any

try:  # transformers 5 spells it PreTrainedConfig; the old name is an alias
    from transformers import PreTrainedConfig
except ImportError:  # pragma: no cover - older transformers
    from transformers import PretrainedConfig as PreTrainedConfig


class RopenopeConfig(PreTrainedConfig):
    model_type = "ropenope_hybrid"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size: int = 264,
        hidden_size: int = 128,
        intermediate_size: int = 344,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 2048,
        layer_specs: list[dict[str, Any]] | None = None,
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.max_position_embeddings = max_position_embeddings
        self.use_cache = use_cache
        if layer_specs is None:  # the plain baseline: every layer RoPE, full attention
            layer_specs = [
                {
                    "position": "rope",
                    "rope_base": 10000.0,
                    "window": None,
                    "qk_norm": "none",
                    "temperature": None,
                }
                for _ in range(num_hidden_layers)
            ]
        if len(layer_specs) != num_hidden_layers:
            raise ValueError(
                f"{len(layer_specs)} layer_specs for num_hidden_layers={num_hidden_layers}"
            )
        self.layer_specs = [dict(spec) for spec in layer_specs]
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


__all__ = ["RopenopeConfig"]
