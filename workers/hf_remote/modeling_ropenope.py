"""A decoder-only transformer whose every layer follows its own spec (written by ``ropenope export``).

Self-contained (torch and transformers only) and numerically the model ropenope trained
(``workers/model.py``): Llama block (pre-norm RMSNorm in fp32, grouped-query attention, SwiGLU
MLP, tied embeddings, no biases), with per layer, from ``config.layer_specs``:

- RoPE (``rotate_half`` layout, the layer's own base) or NoPE;
- full causal attention or a sliding window of ``window`` keys counting the query itself
  (Hugging Face ``sliding_window`` semantics);
- QK-norm (RMSNorm over the head dimension, one weight for q and one for k) before or after the
  rotation; on a NoPE layer both placements are the same thing;
- Llama 4 temperature scaling of queries by their absolute position.

Weights use the Hugging Face Llama names, so ``model.safetensors`` is laid out as for Llama.
Generation keeps a key/value cache of every token (the cache object ``generate`` passes in);
the window is applied by the mask, so cached keys outside it are simply not attended to.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_ropenope import RopenopeConfig


class RopenopeRMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(positions: Tensor, head_dim: int, base: float, dtype: torch.dtype):
    """Absolute positions (B, T) -> cos, sin of shape (B, 1, T, head_dim), fp32 angles."""
    inv_freq = 1.0 / base ** (
        torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim
    )
    freqs = positions.float()[..., None] * inv_freq  # (B, T, head_dim / 2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos + rotate_half(x) * sin


def temperature_scale(positions: Tensor, floor_tokens: int, scale: float) -> Tensor:
    """Llama 4 query scale per absolute position (B, T): 1 + scale * log(1 + floor((p+1)/F))."""
    steps = torch.floor((positions.float() + 1.0) / floor_tokens)
    return 1.0 + scale * torch.log1p(steps)


def repeat_kv(x: Tensor, n_heads: int) -> Tensor:
    """(B, H_kv, S, D) -> (B, H, S, D): query head h reads key/value head h // (H // H_kv)."""
    b, h_kv, s, d = x.shape
    if h_kv == n_heads:
        return x
    return x[:, :, None].expand(b, h_kv, n_heads // h_kv, s, d).reshape(b, n_heads, s, d)


class RopenopeAttention(nn.Module):
    def __init__(self, config: RopenopeConfig, layer_idx: int) -> None:
        super().__init__()
        spec = config.layer_specs[layer_idx]
        self.layer_idx = layer_idx
        self.rope = spec["position"] == "rope"
        self.rope_base = float(spec["rope_base"]) if self.rope else None
        self.window = spec.get("window")
        self.qk_norm = spec.get("qk_norm", "none")
        self.temperature = spec.get("temperature")
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        if self.qk_norm != "none":
            self.q_norm = RopenopeRMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RopenopeRMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x: Tensor, positions: Tensor, key_valid: Tensor | None, cache: Any) -> Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)

        normalize_first = self.qk_norm == "pre_rope" or (
            self.qk_norm == "post_rope" and not self.rope
        )
        if normalize_first:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            cos, sin = rope_cos_sin(positions, D, self.rope_base, q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            if self.qk_norm == "post_rope":
                q, k = self.q_norm(q), self.k_norm(k)
        if self.temperature:
            t = self.temperature
            q = (
                q
                * temperature_scale(positions, t["floor_tokens"], t["scale"]).to(q.dtype)[
                    :, None, :, None
                ]
            )

        if cache is not None:  # keys and values of every earlier token, then these
            k, v = cache.update(k, v, self.layer_idx)
        S = k.shape[2]
        k, v = repeat_kv(k, H), repeat_kv(v, H)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)  # (B, H, T, S)
        i = torch.arange(S - T, S, device=x.device)[:, None]  # query index in the sequence
        j = torch.arange(S, device=x.device)[None, :]  # key index
        visible = j <= i
        if self.window is not None:
            visible = visible & (j > i - self.window)
        visible = visible[None, None]  # (1, 1, T, S)
        if key_valid is not None:  # padding: keys the attention mask hides
            visible = visible & key_valid[:, None, None, :]
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = F.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
        probs = torch.nan_to_num(probs.to(q.dtype))  # a fully padded row attends to nothing
        y = (probs @ v).transpose(1, 2).reshape(B, T, H * D)
        return self.o_proj(y)


class RopenopeMLP(nn.Module):
    def __init__(self, config: RopenopeConfig) -> None:
        super().__init__()
        d, m = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, m, bias=False)
        self.up_proj = nn.Linear(d, m, bias=False)
        self.down_proj = nn.Linear(m, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class RopenopeDecoderLayer(nn.Module):
    def __init__(self, config: RopenopeConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RopenopeRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = RopenopeAttention(config, layer_idx)
        self.post_attention_layernorm = RopenopeRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = RopenopeMLP(config)

    def forward(self, x: Tensor, positions: Tensor, key_valid: Tensor | None, cache: Any) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions, key_valid, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class RopenopePreTrainedModel(PreTrainedModel):
    config_class = RopenopeConfig
    base_model_prefix = "model"
    _no_split_modules = ["RopenopeDecoderLayer"]
    _supports_cache_class = True


class RopenopeModel(RopenopePreTrainedModel):
    def __init__(self, config: RopenopeConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            RopenopeDecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = RopenopeRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any = None,
    ) -> Tensor:
        B, T = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        key_valid = None
        if attention_mask is not None:
            if attention_mask.dim() != 2:
                raise ValueError("attention_mask must be (batch, keys) with 1 for real tokens")
            key_valid = attention_mask[:, -(past + T) :].bool()  # (B, S)
        if position_ids is None:
            if attention_mask is not None:  # left padding: real tokens count from 0
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=input_ids.device)[None]
        positions = position_ids.expand(B, T)
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, positions, key_valid, cache)
        return self.norm(x)


def _output(logits: Tensor, loss: Tensor | None, cache: Any) -> CausalLMOutputWithPast:
    # transformers renamed the output's cache field (past_key_values -> cache); fill either
    names = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    key = "cache" if "cache" in names else "past_key_values"
    return CausalLMOutputWithPast(loss=loss, logits=logits, **{key: cache})


class RopenopeForCausalLM(RopenopePreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: RopenopeConfig) -> None:
        super().__init__(config)
        self.model = RopenopeModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        if input_ids is None:
            raise ValueError("RopenopeForCausalLM needs input_ids")
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            from transformers.cache_utils import DynamicCache

            cache = DynamicCache()
        hidden = self.model(input_ids, attention_mask, position_ids, cache if use_cache else None)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
            )
        return _output(logits, loss, cache if use_cache else None)


__all__ = ["RopenopeForCausalLM", "RopenopeModel", "RopenopePreTrainedModel"]
