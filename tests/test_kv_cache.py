"""Greedy decoding with a KV cache against the uncached reference (issue 14).

Every shipped preset plus the knobs presets do not cover (GQA, NTK, YaRN with partial
rotary): the cached decoder produces the reference's tokens, its logits agree to float64
round-off, a prompt prefilled in any chunking gives the same logits, the cache holds
exactly ``kv_cache_bytes`` of the layers, and the memory of a long evaluation grows
linearly with its length.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from engines import TINY
from greedy import assert_cached_greedy_matches
from test_attention import PeakLiveBytes

from space.layers import WindowKind
from space.presets import BUILTIN_PRESETS
from space.schema import load_config_text
from workers.attention_mass import attention_mass
from workers.corpus import prepare
from workers.decoding import Decoder, greedy_decode
from workers.examples import Example
from workers.kv_cache import LayerCache
from workers.model import HybridTransformer
from workers.scores import answer_correct
from workers.serving_cost import kv_cache_bytes
from workers.tasks import render

EXTRA_PRESETS = [
    {
        "name": "rope_ntk",
        "extends": "rope",
        "knobs": {"rope_scaling": "ntk", "rope_scaling_factor": 4},
    },
    {
        "name": "swa_yarn_partial",
        "extends": "rnope_swa",
        "knobs": {
            "local_window": 8,
            "rope_fraction": 0.5,
            "rope_scaling": "yarn",
            "rope_scaling_factor": 4,
            "kv_heads": 4,
        },
    },
    {
        "name": "chunked_sinks",
        "extends": "llama4_like",
        "knobs": {"local_window": 8, "attention_sink": "learned"},
    },
]


def _config():
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    # eight layers hold every preset's ratio (jamba_like's 7:1, mimo_like's 8-letter layout);
    # in the shipped presets four query heads share two key/value heads (GQA), the extra ones
    # keep one per query head
    raw["model"] = {"layers": 8, "d_model": 32, "heads": 4, "mlp_hidden": 64}
    gqa = [{"name": name, "knobs": {"kv_heads": 2}} for name in BUILTIN_PRESETS]
    raw["presets"] = [*gqa, *EXTRA_PRESETS]
    return load_config_text(yaml.safe_dump(raw))


CONFIG = _config()
PRESETS = list(CONFIG.presets)


def _model(name: str, dtype: torch.dtype = torch.float64) -> HybridTransformer:
    """A preset's model with every weight random (norm gains and sink logits too, so QK-norm
    and sinks matter), in ``dtype``."""
    candidate = CONFIG.preset_candidate(name)
    torch.manual_seed(sum(map(ord, name)))
    model = HybridTransformer(candidate.shape, candidate.layers)
    for p in model.parameters():
        if p.dim() == 1:
            torch.nn.init.normal_(p, 1.0 if p.numel() > 4 else 0.0, 0.5)
    return model.to(dtype).eval()


def test_kv_cache_presets_cover_every_layer_feature():
    layers = [s for name in PRESETS for s in CONFIG.preset_candidate(name).layers]
    assert {s.window_kind for s in layers if s.window_tokens} == {
        WindowKind.SLIDING,
        WindowKind.CHUNKED,
    }
    assert any(s.temperature is not None for s in layers)  # NoPE temperature
    assert any(s.attention_sink.value == "learned" for s in layers)
    assert any(s.qk_norm.value == "pre_rope" for s in layers)
    assert {s.rope_scaling.kind.value for s in layers if s.rope_scaling} == {"ntk", "yarn"}
    kv_heads = {CONFIG.preset_candidate(name).shape.n_kv_heads for name in PRESETS}
    assert kv_heads == {2, 4}  # GQA and one key/value head per query head


@pytest.mark.parametrize("name", PRESETS)
def test_kv_cache_decoding_gives_the_uncached_tokens(name):
    model = _model(name)
    prompts = torch.randint(0, 256, (3, 150), generator=torch.Generator().manual_seed(1))
    budget = 40  # 190 tokens: past every window and chunk, past the temperature floor (32)
    assert_cached_greedy_matches(model, prompts, budget, atol=1e-10)


@pytest.mark.parametrize("name", PRESETS)
def test_kv_cache_holds_kv_cache_bytes_of_its_layers(name):
    model = _model(name, torch.float32)
    candidate = CONFIG.preset_candidate(name)
    for context in (5, 100, 300):  # within, across and far beyond every window
        cache = model.new_cache(1, context)
        with torch.no_grad():
            model.step(torch.randint(0, 256, (1, context)), cache)
        expected = kv_cache_bytes(candidate.shape, candidate.layers, context, dtype_bytes=4)
        assert cache.nbytes() == expected


def test_kv_cache_prefill_in_any_chunks_gives_the_same_logits():
    model = _model("gptoss_like")  # windows and sinks
    prompt = torch.randint(0, 256, (2, 97))
    outs = []
    for chunk in (1, 7, 64, 97):
        cache = model.new_cache(2, 97)
        with torch.no_grad():
            for start in range(0, 97, chunk):
                logits = model.step(prompt[:, start : start + chunk], cache)
        outs.append(logits)
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=0, atol=1e-10)


def test_kv_cache_ring_buffer_keeps_the_last_window():
    layer = LayerCache(1, 1, 2, capacity=4, dtype=torch.float32, device="cpu")
    for p in range(10):
        value = torch.full((1, 1, 1, 2), float(p))
        layer.store(value, value, torch.tensor([p]))
    assert sorted(layer.pos.tolist()) == [6, 7, 8, 9]
    assert sorted(layer.k[0, 0, :, 0].tolist()) == [6.0, 7.0, 8.0, 9.0]
    layer.store(torch.zeros(1, 1, 6, 2), torch.zeros(1, 1, 6, 2), torch.arange(10, 16))
    assert sorted(layer.pos.tolist()) == [12, 13, 14, 15]  # a long chunk: its last 4 stay


def test_kv_cache_refuses_tokens_beyond_its_size():
    model = _model("rope", torch.float32)
    cache = model.new_cache(1, 8)
    with pytest.raises(ValueError, match="exceed the cache's 8"):
        model.step(torch.zeros(1, 9, dtype=torch.long), cache)


def test_answer_correct_cached_and_uncached_agree_on_needle_prompts():
    data = prepare(CONFIG).open()
    model = _model("rnope_swa", torch.float32)
    examples = [render("passkey", 256, d, 11 + i, data.val) for i, d in enumerate((0.0, 0.5, 0.9))]
    prompts = torch.from_numpy(np.stack([e.prompt for e in examples]).astype(np.int64))
    with torch.no_grad():  # what the model answers: 3 greedy tokens (the reference's)
        own = greedy_decode(model, prompts, 3, kv_cache=False).numpy()
    # rows 0 and 2 ask for the model's own answer, row 1 for the true one (which it misses)
    rigged = [
        e
        if i == 1
        else Example(
            tokens=np.concatenate([e.prompt, own[i], e.answer[-1:]]),
            prompt_len=e.prompt_len,
            answer=np.concatenate([own[i], e.answer[-1:]]),
            segments=e.segments,
        )
        for i, e in enumerate(examples)
    ]
    cached = answer_correct(model, rigged, kv_cache=True)
    uncached = answer_correct(model, rigged, kv_cache=False)
    assert cached.tolist() == uncached.tolist() == [True, False, True]


def _peak_decode_bytes(model: HybridTransformer, length: int) -> int:
    prompts = torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(0))
    with PeakLiveBytes() as meter, torch.no_grad():
        decoder = Decoder(model, prompts, 8, True, 64)
        tokens = decoder.first().argmax(-1)
        for _ in range(7):
            tokens = decoder.next(tokens).argmax(-1)
    return meter.peak


@pytest.mark.slow  # evaluates at long lengths to measure memory
@pytest.mark.parametrize("name", ["rope", "rnope_swa"])
def test_kv_cache_long_evaluation_memory_is_linear_in_length(name):
    model = _model(name, torch.float32)
    short, long = (_peak_decode_bytes(model, n) for n in (1024, 4096))
    assert long < 5 * short  # 4x the length: ~4x the memory (a T x T path would be ~16x)


def test_attention_mass_memory_is_linear_in_length():
    data = prepare(CONFIG).open()
    model = _model("rope", torch.float32)
    candidate = CONFIG.preset_candidate("rope")
    peaks = []
    for length in (512, 2048):
        examples = [render("passkey", length, 0.5, 3, data.val)]
        with PeakLiveBytes() as meter:
            attention_mass(model, examples, candidate.layers)
        peaks.append(meter.peak)
    assert peaks[1] < 5 * peaks[0]
