"""A decoder-only transformer whose every layer follows its own spec (written by ``ropenope export``).

Self-contained (torch and transformers only) and numerically the model ropenope trained
(``workers/model.py``): Llama block (pre-norm RMSNorm in fp32, grouped-query attention, SwiGLU
MLP, tied embeddings, no biases), with per layer, from ``config.layer_specs``:

- RoPE (``rotate_half`` layout, the layer's own base) or NoPE; partial rotary turns only the
  first ``int(head_dim * rope_fraction)`` dimensions of each head (GPT-NeoX), or, with
  ``rope_type: proportional`` (Gemma 4), keeps the fastest of a whole-head RoPE's frequencies
  and leaves the slowest unturned; a RoPE scaling
  (``linear``, ``ntk`` = Hugging Face ``dynamic``, ``yarn``) changes the frequencies exactly as
  Hugging Face's rope-init functions do;
- full causal attention, a sliding window of ``window`` keys counting the query itself (Hugging
  Face ``sliding_window``), or chunks of ``window`` positions counted from position 0 (Llama 4's
  ``attention_chunk_size``: a query sees the keys of its own chunk up to itself);
- learned attention sinks: one logit per query head, a virtual key that takes softmax mass and
  adds nothing (gpt-oss ``sinks``);
- QK-norm (RMSNorm over the head dimension, one weight for q and one for k) before or after the
  rotation; on a NoPE layer both placements are the same thing;
- Llama 4 temperature scaling of NoPE queries by their absolute position;
- an attention output gate (Gated Attention, Qwen3-Next): the heads' outputs times
  ``sigmoid(gate_proj(x))`` of the layer's (normalised) input before ``o_proj``, one gate per
  head (``headwise``) or per output dimension (``elementwise``); ``self_attn.gate_proj`` holds
  the gate rows head by head.

A layer whose spec says ``mixer: gated_deltanet`` has transformers' own
``Qwen3NextGatedDeltaNet`` (Qwen3-Next's ``linear_attn``, with the layer's ``recurrent`` sizes)
in place of attention, in the same pre-norm block; its weights are Qwen3-Next's fused
``in_proj_qkvz`` / ``in_proj_ba`` layout, which ``ropenope export`` writes. A ``mixer: mamba2``
layer has transformers' ``Mamba2Mixer`` (``mamba``, named as Granite 4.0-H's: convolution bias,
no projection bias), whose parameter names are ours. A ``mixer: kda`` layer has transformers'
``KimiLinearDeltaAttention`` (Kimi Linear's ``self_attn``, named as its checkpoints').

Weights use the Hugging Face Llama names (plus ``self_attn.sinks`` and ``self_attn.gate_proj``),
so ``model.safetensors`` is laid out as for Llama.

Generation keeps a cache (the cache object ``generate`` passes in): a full-attention
layer keeps every token, a layer with a window or chunk of W keeps only its last W - 1 tokens
(transformers' ``DynamicSlidingWindowLayer``), all a later query can see. Keys are cached
*before* the rotation and turned at every step for the positions they hold: with NTK scaling
the frequencies depend on the current length, and the model was trained and scored with every
key turned by the frequencies of the whole sequence. Windows and chunks are applied by the mask
on absolute positions, so cached keys outside a query's window or chunk are simply not attended
to. Positions count real tokens only: a left-padded row starts at 0. A Gated DeltaNet, Mamba2 or KDA
layer keeps its recurrent state instead (transformers' ``LinearAttentionLayer``: the last
``conv_tokens`` convolution inputs and the state matrix, the same bytes at any length), so each
generated token costs the same whatever the length. The recurrent modules zero padding tokens,
so they write nothing to the state. A transformers whose cache cannot hold recurrent state
(before its ``LinearAttentionLayer``), or a cache of another kind, makes such a model recompute
the whole sequence at every generated token instead: the same tokens, quadratic in the length.

Memory is bounded: scores are computed for ``QUERY_BLOCK`` queries at a time (never a full
T x T matrix), and a sequence longer than ``config.max_position_embeddings`` (the longest
context the model was scored at) is refused with a clear error; load with a larger
``max_position_embeddings`` to go further on purpose.
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

# Queries whose scores are computed at once: the score matrix holds at most
# batch x heads x QUERY_BLOCK x keys numbers, whatever the prompt's length.
QUERY_BLOCK = 256


class SequenceTooLong(ValueError):
    """More tokens than the model's ``max_position_embeddings``."""


