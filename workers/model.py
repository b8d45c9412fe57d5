"""A decoder-only transformer whose every layer does what its ``LayerSpec`` says.

Llama-style: pre-norm RMSNorm, grouped-query attention, SwiGLU MLP, tied input/output
embeddings, final RMSNorm, no biases. Per layer, from ``space.layers.LayerSpec``:

- position: RoPE with the layer's own ``rope_base`` (Hugging Face ``rotate_half`` layout, so
  Llama weights load unchanged), or NoPE (no rotation at all); partial rotary turns only the
  leading ``rope_fraction`` of each head (GPT-NeoX ``rotary_pct``), or, proportional RoPE
  (Gemma 4), the fastest pairs of a whole-head RoPE only; a RoPE scaling (linear,
  NTK, YaRN) changes the frequencies exactly as Hugging Face's rope-init functions do;
- window: full causal attention, a sliding window of ``window_tokens`` keys counting the
  query itself (Hugging Face ``sliding_window``), or chunks of ``window_tokens`` (Llama 4), see
  ``workers.attention``;
- attention sink: one learned logit per query head that takes softmax mass (gpt-oss ``sinks``);
- output gate: ``sigmoid(gate_proj(x))`` times each head's output before ``o_proj``, one gate
  per head or per dimension (Gated Attention; Qwen3-Next, whose fused ``q_proj`` holds the same
  weights as our ``q_proj`` and ``gate_proj`` side by side);
- QK-norm: RMSNorm over ``head_dim`` on queries and keys (one learned weight each, shared by all
  heads), before or after the rotation; on a NoPE layer both placements are the same thing;
- temperature: Llama 4 scaling of NoPE queries by their absolute position.

The parametrization (``ModelShape.parametrization``) is model-wide. ``standard``: every
weight starts at ``init_std`` and trains at the one learning rate. ``mup`` (µP, the rules of
the ``mup`` package for Adam, written here rather than imported), relative to the width
multiplier ``m = d_model / base_d_model``: every matrix inside a block (attention, MLP,
recurrent projections) starts at ``init_std / sqrt(m)`` and trains at ``lr / m``
(:meth:`HybridTransformer.lr_scales`); the tied embedding and the vectors (norms, sinks)
keep ``init_std`` and ``lr``; the logits are multiplied by ``1 / m`` (the read-out
multiplier); attention scores scale as ``1 / head_dim`` instead of ``1 / sqrt(head_dim)``,
with the constant ``sqrt(base_head_dim)`` in front (``mup_query_scale``). At ``m = 1`` µP is
the standard parametrization exactly; an ``lr`` tuned at ``base_d_model`` is the one to use
at every other width.

Greedy decoding reuses what earlier tokens computed: :meth:`HybridTransformer.new_cache`
allocates a ``workers.kv_cache.KVCache`` and :meth:`HybridTransformer.step` runs a few new
tokens against it (a prompt in chunks, then one token per step); the plain ``forward`` of
the whole sequence is the reference it is tested against.

Reads top to bottom: norms and RoPE helpers, attention (with the ``ForwardContext`` that
every layer of one pass shares: positions, backend, what to return), MLP, block, model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from space.layers import (
    AttentionSink,
    LayerSpec,
    Mixer,
    ModelShape,
    OutputGate,
    Parametrization,
    Position,
    QKNorm,
    RopeScaling,
    RopeScalingKind,
    RopeType,
    Temperature,
)
from workers.attention import attend, cached_attention, dense_attention
from workers.deltanet import GatedDeltaNet
from workers.kda import KimiDeltaAttention
from workers.kv_cache import KVCache, LayerCache, RecurrentCache
from workers.mamba2 import Mamba2


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (the Hugging Face Llama formula, for parity)."""

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
    rope_base: float,
    scaling: RopeScaling | None = None,
    seq_len: int = 0,
    table_dims: int | None = None,
) -> tuple[Tensor, float]:
    """Inverse frequencies (rotary_dims / 2,) fp32 and the factor the tables are multiplied by.

    Unscaled, frequency k turns by ``rope_base ** (-2k / rotary_dims)`` radians per token. The
    scalings follow Hugging Face ``modeling_rope_utils`` line for line (``linear``, ``dynamic``
    for NTK, ``yarn`` with ``truncate=True``); ``seq_len`` is the current length (the largest
    position + 1), which only NTK reads.
    """
    dim = rotary_dims
    if table_dims is not None:
        # proportional RoPE (Hugging Face ``proportional``): the frequencies of a RoPE over the
        # whole head, the fastest rotary_dims / 2 of them kept, the slowest set to 0 (unturned)
        kept = 1.0 / rope_base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / table_dims)
        return torch.cat([kept, torch.zeros(table_dims // 2 - dim // 2)]), 1.0
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    if scaling is None:
        return 1.0 / rope_base**exponents, 1.0
    factor = scaling.factor
    if scaling.kind is RopeScalingKind.LINEAR:
        return 1.0 / rope_base**exponents / factor, 1.0
    original = scaling.original_tokens
    if scaling.kind is RopeScalingKind.NTK:
        # the base grows with the length past the original; unchanged up to it
        length = max(seq_len, original)
        base = rope_base * ((factor * length / original) - (factor - 1)) ** (dim / (dim - 2))
        return 1.0 / base**exponents, 1.0

    # YaRN: dimensions that turn more than beta_fast times over the original length keep their
    # frequency, those under beta_slow turns are interpolated by the factor, a ramp between.
    def correction_dim(turns: float) -> float:
        return (dim * math.log(original / (turns * 2 * math.pi))) / (2 * math.log(rope_base))

    low = max(math.floor(correction_dim(scaling.beta_fast)), 0)
    high = min(math.ceil(correction_dim(scaling.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # Hugging Face's guard against a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = rope_base**exponents
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # 1: keep the frequency (fast dims), 0: interpolate (slow dims)
    return interpolation * (1 - keep) + extrapolation * keep, scaling.attention_factor


def rope_cos_sin(
    positions: Tensor,
    rotary_dims: int,
    rope_base: float,
    dtype: torch.dtype,
    scaling: RopeScaling | None = None,
    length: int | None = None,
    table_dims: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Rotation tables for absolute positions (T,) -> cos, sin of shape (T, rotary_dims), or
    (T, table_dims) for proportional RoPE (``table_dims``: the head's size, see
    :func:`rope_inv_freq`).

    Both halves of the rotated part repeat the same frequencies (``rotate_half`` layout); a
    YaRN scaling multiplies both tables by its attention factor, as Hugging Face does.
    ``length`` is the sequence length an NTK scaling sizes its base for (default: the
    largest position + 1); the other scalings do not read it.
    """
    ntk = scaling is not None and scaling.kind is RopeScalingKind.NTK
    seq_len = 0
    if ntk and positions.numel():
        seq_len = int(positions.max()) + 1 if length is None else length
    inv_freq, attention_factor = rope_inv_freq(rotary_dims, rope_base, scaling, seq_len, table_dims)
    inv_freq = inv_freq.to(positions.device)
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, R / 2), fp32 angles
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, R)
    return (emb.cos() * attention_factor).to(dtype), (emb.sin() * attention_factor).to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, D) by the (T, R) tables: pair (d, d + R/2) turns as one complex number.

    ``R < D`` is partial rotary (GPT-NeoX): the first ``R`` dims turn, the rest pass through.
    """
    rotary_dims = cos.shape[-1]
    if rotary_dims == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    turn, keep = x[..., :rotary_dims], x[..., rotary_dims:]
    return torch.cat([turn * cos + rotate_half(turn) * sin, keep], dim=-1)


def temperature_scale(positions: Tensor, temperature: Temperature) -> Tensor:
    """Llama 4 query scale per absolute position (T,); exactly 1 while ``p + 1 < floor_tokens``.

    ``1 + scale * log(1 + floor((p + 1) / floor_tokens))``; NoPE attention logits grow sharper
    with length instead of spreading thin over more keys.
    """
    steps = torch.floor((positions.float() + 1.0) / temperature.floor_tokens)
    return 1.0 + temperature.scale * torch.log1p(steps)


# ---------------------------------------------------------------- µP multipliers


def mup_query_scale(shape: ModelShape) -> float:
    """What queries are multiplied by so that attention scores scale as ``1 / head_dim``
    (µP) rather than ``1 / sqrt(head_dim)``: ``sqrt(base_head_dim / head_dim)``, 1 at the base
    width and with the standard parametrization. A factor on the queries, not on the scores,
    so every attention path (and an added sink logit) sees it the same way."""
    if shape.parametrization is not Parametrization.MUP or shape.base_d_model is None:
        return 1.0
    return math.sqrt(shape.base_d_model / shape.d_model)


# ---------------------------------------------------------------- attention


@dataclass(frozen=True)
class ForwardContext:
    """What every layer of one forward pass shares (a layer's own cache is passed beside it).

    ``positions`` (T,) are the tokens' absolute positions and ``start_pos`` is
    ``positions[0]`` (chunk boundaries are absolute); ``backend`` forces one of
    ``workers.attention.BACKENDS`` (None: chosen per layer); ``return_attn`` runs the dense
    reference and returns the probabilities; ``rope_length`` is the length an NTK scaling
    sizes its base for (``rope_cos_sin``).
    """

    positions: Tensor
    start_pos: int
    backend: str | None = None
    return_attn: bool = False
    rope_length: int | None = None

    @classmethod
    def at(cls, positions: Tensor, **options: object) -> ForwardContext:
        """A pass over ``positions``, its ``start_pos`` read from them."""
        start = int(positions[0]) if positions.numel() else 0
        return cls(positions, start, **options)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.n_heads, self.n_kv_heads = shape.n_heads, shape.n_kv_heads
        self.head_dim = shape.head_dim
        self.query_scale = mup_query_scale(shape)  # 1 unless µP
        # names follow Hugging Face Llama so weights copy across one to one
        self.q_proj = nn.Linear(shape.d_model, shape.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(shape.d_model, shape.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(shape.d_model, shape.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(shape.n_heads * self.head_dim, shape.d_model, bias=False)
        if spec.qk_norm is not QKNorm.NONE:
            self.q_norm = RMSNorm(self.head_dim, shape.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, shape.norm_eps)
        if spec.attention_sink is AttentionSink.LEARNED:
            # one logit per query head (gpt-oss ``sinks``); 0 to start: the sink weighs as much
            # as one key with score 0
            self.sinks = nn.Parameter(torch.zeros(shape.n_heads))
        if spec.output_gate is not OutputGate.NONE:
            per_head = self.head_dim if spec.output_gate is OutputGate.ELEMENTWISE else 1
            self.gate_proj = nn.Linear(shape.d_model, shape.n_heads * per_head, bias=False)

    def _output(self, x: Tensor, y: Tensor) -> Tensor:
        """Heads' outputs y (B, H, T, D) of the layer input x (B, T, C) -> (B, T, C): gated
        (a sigmoid of x per head or per dimension) where the spec says, then ``o_proj``."""
        B, H, T, D = y.shape
        y = y.transpose(1, 2)  # (B, T, H, D)
        if self.spec.output_gate is not OutputGate.NONE:
            gate = self.gate_proj(x).view(B, T, H, -1)  # (B, T, H, D or 1)
            y = y * torch.sigmoid(gate)
        return self.o_proj(y.reshape(B, T, H * D))

    def forward(
        self, x: Tensor, ctx: ForwardContext, cache: LayerCache | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) at ``ctx.positions`` -> (B, T, C) and, with ``ctx.return_attn``, the
        probabilities. With ``cache``, the T new tokens attend to what the layer kept of
        earlier ones and are kept in turn (the probabilities are then over the cache's
        slots, see ``workers.attention.cached_attention``)."""
        spec = self.spec
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)

        # Pre-rope norm (Qwen3, Gemma 3) rescales vectors before they turn; post-rope (Llama 4,
        # whose norm has no weight) after. Rotation keeps the norm, but a learned weight does
        # not commute with it: post-rope, scores then depend on absolute position, not only on
        # the distance. On a NoPE layer there is nothing to be before or after.
        normalize_first = spec.qk_norm is QKNorm.PRE_ROPE or (
            spec.qk_norm is QKNorm.POST_ROPE and spec.position is Position.NOPE
        )
        if normalize_first:
            q, k = self.q_norm(q), self.k_norm(k)
        positions = ctx.positions
        if spec.position is Position.ROPE:
            cos, sin = rope_cos_sin(
                positions,
                spec.rotary_dims(D),
                spec.rope_base,
                q.dtype,
                spec.rope_scaling,
                length=ctx.rope_length,
                table_dims=D if spec.rope_type is RopeType.PROPORTIONAL else None,
            )  # (T, R), or (T, D) for proportional RoPE
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            if spec.qk_norm is QKNorm.POST_ROPE:
                q, k = self.q_norm(q), self.k_norm(k)
        if spec.temperature is not None:
            q = q * temperature_scale(positions, spec.temperature).to(q.dtype)[:, None]
        if self.query_scale != 1.0:
            q = q * self.query_scale

        sinks = getattr(self, "sinks", None)
        if cache is not None:
            keys, values, key_pos = cache.visible(k, v, positions)  # kept + new, new now kept
            y, probs = cached_attention(
                q,
                keys,
                values,
                positions,
                key_pos,
                spec.window_tokens,
                window_kind=spec.window_kind,
                sinks=sinks,
                return_probs=ctx.return_attn,
            )  # (B, H, T, D)
            return self._output(x, y), probs
        mask = {
            "window_kind": spec.window_kind,
            "sinks": sinks,
            "start_pos": ctx.start_pos,
        }
        if ctx.return_attn:
            y, probs = dense_attention(q, k, v, spec.window_tokens, **mask)  # probs (B, H, T, T)
        else:
            y, probs = (
                attend(q, k, v, spec.window_tokens, ctx.backend, **mask),
                None,
            )  # (B, H, T, D)
        return self._output(x, y), probs


# ---------------------------------------------------------------- MLP, block, model


class SwiGLU(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(shape.d_model, shape.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(shape.d_model, shape.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(shape.mlp_hidden, shape.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


RECURRENT_MIXERS = {
    Mixer.GATED_DELTANET: GatedDeltaNet,
    Mixer.MAMBA2: Mamba2,
    Mixer.KDA: KimiDeltaAttention,
}


class Block(nn.Module):
    def __init__(self, shape: ModelShape, spec: LayerSpec) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(shape.d_model, shape.norm_eps)
        # the token mixer: attention, or a recurrent layer (``workers.deltanet``,
        # ``workers.mamba2``, ``workers.kda``)
        self.recurrent = spec.mixer is not Mixer.SOFTMAX
        self.attn = RECURRENT_MIXERS.get(spec.mixer, Attention)(shape, spec)
        self.mlp_norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.mlp = SwiGLU(shape)

    def forward(
        self, x: Tensor, ctx: ForwardContext, cache: LayerCache | RecurrentCache | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if self.recurrent:  # no attention probabilities: it has none
            a, probs = self.attn(self.attn_norm(x), cache), None
        else:
            a, probs = self.attn(self.attn_norm(x), ctx, cache)
        x = x + a
        x = x + self.mlp(self.mlp_norm(x))
        return x, probs


def check_layers(shape: ModelShape, layers: Sequence[LayerSpec]) -> None:
    """Reject a layer list that does not fit the shape (ValueError, never assert). Each spec
    is valid by construction (``LayerSpec.__post_init__``); what is left is how the specs fit
    together and the heads' size."""
    if len(layers) != shape.n_layers:
        raise ValueError(f"{len(layers)} layer specs for n_layers={shape.n_layers}")
    if shape.d_model % shape.n_heads or shape.n_heads % shape.n_kv_heads:
        raise ValueError(
            f"need n_heads | d_model and n_kv_heads | n_heads, got d_model={shape.d_model}, "
            f"n_heads={shape.n_heads}, n_kv_heads={shape.n_kv_heads}"
        )
    for i, spec in enumerate(layers):
        if spec.index != i:
            raise ValueError(f"layer {i} has index {spec.index}")
        problem = spec.head_dim_problem(shape.head_dim)
        if problem is not None:
            raise ValueError(f"layer {i}: {problem}")


class HybridTransformer(nn.Module):
    def __init__(self, shape: ModelShape, layers: Sequence[LayerSpec]) -> None:
        super().__init__()
        check_layers(shape, layers)
        self.shape = shape
        self.layers = tuple(layers)
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape, spec) for spec in self.layers)
        self.norm = RMSNorm(shape.d_model, shape.norm_eps)
        # Recompute each block's activations in the backward pass instead of keeping them
        # (train.activation_checkpointing): less memory for about a third more compute.
        self.activation_checkpointing = False
        # the output head is the embedding matrix itself (tied), applied in forward
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=shape.init_std)
        # µP (1 and no change with the standard parametrization): logits times 1 / m, block
        # matrices from init_std / sqrt(m), so every layer's activations keep their size
        # whatever the width.
        self.readout_scale = 1.0 / shape.width_mult
        if shape.parametrization is Parametrization.MUP:
            with torch.no_grad():  # scaled, not redrawn: at m = 1 the standard weights
                for name in self.lr_scales():
                    self.get_parameter(name).mul_(1.0 / math.sqrt(shape.width_mult))

    def lr_scales(self) -> dict[str, float]:
        """Parameter name -> what its learning rate is multiplied by: under µP, ``1 / m`` for
        every matrix inside a block (an ``nn.Linear``: attention, MLP, recurrent
        projections); empty with the standard parametrization (every weight at ``lr``)."""
        if self.shape.parametrization is not Parametrization.MUP:
            return {}
        scale = 1.0 / self.shape.width_mult
        return {
            f"blocks.{name}.weight": scale
            for name, module in self.blocks.named_modules()
            if isinstance(module, nn.Linear)
        }

    def set_layers(self, layers: Sequence[LayerSpec]) -> None:
        """Switch every layer to a new spec with the same parameters (a later training stage:
        another RoPE base, a RoPE scaling, another window). ValueError if any layer would need
        other weights (QK-norm, sinks)."""
        layers = tuple(layers)
        check_layers(self.shape, layers)
        for old, new in zip(self.layers, layers, strict=True):
            if old.parameter_layout() != new.parameter_layout():
                raise ValueError(
                    f"layer {new.index}: {new} needs other parameters than {old}; "
                    "a new spec must keep QK-norm and sinks where they were"
                )
        self.layers = layers
        for block, spec in zip(self.blocks, layers, strict=True):
            block.attn.spec = spec

    def num_parameters(self) -> int:
        """Unique parameters; the tied embedding counts once."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: Tensor,
        *,
        return_attn: bool = False,
        start_pos: int = 0,
        attn_backend: str | None = None,
        rope_length: int | None = None,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """idx (B, T) int64 -> logits (B, T, vocab); tokens sit at positions start_pos.. .

        ``return_attn=True`` runs every layer through the dense reference and also returns the
        per-layer attention probabilities, a list of (B, H, T, T). ``attn_backend`` forces one
        of ``workers.attention.BACKENDS``; None picks automatically per layer.
        ``rope_length``: the length an NTK scaling sizes its base for (``rope_cos_sin``).
        """
        x, attn = self._trunk(idx, return_attn, start_pos, attn_backend, rope_length)
        logits = self.head(x)  # (B, T, vocab)
        return (logits, attn) if return_attn else logits

    def features(
        self, idx: Tensor, *, start_pos: int = 0, rope_length: int | None = None
    ) -> Tensor:
        """The final normed hidden states (B, T, C): ``head`` of them are ``forward``'s
        logits. Scores that need a few positions' logits (or the logits in slices) start
        here, so a long sequence never holds (T, vocab) at once."""
        return self._trunk(idx, False, start_pos, None, rope_length)[0]

    def head(self, h: Tensor) -> Tensor:
        """Logits of hidden states (..., C) -> (..., vocab): the tied embedding (times µP's
        read-out multiplier)."""
        logits = F.linear(h, self.embed.weight)
        return logits * self.readout_scale if self.readout_scale != 1.0 else logits

    def _trunk(
        self,
        idx: Tensor,
        return_attn: bool,
        start_pos: int,
        attn_backend: str | None,
        rope_length: int | None,
    ) -> tuple[Tensor, list[Tensor]]:
        T = idx.shape[1]
        positions = torch.arange(start_pos, start_pos + T, device=idx.device)  # (T,)
        ctx = ForwardContext(positions, start_pos, attn_backend, return_attn, rope_length)
        x = self.embed(idx)  # (B, T, C)
        attn: list[Tensor] = []
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute and not return_attn:
                x, probs = checkpoint(block, x, ctx, use_reentrant=False)
            else:
                x, probs = block(x, ctx)
            if probs is not None:
                attn.append(probs)
        return self.norm(x), attn

    # -- decoding with a KV cache ------------------------------------------------------------

    def new_cache(
        self,
        batch: int,
        max_tokens: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """An empty cache for ``batch`` sequences of up to ``max_tokens`` tokens; each layer
        keeps what its attention can still read (``workers.kv_cache``)."""
        return KVCache.allocate(
            self.layers,
            batch=batch,
            kv_heads=self.shape.n_kv_heads,
            head_dim=self.shape.head_dim,
            max_tokens=max_tokens,
            dtype=dtype or self.embed.weight.dtype,
            device=device or self.embed.weight.device,
        )

    def step(
        self,
        idx: Tensor,
        cache: KVCache,
        *,
        rope_length: int | None = None,
        return_attn: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """The next tokens idx (B, L) at positions ``cache.length``.. -> logits of the last
        one (B, vocab); the cache then holds them too. A prompt goes in as one or a few
        chunks, then one token per step. ``return_attn`` also returns each layer's
        probabilities (B, H, L, slots) over its cache slots, whose positions are then in
        ``cache.layers[i].pos`` when L is 1."""
        B, L = idx.shape
        start = cache.length
        if start + L > cache.max_tokens:
            raise ValueError(f"{start + L} tokens exceed the cache's {cache.max_tokens}")
        positions = torch.arange(start, start + L, device=idx.device)  # (L,)
        ctx = ForwardContext(positions, start, return_attn=return_attn, rope_length=rope_length)
        x = self.embed(idx)  # (B, L, C)
        attn: list[Tensor] = []
        for block, layer_cache in zip(self.blocks, cache.layers, strict=True):
            x, probs = block(x, ctx, layer_cache)
            if probs is not None:
                attn.append(probs)
        cache.length = start + L
        logits = self.head(self.norm(x[:, -1]))  # (B, vocab)
        return (logits, attn) if return_attn else logits
