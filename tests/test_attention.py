"""Every attention backend against the dense masked reference, forward and backward: sliding
windows, Llama 4 chunks and gpt-oss sinks; the references against obviously correct loops."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from space.layers import WindowKind
from workers.attention import (
    attend,
    blocked_attention,
    choose_backend,
    dense_attention,
    flex_window_attention,
    repeat_kv,
    window_mask,
)

CHUNKED, SLIDING = WindowKind.CHUNKED, WindowKind.SLIDING

# (seq_len, window_tokens, n_heads, n_kv_heads): windows inside, at and beyond T, a window of
# one (attends to itself only), lengths that are not multiples of the window, GQA and MHA.
CASES = [
    (1, 4, 2, 2),
    (17, 4, 4, 2),
    (37, 8, 4, 1),
    (64, 16, 2, 2),
    (33, 1, 2, 2),
    (50, 49, 4, 2),
    (50, 50, 4, 2),
    (40, 100, 2, 1),
    (64, None, 4, 1),
    (29, None, 2, 2),
]


def qkv(seq_len: int, n_heads: int, n_kv_heads: int, head_dim: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, n_heads, seq_len, head_dim, generator=gen)
    k = torch.randn(2, n_kv_heads, seq_len, head_dim, generator=gen)
    v = torch.randn(2, n_kv_heads, seq_len, head_dim, generator=gen)
    return q, k, v


def forward_backward(fn, q, k, v, window):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, window)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    return out.detach(), grads


def dense_out(q, k, v, window):
    return dense_attention(q, k, v, window)[0]


@pytest.mark.parametrize(("seq_len", "window", "n_heads", "n_kv_heads"), CASES)
def test_blocked_attention_matches_dense_forward_and_backward(seq_len, window, n_heads, n_kv_heads):
    q, k, v = qkv(seq_len, n_heads, n_kv_heads)
    ref, ref_grads = forward_backward(dense_out, q, k, v, window)
    out, grads = forward_backward(blocked_attention, q, k, v, window)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(("seq_len", "window", "n_heads", "n_kv_heads"), CASES)
def test_flex_attention_eager_matches_dense_forward(seq_len, window, n_heads, n_kv_heads):
    # Eager flex on CPU: the same block mask and GQA wiring as the compiled CUDA path, forward
    # only (PyTorch has no flex backward on CPU).
    q, k, v = qkv(seq_len, n_heads, n_kv_heads)
    with torch.no_grad():
        out = flex_window_attention(q, k, v, window, compiled=False)
    torch.testing.assert_close(out, dense_out(q, k, v, window), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="compiled FlexAttention backward needs CUDA"
)
@pytest.mark.parametrize(("seq_len", "window", "n_heads", "n_kv_heads"), CASES)
def test_flex_attention_compiled_matches_dense_forward_and_backward_on_cuda(
    seq_len, window, n_heads, n_kv_heads
):
    q, k, v = (t.cuda() for t in qkv(seq_len, n_heads, n_kv_heads))
    ref, ref_grads = forward_backward(dense_out, q, k, v, window)
    out, grads = forward_backward(flex_window_attention, q, k, v, window)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# (seq_len, window, n_heads, n_kv_heads, window_kind, sinks, start_pos): chunks shorter than T
# with a cut last chunk, a chunk of one, chunk boundaries offset by start_pos (a first chunk
# cut short), one chunk holding everything, sinks on full, sliding and chunked attention, GQA.
MASKED_CASES = [
    (37, 8, 4, 2, CHUNKED, False, 0),
    (64, 16, 2, 2, CHUNKED, False, 0),
    (33, 1, 2, 1, CHUNKED, False, 0),
    (29, 8, 4, 2, CHUNKED, False, 5),
    (6, 8, 2, 2, CHUNKED, False, 1),
    (40, 100, 2, 1, CHUNKED, False, 0),
    (37, 8, 4, 2, CHUNKED, True, 0),
    (29, 8, 4, 1, CHUNKED, True, 13),
    (37, 8, 4, 2, SLIDING, True, 0),
    (33, 1, 2, 2, SLIDING, True, 0),
    (29, None, 4, 2, SLIDING, True, 0),
    (1, None, 2, 2, SLIDING, True, 0),
]
MASKED_IDS = [f"T{c[0]}-W{c[1]}-{c[4].value}-sink{int(c[5])}-p{c[6]}" for c in MASKED_CASES]


def sink_logits(n_heads: int, seed: int = 2) -> torch.Tensor:
    # spread widely, so a sink sometimes takes most of a row's mass and sometimes none
    return 3 * torch.randn(n_heads, generator=torch.Generator().manual_seed(seed))


def forward_backward_masked(fn, q, k, v, window, kind, sinks, start_pos):
    """Output and the gradients of q, k, v (and the sink logits) for one backend."""
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    if sinks is not None:
        leaves.append(sinks.clone().requires_grad_())
    out = fn(
        *leaves[:3],
        window,
        window_kind=kind,
        sinks=leaves[3] if sinks is not None else None,
        start_pos=start_pos,
    )
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return out.detach(), torch.autograd.grad(out, leaves, grad_out)


def dense_masked(q, k, v, window, **mask):
    return dense_attention(q, k, v, window, **mask)[0]


@pytest.mark.parametrize(
    ("seq_len", "window", "n_heads", "n_kv_heads", "kind", "sink", "start_pos"),
    MASKED_CASES,
    ids=MASKED_IDS,
)
def test_blocked_attention_chunks_and_sinks_match_dense_forward_and_backward(
    seq_len, window, n_heads, n_kv_heads, kind, sink, start_pos
):
    q, k, v = qkv(seq_len, n_heads, n_kv_heads)
    sinks = sink_logits(n_heads) if sink else None
    args = (q, k, v, window, kind, sinks, start_pos)
    ref, ref_grads = forward_backward_masked(dense_masked, *args)
    out, grads = forward_backward_masked(blocked_attention, *args)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(
    ("seq_len", "window", "n_heads", "n_kv_heads", "kind", "sink", "start_pos"),
    MASKED_CASES,
    ids=MASKED_IDS,
)
def test_flex_attention_eager_chunks_and_sinks_match_dense_forward(
    seq_len, window, n_heads, n_kv_heads, kind, sink, start_pos
):
    q, k, v = qkv(seq_len, n_heads, n_kv_heads)
    mask = {
        "window_kind": kind,
        "sinks": sink_logits(n_heads) if sink else None,
        "start_pos": start_pos,
    }
    with torch.no_grad():
        out = flex_window_attention(q, k, v, window, compiled=False, **mask)
    torch.testing.assert_close(out, dense_masked(q, k, v, window, **mask), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="compiled FlexAttention backward needs CUDA"
)
@pytest.mark.parametrize(
    ("seq_len", "window", "n_heads", "n_kv_heads", "kind", "sink", "start_pos"),
    MASKED_CASES,
    ids=MASKED_IDS,
)
def test_flex_attention_compiled_chunks_and_sinks_match_dense_on_cuda(
    seq_len, window, n_heads, n_kv_heads, kind, sink, start_pos
):
    q, k, v = (t.cuda() for t in qkv(seq_len, n_heads, n_kv_heads))
    sinks = sink_logits(n_heads).cuda() if sink else None
    args = (q, k, v, window, kind, sinks, start_pos)
    ref, ref_grads = forward_backward_masked(dense_masked, *args)
    out, grads = forward_backward_masked(flex_window_attention, *args)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_window_mask_chunked_sees_own_chunk_up_to_itself():
    mask = window_mask(10, 4, window_kind=CHUNKED)
    for i in range(10):
        start = i - i % 4  # chunks [0, 4), [4, 8), [8, 12)
        assert mask[i].nonzero().flatten().tolist() == list(range(start, i + 1))
    # chunk boundaries are absolute positions: starting at position 3, the first chunk has one
    shifted = window_mask(6, 4, window_kind=CHUNKED, start_pos=3)
    assert shifted[0].nonzero().flatten().tolist() == [0]
    assert shifted[1].nonzero().flatten().tolist() == [1]  # position 4 opens a chunk
    assert shifted[4].nonzero().flatten().tolist() == [1, 2, 3, 4]
    assert shifted[5].nonzero().flatten().tolist() == [5]  # position 8 opens the next


def test_dense_attention_sinks_match_a_loop_over_keys():
    # The definition, one query at a time in float64: the sink is one more term in the
    # softmax denominator and nothing in the numerator.
    q, k, v = (t.double() for t in qkv(11, 4, 2))
    sinks = sink_logits(4).double()
    out, probs = dense_attention(q, k, v, 5, window_kind=CHUNKED, sinks=sinks)
    want = torch.zeros_like(out)
    for b in range(2):
        for h in range(4):
            for i in range(11):
                keys = [j for j in range(11) if j <= i and j // 5 == i // 5]
                kv_head = h // 2
                logits = [float(q[b, h, i] @ k[b, kv_head, j]) / math.sqrt(16) for j in keys]
                denominator = math.exp(float(sinks[h])) + sum(math.exp(s) for s in logits)
                for s, j in zip(logits, keys, strict=True):
                    want[b, h, i] += math.exp(s) / denominator * v[b, kv_head, j]
    torch.testing.assert_close(out, want)
    # the rows' probabilities miss exactly the sink's share
    sink_share = 1 - probs.sum(-1)
    assert torch.all(sink_share > 0) and torch.all(sink_share < 1)


def test_dense_attention_sink_of_minus_infinity_is_no_sink():
    q, k, v = qkv(20, 2, 1)
    none = dense_masked(q, k, v, 6, window_kind=CHUNKED)
    silent = dense_masked(q, k, v, 6, window_kind=CHUNKED, sinks=torch.full((2,), -1e9))
    torch.testing.assert_close(silent, none)


class PeakLiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once, counted at every aten op (a tracemalloc for
    PyTorch CPU tensors): each new storage adds its size until it is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live and storage.nbytes():
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


def peak_forward_backward_bytes(fn, seq_len: int, window: int, **mask) -> int:
    q, k, v = (t.requires_grad_() for t in qkv(seq_len, 4, 2, head_dim=16))
    with PeakLiveBytes() as meter:
        out = fn(q, k, v, window, **mask)
        out.backward(torch.ones_like(out))
        del out
    return meter.peak


@pytest.mark.parametrize(
    ("kind", "window", "sink"),
    [(CHUNKED, 32, False), (CHUNKED, 32, True), (SLIDING, 32, True), (SLIDING, None, True)],
    ids=["chunked", "chunked-sink", "sliding-sink", "full-sink"],
)
def test_blocked_attention_memory_is_linear_in_seq_len(kind, window, sink):
    # Chunks (the ask) and every path a sink takes: the sink's extra key must not push
    # SDPA off its fused kernel onto the T x T math path.
    mask = {"window_kind": kind, "sinks": sink_logits(4) if sink else None}
    short, long = (
        peak_forward_backward_bytes(blocked_attention, t, window, **mask) for t in (512, 2048)
    )
    qkv_bytes = (4 + 2 + 2) * 2 * 2048 * 16 * 4  # q, k, v of the long run, fp32
    assert long < 5 * short  # 4x the length: ~4x the memory (a quadratic path: ~16x)
    # inputs, their grads, copies (a sink adds a dimension) and O(T * W) scores, never T x T
    assert long < 12 * qkv_bytes


def test_dense_attention_memory_is_quadratic_as_the_meter_shows():
    # the meter sees a T x T path: 4x the length, ~16x the memory
    short, long = (
        peak_forward_backward_bytes(dense_masked, t, 32, window_kind=CHUNKED) for t in (256, 1024)
    )
    assert long > 10 * short


def test_attend_automatic_choice_matches_dense():
    q, k, v = qkv(45, 4, 2)
    for window in (None, 8, 45):
        ref = dense_out(q, k, v, window)
        torch.testing.assert_close(attend(q, k, v, window), ref, atol=1e-5, rtol=1e-5)


def test_attend_window_at_least_seq_len_equals_full_attention():
    q, k, v = qkv(30, 2, 2)
    full = dense_out(q, k, v, None)
    for window in (30, 31, 1000):
        torch.testing.assert_close(dense_out(q, k, v, window), full)
        torch.testing.assert_close(blocked_attention(q, k, v, window), full, atol=1e-5, rtol=1e-5)


def test_choose_backend_never_picks_flex_on_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_backend(cpu, 4096, 256) == "blocked"
    assert choose_backend(cpu, 4096, None) == "blocked"
    assert choose_backend(cpu, 4096, 256, window_kind=CHUNKED, sinks=True) == "blocked"
    assert choose_backend(cuda, 4096, 256) == "flex"
    assert choose_backend(cuda, 4096, None) == "blocked"  # SDPA's causal flash kernel
    assert choose_backend(cuda, 128, 256) == "blocked"  # window covers the sequence
    assert choose_backend(cuda, 4096, 256, window_kind=CHUNKED) == "flex"
    assert choose_backend(cuda, 4096, None, sinks=True) == "flex"  # sinks need the LSE
    # chunk boundaries are absolute: 100 tokens from position 200 cross one of 256
    assert choose_backend(cuda, 100, 256, window_kind=CHUNKED) == "blocked"
    assert choose_backend(cuda, 100, 256, window_kind=CHUNKED, start_pos=200) == "flex"


def test_attend_rejects_unknown_backend():
    q, k, v = qkv(8, 2, 2)
    with pytest.raises(ValueError, match="unknown attention backend"):
        attend(q, k, v, None, backend="sparse")


def test_window_mask_counts_window_keys_including_self():
    mask = window_mask(10, 3)
    for i in range(10):
        assert mask[i].nonzero().flatten().tolist() == list(range(max(0, i - 2), i + 1))
    assert torch.equal(window_mask(10, None), torch.ones(10, 10, dtype=torch.bool).tril())


def test_dense_attention_probabilities_vanish_outside_window():
    q, k, v = qkv(20, 2, 1)
    _, probs = dense_attention(q, k, v, 5)
    mask = window_mask(20, 5)
    assert torch.all(probs[..., ~mask] == 0)
    assert torch.all(probs[..., mask] > 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 20))


def test_repeat_kv_maps_query_head_to_kv_head_in_groups():
    # Query head h reads kv head h // (H / H_kv): the Hugging Face layout.
    k = torch.randn(1, 2, 5, 4)
    torch.testing.assert_close(repeat_kv(k, 6), k.repeat_interleave(3, dim=1))