def window_cache_layer(cache: Any, layer_idx: int, window: int) -> None:
    """Make layer ``layer_idx`` of a transformers ``DynamicCache`` keep only its last
    ``window - 1`` tokens (all a query of a window or chunk of ``window`` can see besides
    itself): its still empty full layer becomes a ``DynamicSlidingWindowLayer``, whose
    ``update`` returns the held tokens plus the new ones and whose length counts every token
    seen. Caches of another kind are left as they are."""
    try:
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
    except ImportError:  # a transformers without cache layers: the cache keeps every token
        return
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list):
        return
    replicate = getattr(cache, "layer_class_to_replicate", None)
    while len(layers) <= layer_idx and replicate is not None:
        layers.append(replicate())
    if layer_idx < len(layers):
        layer = layers[layer_idx]
        if type(layer) is DynamicLayer and not layer.is_initialized:
            # a window of 1 keeps nothing but the query; the layer class needs 2 to trim
            layers[layer_idx] = DynamicSlidingWindowLayer(sliding_window=max(int(window), 2))


_RECURRENT_CACHE: list[bool] = []  # the answer of recurrent_cache_supported, once known


def recurrent_cache_supported() -> bool:
    """Whether this transformers' cache holds recurrent state (``LinearAttentionLayer``) and its
    Gated DeltaNet, Mamba2 and KDA modules read it from a ``cache`` argument (asked once)."""
    if not _RECURRENT_CACHE:
        _RECURRENT_CACHE.append(_recurrent_cache_supported())
    return _RECURRENT_CACHE[0]


def _recurrent_cache_supported() -> bool:
    import inspect

    try:
        from transformers.cache_utils import LinearAttentionLayer  # noqa: F401
        from transformers.models.kimi_linear.modeling_kimi_linear import (
            KimiLinearDeltaAttention,
        )
        from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer
        from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextGatedDeltaNet
    except ImportError:
        return False
    return all(
        "cache" in inspect.signature(module.forward).parameters
        for module in (Qwen3NextGatedDeltaNet, Mamba2Mixer, KimiLinearDeltaAttention)
    )


def recurrent_cache_layer(cache: Any, layer_idx: int) -> bool:
    """Make layer ``layer_idx`` of a transformers ``DynamicCache`` hold a recurrent state: its
    still empty attention layer becomes a ``LinearAttentionLayer``. True when the layer holds
    one (now or already); False for a cache that cannot (another kind, or a layer that already
    holds keys)."""
    try:
        from transformers.cache_utils import (
            DynamicLayer,
            LinearAttentionCacheLayerMixin,
            LinearAttentionLayer,
        )
    except ImportError:
        return False
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list):
        return False
    replicate = getattr(cache, "layer_class_to_replicate", None)
    while len(layers) <= layer_idx and replicate is not None:
        layers.append(replicate())
    if layer_idx >= len(layers):
        return False
    layer = layers[layer_idx]
    if isinstance(layer, LinearAttentionCacheLayerMixin):
        return True
    if type(layer) is DynamicLayer and not layer.is_initialized:
        layers[layer_idx] = LinearAttentionLayer()
        return True
    return False


def recurrent_layer_indices(config: RopenopeConfig) -> list[int]:
    return [i for i, s in enumerate(config.layer_specs) if s.get("mixer", "softmax") != "softmax"]


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


# ---------------------------------------------------------------- RoPE and temperature helpers


