"""Every attention backend against the dense masked reference, forward and backward."""

from __future__ import annotations

import pytest
import torch

from workers.attention import (
    attend,
    blocked_attention,
    choose_backend,
    dense_attention,
    flex_window_attention,
    repeat_kv,
    window_mask,
)

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
    assert choose_backend(cuda, 4096, 256) == "flex"
    assert choose_backend(cuda, 4096, None) == "blocked"  # SDPA's causal flash kernel
    assert choose_backend(cuda, 128, 256) == "blocked"  # window covers the sequence


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
