"""The remote-code model's memory is bounded (issue 21, item 9): a layer with a window or
chunk of W keeps at most W - 1 tokens in the KV cache while greedy decoding still gives the
uncached tokens, scores are computed a block of queries at a time, a sequence past
``max_position_embeddings`` is refused with a clear error, and the served model (the MLflow
loader) refuses a ``max_new_tokens`` outside 1..MAX_NEW_TOKENS or past the model's length.
A Gated DeltaNet, Mamba2 or KDA layer carries its recurrent state through the cache (issue 24): the
same tokens as uncached decoding, and the same bytes held at every length."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_hf_export import EVERY_NEW_KNOB, PAD, SHAPE, TRAIN_LEN, export, preset  # noqa: E402

from space.expand import build_candidate  # noqa: E402
from workers.decoding import greedy_decode  # noqa: E402
from workers.hf.remote.mlflow_pyfunc import MAX_NEW_TOKENS, _load_pyfunc  # noqa: E402

CANDIDATES = {
    # sliding RoPE layers (window 9) between full RoPE layers, learned sinks (remote code)
    "gptoss_like": lambda: preset("gptoss_like", local_window=9),
    # every layer windowed: chunks of 7, sliding windows of 19, sinks, NTK, GQA
    "chunks_and_windows": lambda: build_candidate(
        {**EVERY_NEW_KNOB, "rope_scaling": "ntk"}, SHAPE, TRAIN_LEN
    ),
}


@pytest.fixture(scope="module", params=list(CANDIDATES))
def exported(request, tmp_path_factory):
    candidate = CANDIDATES[request.param]()
    result, model = export(candidate, tmp_path_factory.mktemp(request.param), remote_code=True)
    assert result.remote_code
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(result.out_dir), trust_remote_code=True
    ).eval()
    return result, model, hf


def _windows(hf) -> list[int | None]:
    return [spec.get("window") for spec in hf.config.layer_specs]


def test_remote_cached_greedy_decoding_equals_uncached_past_every_window(exported):
    _, model, hf = exported
    assert any(_windows(hf))
    prompt = torch.randint(0, 256, (1, 45), generator=torch.Generator().manual_seed(4))
    kwargs = dict(max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=PAD)
    with torch.no_grad():
        cached = hf.generate(prompt, use_cache=True, **kwargs)
        uncached = hf.generate(prompt, use_cache=False, **kwargs)
        reference = greedy_decode(model, prompt, 40)
    assert cached.tolist() == uncached.tolist()
    assert cached[0, 45:].tolist() == reference[0].tolist()


def _decode_one_by_one(hf, ids: torch.Tensor):
    """Prefill 3 tokens, then one token per call through a ``DynamicCache``: the logits of
    every step, and the bytes each layer's cache holds after it."""
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    logits, held = [], []
    with torch.no_grad():
        hf(input_ids=ids[:, :3], past_key_values=cache, use_cache=True)
        for t in range(3, ids.shape[1]):
            out = hf(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            assert cache.get_seq_length() == t + 1  # every token counted, not every one held
            logits.append(out.logits[:, -1])
            held.append([layer.keys.nbytes + layer.values.nbytes for layer in cache.layers])
    return torch.cat(logits), held


def test_remote_cache_of_a_windowed_layer_stops_growing_at_its_window(exported, monkeypatch):
    _, _, hf = exported
    windows = _windows(hf)
    ids = torch.randint(0, 256, (1, 70), generator=torch.Generator().manual_seed(6))
    logits, held = _decode_one_by_one(hf, ids)
    # the same steps with a cache that keeps every token (as before): the same logits
    module = sys.modules[type(hf).__module__]
    monkeypatch.setattr(module, "window_cache_layer", lambda *args: None)
    every_token, _ = _decode_one_by_one(hf, ids)
    torch.testing.assert_close(logits, every_token, atol=1e-5, rtol=0)
    per_token = held[0][0] // 4  # 4 tokens held by every layer after the first step
    for i, window in enumerate(windows):
        tokens = [step[i] // per_token for step in held]
        if window is None:
            assert tokens == list(range(4, 71))  # a full layer keeps every token
        else:
            assert max(tokens) == window - 1  # what a query sees besides itself
            assert tokens[window:] == [window - 1] * (len(tokens) - window)


def test_remote_scores_in_query_blocks_give_the_same_logits(exported, monkeypatch):
    _, _, hf = exported
    module = sys.modules[type(hf).__module__]
    ids = torch.randint(0, 256, (2, 57), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        whole = hf(input_ids=ids).logits
        monkeypatch.setattr(module, "QUERY_BLOCK", 5)  # 12 blocks, the last one short
        blocked = hf(input_ids=ids).logits
    torch.testing.assert_close(blocked, whole, atol=1e-5, rtol=0)


def test_remote_model_refuses_a_sequence_past_its_length_with_a_clear_error(exported):
    result, _, _ = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(result.out_dir), trust_remote_code=True, max_position_embeddings=48
    ).eval()
    ids = torch.randint(0, 256, (1, 49), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert hf(input_ids=ids[:, :48]).logits.shape[1] == 48
        with pytest.raises(ValueError, match=r"49 tokens .*max_position_embeddings=48"):
            hf(input_ids=ids)
        with pytest.raises(ValueError, match=r"49 tokens \(48 cached \+ 1 new\)"):
            hf.generate(ids[:, :40], max_new_tokens=20, do_sample=False, pad_token_id=PAD)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    result, _ = export(preset("gptoss_like", local_window=9), tmp_path_factory.mktemp("served"),
                       remote_code=True)  # fmt: skip
    assert result.remote_code
    return _load_pyfunc(str(result.out_dir), {"trust_remote_code": True})


def test_served_model_caps_max_new_tokens(served):
    assert isinstance(served.predict(["def "], params={"max_new_tokens": 3})[0], str)
    assert isinstance(served.predict(["def "], params={"max_new_tokens": np.int64(2)})[0], str)
    for bad in (0, -1, MAX_NEW_TOKENS + 1, 10**12):
        with pytest.raises(ValueError, match=rf"max_new_tokens={bad} is outside 1\.\.1024"):
            served.predict(["def "], params={"max_new_tokens": bad})
    for bad in (2.5, "many", True, None):
        with pytest.raises(ValueError, match="max_new_tokens must be a whole number"):
            served.predict(["def "], params={"max_new_tokens": bad})
    # the prompt counts too: 1 + 1020 tokens plus 8 pass the model's 1024
    with pytest.raises(ValueError, match=r"1021 tokens plus max_new_tokens=8 exceeds .*=1024"):
        served.predict(["x" * 1020], params={"max_new_tokens": 8})


# ------------------------------------------------ recurrent state through the cache (issue 24)

RECURRENT = {
    "olmo_hybrid_like": lambda: preset("olmo_hybrid_like"),  # Gated DeltaNet + NoPE attention
    "jamba_like_window": lambda: preset("jamba_like", global_window=16),  # Mamba2 + windows
    "kimi_linear_like": lambda: preset("kimi_linear_like"),  # KDA + NoPE attention
}


@pytest.fixture(scope="module", params=list(RECURRENT))
def recurrent(request, tmp_path_factory):
    candidate = RECURRENT[request.param]()
    result, model = export(candidate, tmp_path_factory.mktemp(request.param), remote_code=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(result.out_dir), trust_remote_code=True
    ).eval()
    return candidate, model, hf


def test_remote_recurrent_layers_decode_through_the_cache_as_uncached(recurrent, monkeypatch):
    candidate, model, hf = recurrent
    assert any(spec.recurrent is not None for spec in candidate.final_layers)
    module = sys.modules[type(hf).__module__]
    assert module.caches_recurrent_state(hf.config)
    prompt = torch.randint(0, 256, (1, 45), generator=torch.Generator().manual_seed(4))
    kwargs = dict(max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=PAD)
    with torch.no_grad():
        cached = hf.generate(prompt, use_cache=True, **kwargs)
        uncached = hf.generate(prompt, use_cache=False, **kwargs)
        reference = greedy_decode(model, prompt, 30)
        # a transformers whose cache holds no recurrent state: the whole sequence every step
        monkeypatch.setattr(module, "recurrent_cache_supported", lambda: False)
        recomputed = hf.generate(prompt, use_cache=True, **kwargs)
    assert cached.tolist() == uncached.tolist() == recomputed.tolist()
    assert cached[0, 45:].tolist() == reference[0].tolist()


def test_remote_recurrent_state_holds_the_same_bytes_at_every_length(recurrent):
    """Prefill 3 tokens, then one per call: each step's logits are the full forward's, the
    attention layers grow, and a recurrent layer holds its convolution window (all
    ``conv_tokens`` inputs, the one ``state_elements`` leaves out included) and its state,
    the same bytes at every step."""
    from transformers.cache_utils import DynamicCache, LinearAttentionLayer

    candidate, _, hf = recurrent
    ids = torch.randint(0, 256, (1, 60), generator=torch.Generator().manual_seed(6))
    cache = DynamicCache()
    steps, held = [], []
    with torch.no_grad():
        whole = hf(input_ids=ids).logits
        hf(input_ids=ids[:, :3], past_key_values=cache, use_cache=True)
        for t in range(3, ids.shape[1]):
            out = hf(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            assert int(cache.get_seq_length()) == t + 1
            steps.append(out.logits[:, -1])
            held.append([_held_bytes(layer) for layer in cache.layers])
    torch.testing.assert_close(torch.cat(steps), whole[0, 3:], atol=1e-4, rtol=0)
    for i, spec in enumerate(candidate.final_layers):
        sizes = [step[i] for step in held]
        if spec.recurrent is None:
            assert sizes[-1] > sizes[0]  # keys and values grow (a window of 16 < 60 tokens too)
            continue
        assert isinstance(cache.layers[i], LinearAttentionLayer)
        state = spec.recurrent.state_elements() + spec.recurrent.conv_channels
        assert sizes == [4 * state] * len(sizes)  # fp32, one sequence


def _held_bytes(layer) -> int:
    if hasattr(layer, "recurrent_states"):
        tensors = [*layer.conv_states.values(), *layer.recurrent_states.values()]
        return sum(x.nbytes for x in tensors if x is not None)
    return layer.keys.nbytes + layer.values.nbytes


def test_remote_recurrent_layer_refuses_a_cache_that_cannot_hold_its_state(recurrent):
    from transformers.cache_utils import DynamicCache, DynamicLayer

    candidate, _, hf = recurrent
    first = next(i for i, s in enumerate(candidate.final_layers) if s.recurrent is not None)
    cache = DynamicCache()
    cache.layers.extend(DynamicLayer() for _ in candidate.final_layers)
    keys = torch.zeros(1, 2, 3, 8)
    cache.layers[first].update(keys, keys)  # a layer that already holds keys
    mixer = candidate.final_layers[first].mixer.value
    refused = rf"layer {first} is a {mixer} layer: .*DynamicCache"
    with pytest.raises(ValueError, match=refused), torch.no_grad():
        hf(input_ids=torch.zeros(1, 4, dtype=torch.long), past_key_values=cache)