def rope_inv_freq(
    rotary_dims: int,
    base: float,
    scaling: dict[str, Any] | None,
    seq_len: int,
    table_dims: int | None = None,
) -> tuple[Tensor, float]:
    """Inverse frequencies (rotary_dims / 2,) fp32 and the factor the tables are multiplied by.

    Hugging Face ``modeling_rope_utils``: ``linear``, ``dynamic`` (``ntk``: the base grows with
    the current length ``seq_len`` past ``original_tokens``) and ``yarn`` (``truncate=True``).
    ``table_dims`` (the head's size) is proportional RoPE (Hugging Face ``proportional``,
    Gemma 4): the frequencies of a RoPE over the whole head, the fastest ``rotary_dims / 2``
    kept and the slowest set to 0, so those dimensions are never turned; no scaling.
    """
    dim = rotary_dims
    if table_dims is not None:
        kept = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / table_dims)
        return torch.cat([kept, torch.zeros(table_dims // 2 - dim // 2)]), 1.0
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    if scaling is None:
        return 1.0 / base**exponents, 1.0
    kind, factor = scaling["kind"], float(scaling["factor"])
    if kind == "linear":
        return 1.0 / base**exponents / factor, 1.0
    original = int(scaling["original_tokens"])
    if kind == "ntk":
        length = max(seq_len, original)
        grown = base * ((factor * length / original) - (factor - 1)) ** (dim / (dim - 2))
        return 1.0 / grown**exponents, 1.0
    if kind != "yarn":
        raise ValueError(f"unknown rope_scaling kind {kind!r}")
    beta_fast, beta_slow = float(scaling["beta_fast"]), float(scaling["beta_slow"])

    def correction_dim(turns: float) -> float:
        return (dim * math.log(original / (turns * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = base**exponents
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # 1: the frequency is kept (fast dims), 0: interpolated (slow dims)
    inv_freq = interpolation * (1 - keep) + extrapolation * keep
    return inv_freq, float(scaling["attention_factor"])


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, S, D) by (B, 1, S, R) tables; with R < D the last D - R dims pass through."""
    rotary_dims = cos.shape[-1]
    if rotary_dims == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    turn, keep = x[..., :rotary_dims], x[..., rotary_dims:]
    return torch.cat([turn * cos + rotate_half(turn) * sin, keep], dim=-1)


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


# ---------------------------------------------------------------- attention


class RopenopeAttention(nn.Module):
    def __init__(self, config: RopenopeConfig, layer_idx: int) -> None:
        super().__init__()
        spec = config.layer_specs[layer_idx]
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.rope = spec["position"] == "rope"
        self.rope_base = float(spec["rope_base"]) if self.rope else None
        fraction = float(spec.get("rope_fraction", 1.0))
        self.rotary_dims = int(self.head_dim * fraction)
        self.table_dims = None
        if self.rope and spec.get("rope_type", "neox") == "proportional":
            self.rotary_dims = 2 * int(self.head_dim * fraction // 2)  # whole turning pairs
            self.table_dims = self.head_dim  # the tables span the head
        self.rope_scaling = spec.get("rope_scaling") if self.rope else None
        self.window = spec.get("window")
        self.chunked = self.window is not None and spec.get("window_kind") == "chunked"
        self.qk_norm = spec.get("qk_norm", "none")
        self.temperature = spec.get("temperature")
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        if self.qk_norm != "none":
            self.q_norm = RopenopeRMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RopenopeRMSNorm(self.head_dim, config.rms_norm_eps)
        if spec.get("attention_sink", "none") == "learned":
            self.sinks = nn.Parameter(torch.zeros(self.n_heads))  # loaded from the weights
        self.output_gate = spec.get("output_gate", "none")
        if self.output_gate != "none":  # one gate per head, or one per output dimension
            per_head = self.head_dim if self.output_gate == "elementwise" else 1
            self.gate_proj = nn.Linear(d, self.n_heads * per_head, bias=False)

    def _cos_sin(self, positions: Tensor, lengths: list[int] | None, dtype: torch.dtype):
        """Rotation tables (B, 1, S, R) for absolute positions (B, S). With NTK, row b turns with
        the frequencies of a sequence of ``lengths[b]`` tokens; every other kind ignores it."""
        if lengths is None:
            inv_freq, factor = rope_inv_freq(
                self.rotary_dims, self.rope_base, self.rope_scaling, 0, self.table_dims
            )
            inv_freq = inv_freq.to(positions.device)[None, None, :]  # (1, 1, R / 2)
        else:
            rows = [
                rope_inv_freq(
                    self.rotary_dims, self.rope_base, self.rope_scaling, n, self.table_dims
                )
                for n in lengths
            ]
            inv_freq = torch.stack([f for f, _ in rows]).to(positions.device)[:, None, :]
            factor = rows[0][1]  # (B, 1, R / 2); the table factor does not depend on the length
        freqs = positions.float()[..., None] * inv_freq  # (B, S, R / 2), fp32 angles
        emb = torch.cat([freqs, freqs], dim=-1)  # (B, S, R)
        return (emb.cos() * factor).to(dtype)[:, None], (emb.sin() * factor).to(dtype)[:, None]

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        key_positions: Tensor,
        key_valid: Tensor | None,
        cache: Any,
    ) -> Tensor:
        """``positions`` (B, T) of the queries, ``key_positions`` (B, S) of every key the cache
        will hold after this call (S = cached + T), ``key_valid`` (B, S) False on padding."""
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
        if cache is not None:  # un-rotated keys of the earlier tokens it holds, then these
            if self.window is not None:
                window_cache_layer(cache, self.layer_idx, self.window)
            k, v = cache.update(k, v, self.layer_idx)
        S = k.shape[2]
        if key_positions.shape[1] > S:  # a windowed layer holds only the latest keys
            key_positions = key_positions[:, -S:]
            key_valid = key_valid[:, -S:] if key_valid is not None else None
        if self.rope:
            lengths = None
            if self.rope_scaling is not None and self.rope_scaling["kind"] == "ntk":
                # NTK's frequencies follow the current length: each row's largest position + 1
                lengths = (positions.max(dim=-1).values + 1).tolist()
            q = apply_rope(q, *self._cos_sin(positions, lengths, q.dtype))  # tables (B, 1, T, R)
            k = apply_rope(k, *self._cos_sin(key_positions, lengths, k.dtype))  # (B, 1, S, R)
            if self.qk_norm == "post_rope":
                q, k = self.q_norm(q), self.k_norm(k)
        if self.temperature:
            t = self.temperature
            scale = temperature_scale(positions, t["floor_tokens"], t["scale"])  # (B, T)
            q = q * scale.to(q.dtype)[:, None, :, None]

        k, v = repeat_kv(k, H), repeat_kv(v, H)
        sinks = getattr(self, "sinks", None)
        blocks = [
            self._attend(q[:, :, a : a + QUERY_BLOCK], k, v, positions[:, a : a + QUERY_BLOCK],
                         key_positions, key_valid, S - T + a, sinks)
            for a in range(0, T, QUERY_BLOCK)
        ]  # fmt: skip
        y = torch.cat(blocks, dim=2).transpose(1, 2)  # (B, T, H, D)
        if self.output_gate != "none":  # sigmoid of the layer input, per head or dimension
            y = y * torch.sigmoid(self.gate_proj(x).view(B, T, H, -1))
        return self.o_proj(y.reshape(B, T, H * D))

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        positions: Tensor,
        key_positions: Tensor,
        key_valid: Tensor | None,
        first: int,
        sinks: Tensor | None,
    ) -> Tensor:
        """Attention of the queries ``q`` (B, H, t, D) at absolute ``positions`` (B, t), the
        ``first`` of them at key index ``first``, over every key (B, H, S, D): (B, H, t, D)."""
        B, H, t, D = q.shape
        S = k.shape[2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)  # (B, H, t, S)
        i = torch.arange(first, first + t, device=q.device)[:, None]  # query index
        j = torch.arange(S, device=q.device)[None, :]  # key index
        visible = (j <= i)[None]  # (1, t, S)
        if self.window is not None:
            q_pos, k_pos = positions[:, :, None], key_positions[:, None, :]  # absolute
            if self.chunked:
                visible = visible & (q_pos // self.window == k_pos // self.window)
            else:
                visible = visible & (k_pos > q_pos - self.window)
        if key_valid is not None:  # padding: keys the attention mask hides
            visible = visible & key_valid[:, None, :]
        scores = scores.masked_fill(~visible[:, None], float("-inf"))
        if sinks is not None:  # one more column: the sink's logit, per head
            column = sinks.to(scores.dtype).view(1, H, 1, 1).expand(B, H, t, 1)
            scores = torch.cat([scores, column], dim=-1)  # (B, H, t, S + 1)
        probs = F.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
        probs = torch.nan_to_num(probs.to(q.dtype))  # a fully padded row attends to nothing
        if sinks is not None:
            probs = probs[..., :S]  # the sink's share is dropped: its value is zero
        return probs @ v


# ---------------------------------------------------------------- MLP, block, model


class RopenopeMLP(nn.Module):
    def __init__(self, config: RopenopeConfig) -> None:
        super().__init__()
        d, m = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, m, bias=False)
        self.up_proj = nn.Linear(d, m, bias=False)
        self.down_proj = nn.Linear(m, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def gated_deltanet(config: RopenopeConfig, layer_idx: int) -> nn.Module:
    """transformers' ``Qwen3NextGatedDeltaNet`` with this layer's sizes (``recurrent``)."""
    from transformers import Qwen3NextConfig
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextGatedDeltaNet

    r = config.layer_specs[layer_idx]["recurrent"]
    sizes = Qwen3NextConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        layer_types=[
            "linear_attention" if s.get("mixer") == "gated_deltanet" else "full_attention"
            for s in config.layer_specs
        ],
        linear_num_key_heads=r["key_heads"],
        linear_num_value_heads=r["value_heads"],
        linear_key_head_dim=r["head_dim"],
        linear_value_head_dim=r["head_dim"],
        linear_conv_kernel_dim=r["conv_tokens"],
        rms_norm_eps=config.rms_norm_eps,
        hidden_act="silu",
        num_experts=0,
        vocab_size=config.vocab_size,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        intermediate_size=config.intermediate_size,
    )
    return Qwen3NextGatedDeltaNet(sizes, layer_idx)


def mamba2(config: RopenopeConfig, layer_idx: int) -> nn.Module:
    """transformers' ``Mamba2Mixer`` with this layer's sizes (``recurrent``): convolution bias,
    no projection bias, as Granite 4.0-H's mamba layers."""
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    r = config.layer_specs[layer_idx]["recurrent"]
    sizes = Mamba2Config(
        hidden_size=config.hidden_size,
        expand=r["heads"] * r["head_dim"] // config.hidden_size,
        num_heads=r["heads"],
        head_dim=r["head_dim"],
        state_size=r["state_size"],
        n_groups=r["groups"],
        conv_kernel=r["conv_tokens"],
        num_hidden_layers=config.num_hidden_layers,
        layer_norm_epsilon=config.rms_norm_eps,
        use_conv_bias=True,
        use_bias=False,
        chunk_size=256,
        vocab_size=config.vocab_size,
    )
    return Mamba2Mixer(sizes, layer_idx)


def kda(config: RopenopeConfig, layer_idx: int) -> nn.Module:
    """transformers' ``KimiLinearDeltaAttention`` (Kimi Linear's KDA) with this layer's sizes
    (``recurrent``: as many value heads as key heads)."""
    from transformers import KimiLinearConfig
    from transformers.models.kimi_linear.modeling_kimi_linear import KimiLinearDeltaAttention

    r = config.layer_specs[layer_idx]["recurrent"]
    sizes = KimiLinearConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        layer_types=[
            "linear_attention" if s.get("mixer") == "kda" else "full_attention"
            for s in config.layer_specs
        ],
        linear_num_heads=r["key_heads"],
        linear_head_dim=r["head_dim"],
        linear_conv_kernel_dim=r["conv_tokens"],
        rms_norm_eps=config.rms_norm_eps,
        hidden_act="silu",
        vocab_size=config.vocab_size,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        intermediate_size=config.intermediate_size,
        pad_token_id=None,  # Kimi's defaults lie outside a small vocabulary
        bos_token_id=None,
        eos_token_id=None,
    )
    return KimiLinearDeltaAttention(sizes, layer_idx)


def has_recurrent_layer(config: RopenopeConfig) -> bool:
    return bool(recurrent_layer_indices(config))


def caches_recurrent_state(config: RopenopeConfig) -> bool:
    """False where a model with recurrent layers must recompute the sequence at every step."""
    return not has_recurrent_layer(config) or recurrent_cache_supported()


class RopenopeDecoderLayer(nn.Module):
    def __init__(self, config: RopenopeConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RopenopeRMSNorm(config.hidden_size, config.rms_norm_eps)
        mixer = config.layer_specs[layer_idx].get("mixer", "softmax")
        if mixer == "gated_deltanet":
            self.linear_attn = gated_deltanet(config, layer_idx)
        elif mixer == "mamba2":
            self.mamba = mamba2(config, layer_idx)
        elif mixer == "kda":
            self.self_attn = kda(config, layer_idx)
        elif mixer == "softmax":
            self.self_attn = RopenopeAttention(config, layer_idx)
        else:
            raise ValueError(f"layer {layer_idx}: mixer {mixer!r} is not in this modeling file")
        self.post_attention_layernorm = RopenopeRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = RopenopeMLP(config)

    def recurrent_mixer(self) -> nn.Module | None:
        """The layer's Gated DeltaNet, Mamba2 or KDA module; None for attention."""
        for name in ("linear_attn", "mamba", "self_attn"):
            module = getattr(self, name, None)
            if module is not None and not isinstance(module, RopenopeAttention):
                return module
        return None

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        key_positions: Tensor,
        key_valid: Tensor | None,
        cache: Any,
    ) -> Tensor:
        h = self.input_layernorm(x)
        recurrent = self.recurrent_mixer()
        if recurrent is not None:
            mixer = recurrent
            T = x.shape[1]
            # the padding of these T tokens (the state holds the earlier ones); one new token
            # is never padding, and an all-real mask needs no multiply
            mask = None if key_valid is None or T == 1 else key_valid[:, -T:]
            if mask is not None and bool(mask.all()):
                mask = None
            a = mixer(h, attention_mask=mask, **({"cache": cache} if cache is not None else {}))
        else:
            a = self.self_attn(h, positions, key_positions, key_valid, cache)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x))


class RopenopePreTrainedModel(PreTrainedModel):
    config_class = RopenopeConfig
    base_model_prefix = "model"
    _no_split_modules = ["RopenopeDecoderLayer"]
    _supports_cache_class = True


def key_positions_of(positions: Tensor, key_valid: Tensor | None, n_keys: int) -> Tensor:
    """Absolute positions (B, S) of the ``n_keys`` keys that end with these queries.

    Real keys are consecutive positions ending at the last query's position; padding keys (which
    the mask hides anyway) take the position of the next real key.
    """
    B = positions.shape[0]
    valid = (
        key_valid.long()
        if key_valid is not None
        else torch.ones(B, n_keys, dtype=torch.long, device=positions.device)
    )
    count = valid.cumsum(-1)  # real keys up to and including key j
    return positions[:, -1:] - count[:, -1:] + count


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
        past = int(cache.get_seq_length()) if cache is not None else 0
        limit = self.config.max_position_embeddings
        if past + T > limit:
            raise SequenceTooLong(
                f"{past + T} tokens ({past} cached + {T} new) exceed this model's "
                f"max_position_embeddings={limit}, the longest context it was scored at; "
                "shorten the prompt or max_new_tokens, or load it with a larger "
                "max_position_embeddings to go further on purpose"
            )
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
        key_positions = key_positions_of(positions, key_valid, past + T)
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, positions, key_positions, key_valid, cache)
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

    def prepare_inputs_for_generation(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Where the recurrent state cannot be cached, every step reads the whole sequence."""
        if caches_recurrent_state(self.config):
            return super().prepare_inputs_for_generation(
                input_ids, attention_mask=attention_mask, **kwargs
            )
        return {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}

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
        if not caches_recurrent_state(self.config):  # recomputed from the first token
            use_cache, cache = False, None
        if use_cache and cache is None:
            from transformers.cache_utils import DynamicCache

            cache = DynamicCache()
        if use_cache:
            for i in recurrent_layer_indices(self.config):
                if not recurrent_cache_layer(cache, i):
                    raise ValueError(
                        f"layer {i} is a {self.config.layer_specs[i]['mixer']} layer: its "
                        f"state needs transformers' DynamicCache, not {type(cache).__name__} "
                        "(generate with the default cache, or use_cache=False)"
                    )
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


__all__ = [
    "RopenopeForCausalLM",
    "RopenopeModel",
    "RopenopePreTrainedModel",
    "SequenceTooLong",
]
