"""`ropenope export` without a study: each shipped preset as a Hugging Face folder, loaded back
with ``AutoModelForCausalLM`` and compared with our model (logits and greedy generation).

Every layout runs with GQA, random weights and non-trivial norm gains, on sequences longer
than its largest window or chunk (and past its temperature floor and its RoPE scaling's
original length), so a layer wired to the wrong window, chunk, base, scaling, norm, sink or head
shows up. Stock layouts load without remote code; the ones no stock
class expresses load from the folder's own ``modeling_ropenope.py``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from space.expand import build_candidate  # noqa: E402
from space.layers import ModelShape  # noqa: E402
from space.presets import BUILTIN_PRESETS  # noqa: E402
from space.stages import StagePlan  # noqa: E402
from space.vocab import DOC, NEEDLE_CLOSE, NEEDLE_OPEN, PAD, VOCAB_SIZE  # noqa: E402
from workers import tokens  # noqa: E402
from workers.decoding import greedy_decode  # noqa: E402
from workers.hf.classes import (  # noqa: E402
    GRANITE_HYBRID,
    LLAMA,
    LLAMA4,
    PHI3,
    QWEN3,
    QWEN3_NEXT,
    SMOLLM3,
    stock_layout,
)
from workers.hf.export import (  # noqa: E402
    INFO_NAME,
    ExportError,
    ExportMismatch,
    check_export,
    export_candidate,
)
from workers.hf.reasons import NotExpressible  # noqa: E402
from workers.model import HybridTransformer  # noqa: E402

# Six layers, so gemma3_like's 5:1 pattern has its global layer; two KV heads for four heads.
SHAPE = ModelShape(
    n_layers=6, d_model=32, n_heads=4, n_kv_heads=4, mlp_hidden=48, vocab_size=VOCAB_SIZE
)
TRAIN_LEN = 32  # the temperature floor of llama4_like (its default: the training length)

# Which class each shipped preset exports to (None: no stock class; --remote-code).
EXPECTED = {
    "rope": LLAMA,
    "qknorm": QWEN3,
    "nope": SMOLLM3,
    "rnope_swa": SMOLLM3,
    "rnope": SMOLLM3,
    "gemma3_like": None,  # two RoPE bases
    "llama4_like": None,  # chunked local attention, NoPE query temperature
    "gptoss_like": None,  # learned attention sinks
    "cohere2_like": SMOLLM3,
    "qwen3_next_like": QWEN3_NEXT,  # Gated DeltaNet with gated, QK-normed partial-RoPE attention
    "gemma4_like": None,  # proportional RoPE: Gemma 4's, whose block is not ours
    "jamba_like": GRANITE_HYBRID,  # Mamba2 layers with NoPE attention (Granite 4.0-H)
    "olmo_hybrid_like": None,  # Gated DeltaNet with plain NoPE attention: not Qwen3-Next
    "mimo_like": None,  # two RoPE bases, sinks on the local layers only
    "kimi_linear_like": None,  # KDA: Kimi Linear's, whose attention layers are MLA
}
# Presets whose placement needs more than SHAPE's six layers (a 7:1 ratio, an 8-letter layout)
LAYERS = {"jamba_like": 8, "mimo_like": 8}
# What a remote-code preset is refused for without --remote-code, in the knobs' words.
REFUSAL_KNOBS = {
    "olmo_hybrid_like": ("output_gate=none", "qk_norm=none", "global_position=nope"),
    "gemma4_like": ("rope_type=proportional", "Gemma 4"),
    "kimi_linear_like": ("local_mixer=kda", "Kimi Linear", "MLA"),
}


def preset(name: str, **knobs):
    shape = dataclasses.replace(SHAPE, n_layers=LAYERS.get(name, SHAPE.n_layers))
    return build_candidate({**BUILTIN_PRESETS[name], "kv_heads": 2, **knobs}, shape, TRAIN_LEN)


def random_weights(candidate, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = HybridTransformer(candidate.shape, candidate.layers)
    # Gated DeltaNet and KDA layers keep their init scale: they have no mask to sharpen, and at 4x it
    # the fp32 rounding of two equal computations (one layer alone: 9e-7 apart) grows about
    # tenfold per layer (logits 9e-4 apart on 200 tokens at 4x, 1e-6 at 1x).
    deltanet = {
        f"blocks.{s.index}." for s in candidate.layers if s.mixer.value in ("gated_deltanet", "kda")
    }
    with torch.no_grad():  # norm gains away from 1, so a misplaced or missing norm shows
        for name, p in model.named_parameters():
            if name.endswith("sinks"):  # sinks that take from none to most of the mass
                p.copy_(2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif not name.startswith(tuple(deltanet)):
                p.mul_(4.0)  # sharper attention than init, so masks matter
    return model.state_dict()


def ours(candidate, weights) -> HybridTransformer:
    """Our model as the weights were last trained: the last stage's layers."""
    model = HybridTransformer(candidate.shape, candidate.final_layers)
    model.load_state_dict(weights)
    return model.eval()


def longest_span(candidate) -> int:
    spans = [16]
    for spec in candidate.final_layers:
        if spec.window_tokens is not None:
            spans.append(spec.window_tokens)
        if spec.temperature is not None:
            spans.append(spec.temperature.floor_tokens)
        if spec.rope_scaling is not None and spec.rope_scaling.original_tokens:
            spans.append(spec.rope_scaling.original_tokens)
    return max(spans)


def export(candidate, tmp_path, **kwargs):
    weights = random_weights(candidate)
    result = export_candidate(
        candidate,
        weights,
        tmp_path / "model",
        max_position_embeddings=1024,
        card="# test card\n",
        **kwargs,
    )
    return result, ours(candidate, weights)


def left_padded(short_len: int, long_len: int):
    """Two random rows (seed 5) as one batch: the short one left-padded with PAD, the long
    one whole. Returns (short, long, batch, attention mask)."""
    gen = torch.Generator().manual_seed(5)
    short, long = (torch.randint(0, 256, (1, n), generator=gen) for n in (short_len, long_len))
    batch = torch.full((2, long_len), PAD)
    batch[0, long_len - short_len :], batch[1] = short[0], long[0]
    mask = (batch != PAD).long()
    mask[1] = 1
    return short, long, batch, mask


def assert_same_model(result, model, candidate, *, remote: bool) -> None:
    """Logits within 1e-4 on ids longer than every window, and the same greedy tokens."""
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(result.out_dir), trust_remote_code=remote
    ).eval()
    assert type(hf).__name__ == result.architecture
    span = longest_span(candidate)
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, VOCAB_SIZE, (2, 2 * span + 5), generator=gen)
    with torch.no_grad():
        want = model(idx)
        got = hf(input_ids=idx).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # generation crosses the window: prompt past it, then more tokens through the KV cache
    prompt = idx[:1, : span + 3]
    with torch.no_grad():
        theirs = hf.generate(
            prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=PAD
        )
        mine = greedy_decode(model, prompt, 12)
    assert theirs[0, prompt.shape[1] :].tolist() == mine[0].tolist()


def test_hf_export_expected_names_every_shipped_preset():
    assert set(EXPECTED) == set(BUILTIN_PRESETS)


@pytest.mark.parametrize("name", [n for n, cls in EXPECTED.items() if cls is not None])
def test_hf_export_stock_preset_loads_without_remote_code_and_matches(name, tmp_path):
    candidate = preset(name)
    result, model = export(candidate, tmp_path)
    assert result.architecture == EXPECTED[name] and not result.remote_code
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    files = set(result.files)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", INFO_NAME} <= files
    assert not any(f.endswith(".py") for f in files)  # nothing to trust
    config = json.loads((result.out_dir / "config.json").read_text())
    assert "auto_map" not in config
    assert config["layer_types"] == [
        "linear_attention"
        if s.recurrent
        else "sliding_attention"
        if s.window_tokens
        else "full_attention"
        for s in candidate.layers
    ]
    assert_same_model(result, model, candidate, remote=False)


def test_hf_export_refuses_a_layer_field_no_exporter_knows_naming_it(tmp_path, monkeypatch):
    """A per-layer field newer than the exporters (here a made-up one) is refused by name,
    with --remote-code too, and nothing is written."""
    from space.layers import LayerSpec

    to_dict = LayerSpec.to_dict
    monkeypatch.setattr(LayerSpec, "to_dict", lambda self: {**to_dict(self), "future_knob": 1})
    candidate = preset("rope")
    for remote_code in (False, True):
        with pytest.raises(NotExpressible, match="future_knob=1.*not implemented by export") as err:
            export(candidate, tmp_path, remote_code=remote_code)
        assert not err.value.remote_code_possible
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("name", [n for n, cls in EXPECTED.items() if cls is None])
def test_hf_export_preset_without_stock_class_is_refused_then_exports_as_remote_code(
    name, tmp_path
):
    candidate = preset(name)
    with pytest.raises(NotExpressible) as err:
        export(candidate, tmp_path)
    assert err.value.remote_code_possible
    for knob in REFUSAL_KNOBS.get(name, ()):
        assert knob in str(err.value), (knob, str(err.value))
    assert not (tmp_path / "model").exists()  # nothing half-written
    result, model = export(candidate, tmp_path, remote_code=True)
    assert result.remote_code and result.architecture == "RopenopeForCausalLM"
    config = json.loads((result.out_dir / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModelForCausalLM"}
    for name_ in ("modeling_ropenope.py", "configuration_ropenope.py"):
        assert _imported_packages((result.out_dir / name_).read_text()) <= SELF_CONTAINED
    assert_same_model(result, model, candidate, remote=True)


def test_hf_export_remote_code_reproduces_every_knob_at_once(tmp_path):
    """Learned QK-norm after RoPE on the local layers only, two bases, two windows, NoPE with
    temperature: none of it in a stock class, all of it in the remote-code model."""
    candidate = build_candidate(
        {
            "global_every": 3,
            "global_position": "nope",
            "local_rope_base": 500.0,
            "local_window": 7,
            "global_window": 19,
            "global_temperature": "log",
            "global_temperature_floor": 8,
            "global_temperature_scale": 0.5,
            "qk_norm": "post_rope",
            "qk_norm_layers": "local",
            "kv_heads": 2,
        },
        SHAPE,
        TRAIN_LEN,
    )
    result, model = export(candidate, tmp_path, remote_code=True)
    assert_same_model(result, model, candidate, remote=True)


def refused_then_exported_as_remote_code(candidate, tmp_path, *, match: str) -> None:
    """Refused without --remote-code naming ``match`` (and offered it), then exported as remote
    code: logits within 1e-4 and the same greedy tokens."""
    with pytest.raises(NotExpressible, match=match) as err:
        export(candidate, tmp_path)
    assert err.value.remote_code_possible
    result, model = export(candidate, tmp_path, remote_code=True)
    assert result.remote_code and result.max_abs_diff <= 1e-4
    assert_same_model(result, model, candidate, remote=True)


@pytest.mark.parametrize(
    "knobs",
    [
        # one gate per head on NoPE globals beside windowed RoPE locals (Qwen3-Next: neither)
        {"output_gate": "headwise", "global_position": "nope", "local_window": 7},
        # per-dimension gates on the global layers only, sinks on every layer
        {"output_gate": "elementwise", "output_gate_layers": "global", "attention_sink": "learned"},
    ],
    ids=["headwise_nope", "elementwise_global_sinks"],
)
def test_hf_export_remote_code_reproduces_the_output_gate(knobs, tmp_path):
    """A gated candidate no stock class takes is refused naming the knob, then exported as
    remote code whose gate (``self_attn.gate_proj``) is ours: same logits and greedy tokens."""
    candidate = build_candidate({"global_every": 3, "kv_heads": 2, **knobs}, SHAPE, TRAIN_LEN)
    refused_then_exported_as_remote_code(candidate, tmp_path, match="output_gate")


@pytest.mark.parametrize(
    "knobs",
    [{"global_window": 16}, {"global_position": "rope", "qk_norm": "pre_rope"}],
    ids=["window", "rope_qk_norm"],
)
def test_hf_export_remote_code_reproduces_mamba2_hybrids_granite_cannot(knobs, tmp_path):
    """jamba_like with a knob GraniteMoeHybrid lacks: refused naming it, then exported as
    remote code (transformers' Mamba2Mixer in our modeling file): same logits and tokens."""
    candidate = preset("jamba_like", **knobs)
    refused_then_exported_as_remote_code(candidate, tmp_path, match="GraniteMoeHybrid")


@pytest.mark.parametrize(
    ("name", "knobs"),
    [("llama4_like", {}), ("olmo_hybrid_like", {}), ("jamba_like", {"global_window": 16})],
)
def test_hf_export_remote_code_handles_left_padded_batches(name, knobs, tmp_path):
    """Padding takes no position (attention) and writes nothing to a recurrent state."""
    candidate = preset(name, **knobs)
    result, model = export(candidate, tmp_path, remote_code=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(result.out_dir), trust_remote_code=True
    ).eval()
    short, long, batch, mask = left_padded(40, 75)
    with torch.no_grad():
        out = hf.generate(
            batch, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None
        )
        for row, prompt in enumerate((short, long)):
            assert out[row, 75:].tolist() == greedy_decode(model, prompt, 6)[0].tolist()


# ---------------------------------------------------------------- the knobs of issue 17

# Candidates with the new knobs that a stock class reproduces, and the class (checked below).
STOCK_NEW_KNOBS = {
    "linear": ({"rope_scaling": "linear", "rope_scaling_factor": 4}, LLAMA),
    "yarn": (
        {
            "rope_scaling": "yarn",
            "rope_scaling_factor": 8,
            "rope_scaling_original_tokens": 16,
            "rope_scaling_beta_fast": 8,
            "rope_scaling_beta_slow": 2,
            "rope_scaling_attention_factor": 1.3,
        },
        LLAMA,
    ),
    "yarn_qknorm_swa": (
        {
            "qk_norm": "pre_rope",
            "global_every": 2,
            "local_window": 9,
            "rope_scaling": "yarn",
            "rope_scaling_factor": 4,
            "rope_scaling_original_tokens": 16,
        },
        QWEN3,
    ),
    "linear_rnope_swa": (
        {
            "global_every": 3,
            "global_position": "nope",
            "local_window": 9,
            "rope_scaling": "linear",
            "rope_scaling_factor": 2,
        },
        SMOLLM3,
    ),
    "partial_rotary": ({"rope_fraction": 0.5}, PHI3),
    # Qwen3-Next's gated attention without recurrent layers; whole heads turn (its config's
    # rotary fraction defaults to 0.25, so 1 must be written)
    "gated_attention": ({"output_gate": "elementwise", "qk_norm": "pre_rope"}, QWEN3_NEXT),
    # Qwen3-Next's layers with YaRN on a half-rotary head (two frequencies: one kept, one
    # interpolated), so a wrong rotary width or scaling shows
    "gated_deltanet_yarn": (
        {"global_every": 3, "local_mixer": "gated_deltanet", "output_gate": "elementwise",
         "qk_norm": "pre_rope", "rope_fraction": 0.5, "rope_scaling": "yarn",
         "rope_scaling_factor": 4, "rope_scaling_original_tokens": 16},
        QWEN3_NEXT,
    ),
    "partial_rotary_swa": ({"global_every": 0, "local_window": 7, "rope_fraction": 0.25}, PHI3),
    "chunked_rnope": (
        {"global_every": 3, "global_position": "nope", "local_window": 16,
         "local_attention": "chunked"},
        LLAMA4,
    ),
    "chunked_rope_yarn": (
        {"global_every": 2, "global_rope_base": 10000.0, "local_window": 16,
         "local_attention": "chunked", "rope_scaling": "yarn", "rope_scaling_factor": 4,
         "rope_scaling_original_tokens": 16},
        LLAMA4,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(STOCK_NEW_KNOBS))
def test_hf_export_new_knob_loads_as_its_stock_class_and_matches(name, tmp_path):
    knobs, architecture = STOCK_NEW_KNOBS[name]
    candidate = build_candidate({"kv_heads": 2, **knobs}, SHAPE, TRAIN_LEN)
    result, model = export(candidate, tmp_path)
    assert result.architecture == architecture and not result.remote_code
    assert not any(f.endswith(".py") for f in result.files)
    config = json.loads((result.out_dir / "config.json").read_text())
    rope = config["rope_parameters"]
    scaling = next(s.rope_scaling for s in candidate.layers if s.position.value == "rope")
    if scaling is None:
        assert rope["rope_type"] == "default"
    else:  # every field the rope-init function reads, none left to a default
        assert rope["rope_type"] == scaling.kind.value and rope["factor"] == scaling.factor
        if scaling.kind.value == "yarn":
            assert rope["original_max_position_embeddings"] == scaling.original_tokens
            assert (rope["beta_fast"], rope["beta_slow"]) == (scaling.beta_fast, scaling.beta_slow)
            assert rope["attention_factor"] == pytest.approx(scaling.attention_factor)
            assert rope["truncate"] is True
            # YaRN's extended context, so Hugging Face does not call the config inconsistent
            assert config["max_position_embeddings"] == scaling.factor * scaling.original_tokens
    if architecture == PHI3:
        assert rope["partial_rotary_factor"] == knobs["rope_fraction"]
    if architecture == QWEN3_NEXT:  # dense, every fraction written
        assert config["num_experts"] == 0 and config["mlp_only_layers"] == list(range(6))
        assert rope["partial_rotary_factor"] == knobs.get("rope_fraction", 1.0)
    if architecture == LLAMA4:
        assert config["moe_layers"] == [] and not config["attn_temperature_tuning"]
        assert config["attention_chunk_size"] == knobs["local_window"]
        assert config["layer_types"] == [
            "chunked_attention" if s.window_tokens else "full_attention" for s in candidate.layers
        ]
        assert config["no_rope_layers"] == [
            int(s.position.value == "rope") for s in candidate.layers
        ]
    assert_same_model(result, model, candidate, remote=False)


def test_hf_layout_refuses_the_new_knobs_no_stock_class_reproduces():
    cases = {
        "attention_sink=learned": {"attention_sink": "learned"},
        "rope_scaling=ntk": {"rope_scaling": "ntk", "rope_scaling_factor": 4},
        "rope_scaling_layers=global": {"global_every": 2, "rope_scaling": "linear",
                                       "rope_scaling_factor": 2, "rope_scaling_layers": "global"},
        "rope_fraction=0.5 with NoPE layers [1, 3, 5]": {"global_every": 2,
                                                          "global_position": "nope",
                                                          "rope_fraction": 0.5},
        "rope_fraction=0.5 with qk_norm=pre_rope": {"qk_norm": "pre_rope", "rope_fraction": 0.5},
        "rope_fraction=0.5 with rope_scaling=linear": {"rope_fraction": 0.5,
                                                       "rope_scaling": "linear",
                                                       "rope_scaling_factor": 2},
        "local_attention=chunked (chunks of 8 on layers [0, 2, 4]) with qk_norm=pre_rope": {
            "global_every": 2, "local_window": 8, "local_attention": "chunked",
            "qk_norm": "pre_rope"},
        "local_attention=chunked (chunks of 8 on layers [0, 2, 4]) with sliding windows on "
        "layers [1, 3, 5]": {"global_every": 2, "local_window": 8, "local_attention": "chunked",
                             "global_window": 8},
        "global_temperature=log": {"global_every": 2, "global_position": "nope",
                                   "local_window": 8, "local_attention": "chunked",
                                   "global_temperature": "log"},
    }  # fmt: skip
    for expected, knobs in cases.items():
        candidate = build_candidate(knobs, SHAPE, TRAIN_LEN)
        with pytest.raises(NotExpressible) as err:
            stock_layout(
                candidate.shape, candidate.layers, candidate.knobs, max_position_embeddings=64
            )
        assert expected in str(err.value), (expected, str(err.value))
        assert err.value.remote_code_possible


def test_hf_layout_refuses_what_qwen3_next_lacks_naming_the_knob():
    """qwen3_next_like with one knob Qwen3-Next cannot express: refused by name, and offered
    remote code (our modeling file has Gated DeltaNet layers and the gate)."""
    cases = {
        "output_gate=headwise": {"output_gate": "headwise"},
        "qk_norm=post_rope": {"qk_norm": "post_rope"},
        "rope_scaling=ntk": {"rope_scaling": "ntk", "rope_scaling_factor": 2,
                             "rope_fraction": 0.5},
        "global_window=8": {"global_window": 8},
        "attention_sink=learned": {"attention_sink": "learned"},
        "output_gate_layers=local": {"global_every": 2, "local_mixer": "softmax",
                                     "output_gate_layers": "local"},
        "rope_scaling_layers=global": {"global_every": 2, "local_mixer": "softmax",
                                       "local_rope_base": 1e7, "rope_scaling": "linear",
                                       "rope_scaling_factor": 2, "rope_scaling_layers": "global"},
    }  # fmt: skip
    for expected, knobs in cases.items():
        candidate = preset("qwen3_next_like", **knobs)
        with pytest.raises(NotExpressible) as err:
            stock_layout(
                candidate.shape, candidate.layers, candidate.knobs, max_position_embeddings=64
            )
        assert expected in str(err.value), (expected, str(err.value))
        assert "Qwen3-Next" in str(err.value)
        assert err.value.remote_code_possible


# Every knob of issue 17 on one candidate: chunked local layers beside sliding global ones, sinks
# on every layer, partial rotary, two bases, a RoPE scaling on the global layers only, and a
# learned QK-norm after RoPE on the local layers (none of it in one stock class).
EVERY_NEW_KNOB = {
    "global_every": 3,
    "global_position": "rope",
    "local_rope_base": 500.0,
    "global_rope_base": 10000.0,
    "local_window": 7,
    "local_attention": "chunked",
    "global_window": 19,
    "attention_sink": "learned",
    "rope_fraction": 0.5,
    "rope_scaling_factor": 4,
    "rope_scaling_layers": "global",
    "rope_scaling_original_tokens": 16,
    "qk_norm": "post_rope",
    "qk_norm_layers": "local",
    "kv_heads": 2,
}


@pytest.mark.parametrize("scaling", ["linear", "ntk", "yarn"])
def test_hf_export_remote_code_reproduces_every_new_knob_at_once(scaling, tmp_path):
    candidate = build_candidate({**EVERY_NEW_KNOB, "rope_scaling": scaling}, SHAPE, TRAIN_LEN)
    layers = candidate.layers
    assert {s.window_kind.value for s in layers if s.window_tokens} == {"chunked", "sliding"}
    assert all(s.attention_sink.value == "learned" for s in layers)
    assert [s.index for s in layers if s.rope_scaling] == [2, 5]
    with pytest.raises(NotExpressible):
        export(candidate, tmp_path)
    result, model = export(candidate, tmp_path, remote_code=True)
    assert result.remote_code and result.check_tokens > 2 * 19  # past the window and 16
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(result.out_dir), trust_remote_code=True
    )
    sinks = hf.state_dict()["model.layers.1.self_attn.sinks"]
    torch.testing.assert_close(sinks, model.blocks[1].attn.sinks.detach())  # trained, not zeros
    # generation runs from 22 to 34 tokens through the cache: every step past the scaling's
    # original 16 (NTK's frequencies change with each one) and across chunk boundaries
    assert_same_model(result, model, candidate, remote=True)


def test_hf_export_remote_code_left_padding_with_chunks_sinks_and_ntk(tmp_path):
    """Each row's chunks, NTK length and positions count its own tokens, not the padding."""
    candidate = build_candidate({**EVERY_NEW_KNOB, "rope_scaling": "ntk"}, SHAPE, TRAIN_LEN)
    result, model = export(candidate, tmp_path, remote_code=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(result.out_dir), trust_remote_code=True
    ).eval()
    short, long, batch, mask = left_padded(23, 41)
    with torch.no_grad():
        logits = hf(input_ids=batch, attention_mask=mask).logits
        torch.testing.assert_close(logits[0, 18:], model(short)[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(logits[1], model(long)[0], atol=1e-4, rtol=0)
        out = hf.generate(
            batch, attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=None
        )
        for row, prompt in enumerate((short, long)):
            assert out[row, 41:].tolist() == greedy_decode(model, prompt, 8)[0].tolist()


def two_stage(knobs: dict, later: dict) -> object:
    plan = dict(batch_size=8, lr=1e-3, warmup_steps=0, min_lr_ratio=0.1,
                task_mix={"passkey": 1.0}, lm_fraction=0.25)  # fmt: skip
    stages = (
        StagePlan(steps=10, seq_len=TRAIN_LEN, **plan),
        StagePlan(steps=5, seq_len=4 * TRAIN_LEN, **plan, knobs=later),
    )
    return build_candidate({"kv_heads": 2, **knobs}, SHAPE, TRAIN_LEN, stages=stages)


def test_hf_export_two_stage_candidate_exports_its_last_stage(tmp_path):
    """The paper's baseline: trained short, then long with the base raised and a YaRN scaling.
    The export is the model the weights were last trained and scored as."""
    later = {"global_rope_base": 1e6, "rope_scaling": "yarn", "rope_scaling_factor": 4}
    candidate = two_stage({"global_every": 1}, later)
    assert candidate.layers[0].rope_base == 1e4 and candidate.final_layers[0].rope_base == 1e6
    result, model = export(candidate, tmp_path)
    assert result.architecture == LLAMA
    rope = json.loads((result.out_dir / "config.json").read_text())["rope_parameters"]
    assert rope["rope_theta"] == 1e6 and rope["rope_type"] == "yarn"
    assert rope["original_max_position_embeddings"] == TRAIN_LEN
    assert_same_model(result, model, candidate, remote=False)
    # the first stage's layers are another model: exporting them would have failed the check
    first = HybridTransformer(candidate.shape, candidate.layers).eval()
    first.load_state_dict(model.state_dict())
    idx = torch.randint(0, VOCAB_SIZE, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (first(idx) - model(idx)).abs().max() > 1e-2


def test_hf_export_two_stage_remote_code_candidate_exports_its_last_stage(tmp_path):
    """llama4_like, then a long stage with NTK scaling on its chunked RoPE layers."""
    later = {"rope_scaling": "ntk", "rope_scaling_factor": 4, "rope_scaling_layers": "local"}
    candidate = two_stage(dict(BUILTIN_PRESETS["llama4_like"]), later)
    assert all(s.rope_scaling is None for s in candidate.layers)
    with pytest.raises(NotExpressible, match="rope_scaling=ntk"):
        export(candidate, tmp_path)
    result, model = export(candidate, tmp_path, remote_code=True)
    specs = json.loads((result.out_dir / "config.json").read_text())["layer_specs"]
    assert specs == [s.to_dict() for s in candidate.final_layers]
    assert_same_model(result, model, candidate, remote=True)


def test_hf_card_shows_the_last_stage_and_the_new_knobs():
    from workers.hf.card import CardFacts, render_card

    later = {"global_rope_base": 1e6, "rope_scaling": "yarn", "rope_scaling_factor": 4}
    candidate = two_stage(dict(BUILTIN_PRESETS["gptoss_like"], rope_fraction=0.5), later)
    facts = CardFacts(study="s", trial=3, seed=0, step=15, seq_len=TRAIN_LEN,
                      architecture="RopenopeForCausalLM", remote_code=True, scores={})  # fmt: skip
    card = render_card(candidate, facts)
    header = next(line for line in card.splitlines() if line.startswith("| layer |"))
    assert header == (
        "| layer | kind | position | RoPE base | window | QK-norm | temperature | rotary dims "
        "| RoPE scaling | sink |"
    )
    rows = [line for line in card.splitlines() if line.startswith("| 1 |")]
    # layer 1 is global: the second stage's base and scaling, half of each 8-dim head turning
    assert rows == [
        "| 1 | global | rope | 1000000 | - | none | - | 4 of 8 | yarn x4 from 32, beta 32/1, "
        "attention x1.139 | learned |"
    ]
    assert "last of 2 training stages" in card and "attention-sinks" in card
    plain = render_card(preset("rope"), facts)
    assert "rotary dims" not in plain and "training stages" not in plain  # only where used


def test_hf_card_shows_the_mixer_and_the_output_gate():
    from workers.hf.card import CardFacts, render_card

    facts = CardFacts(study="s", trial=3, seed=0, step=15, seq_len=TRAIN_LEN,
                      architecture=QWEN3_NEXT, remote_code=False, scores={})  # fmt: skip
    card = render_card(preset("qwen3_next_like"), facts)
    header = next(line for line in card.splitlines() if line.startswith("| layer |"))
    assert header == (
        "| layer | kind | mixer | position | RoPE base | window | QK-norm | output gate "
        "| temperature | rotary dims |"
    )
    rows = [line for line in card.splitlines() if line.startswith(("| 2 |", "| 3 |"))]
    assert rows == [  # a recurrent layer has no position, QK-norm nor gate
        "| 2 | local | gated_deltanet | - | - | - | - | - | - | - |",
        "| 3 | global | softmax | rope | 10000000 | - | pre_rope | elementwise | - | 2 of 8 |",
    ]


def test_hf_dynamic_rope_is_not_our_ntk_so_ntk_needs_remote_code():
    """Why ``rope_scaling: ntk`` is refused for stock classes (HF ``dynamic``): a forward after a
    longer one keeps the longer one's frequencies. If HF ever matches, NTK can go stock."""
    from workers.hf.export import hf_state_dict

    knobs = {"kv_heads": 2, "rope_scaling": "ntk", "rope_scaling_factor": 4,
             "rope_scaling_original_tokens": 16}  # fmt: skip
    candidate = build_candidate(knobs, SHAPE, TRAIN_LEN)
    weights = random_weights(candidate)
    model = ours(candidate, weights)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=SHAPE.d_model,
        intermediate_size=SHAPE.mlp_hidden,
        num_hidden_layers=SHAPE.n_layers,
        num_attention_heads=SHAPE.n_heads,
        num_key_value_heads=2,
        head_dim=SHAPE.head_dim,
        rms_norm_eps=SHAPE.norm_eps,
        rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 4.0},
        max_position_embeddings=16,  # HF dynamic's original length
        tie_word_embeddings=True,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.load_state_dict(hf_state_dict(weights), strict=False)
    idx = torch.randint(0, VOCAB_SIZE, (1, 120), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=idx).logits, model(idx), atol=1e-4, rtol=0)
        later = (hf(input_ids=idx[:, :70]).logits - model(idx[:, :70])).abs().max()
    assert later > 1e-3


def test_hf_llama4_temperature_counts_padding_so_temperature_needs_remote_code(tmp_path):
    """Why ``global_temperature`` is refused for the dense Llama4 layout that takes chunks: it
    matches unpadded, but a left-padded row's NoPE queries are scaled by padded positions."""
    from workers.hf.classes import LLAMA4 as llama4

    candidate = preset("llama4_like")
    no_temperature = preset("llama4_like", global_temperature="none")
    weights = random_weights(candidate)
    layout = stock_layout(
        no_temperature.shape,
        no_temperature.layers,
        max_position_embeddings=256,
        special_tokens={"pad_token_id": PAD},
    )
    assert layout.architecture == llama4
    t = next(s.temperature for s in candidate.layers if s.temperature)
    fields = {k: v for k, v in layout.config.items() if k != "model_type"}
    fields.update(attn_temperature_tuning=True, floor_scale=t.floor_tokens, attn_scale=t.scale)
    config = transformers.AutoConfig.for_model(layout.model_type, **fields)
    hf = transformers.Llama4ForCausalLM(config).eval()
    from workers.hf.export import hf_state_dict

    hf.load_state_dict(hf_state_dict(weights, llama4, candidate.shape), strict=False)
    model = ours(candidate, weights)
    short, long, batch, mask = left_padded(40, 75)
    with torch.no_grad():
        logits = hf(input_ids=batch, attention_mask=mask).logits
        torch.testing.assert_close(logits[1], model(long)[0], atol=1e-4, rtol=0)  # unpadded
        assert (logits[0, 35:] - model(short)[0]).abs().max() > 1e-3  # padded


def test_hf_layout_refusals_name_the_knob_and_its_value():
    cases = {
        "global_temperature=log": {"global_every": 2, "global_position": "nope",
                                   "global_temperature": "log"},
        "qk_norm=post_rope": {"qk_norm": "post_rope"},
        "qk_norm_layers=local": {"global_every": 2, "qk_norm": "pre_rope",
                                 "qk_norm_layers": "local"},
        "global_position=nope": {"global_every": 2, "global_position": "nope",
                                 "qk_norm": "pre_rope"},
        "local_rope_base=100": {"global_every": 2, "local_rope_base": 100.0,
                                "global_rope_base": 1e6},
        "local_window=8, global_window=16": {"global_every": 2, "local_window": 8,
                                             "global_window": 16},
    }  # fmt: skip
    for expected, knobs in cases.items():
        candidate = build_candidate(knobs, SHAPE, TRAIN_LEN)
        with pytest.raises(NotExpressible) as err:
            stock_layout(
                candidate.shape, candidate.layers, candidate.knobs, max_position_embeddings=64
            )
        assert expected in str(err.value), (expected, str(err.value))
        assert err.value.remote_code_possible


def test_hf_layout_knows_which_layers_are_nope_and_windowed():
    candidate = preset("rnope_swa", local_window=9)
    layout = stock_layout(
        candidate.shape, candidate.layers, candidate.knobs, max_position_embeddings=64
    )
    # 3 local RoPE windowed : 1 global NoPE full; SmolLM3's flag is 1 for RoPE
    assert layout.config["no_rope_layers"] == [1, 1, 1, 0, 1, 1]
    assert layout.config["layer_types"][3] == "full_attention"
    assert layout.config["layer_types"][:3] == ["sliding_attention"] * 3
    assert layout.config["sliding_window"] == 9


def test_hf_layout_refuses_a_per_layer_field_it_does_not_know(monkeypatch):
    from space.layers import LayerSpec

    candidate = preset("rope")
    original = LayerSpec.to_dict
    monkeypatch.setattr(LayerSpec, "to_dict", lambda self: {**original(self), "sink": "learned"})
    with pytest.raises(NotExpressible) as err:
        stock_layout(candidate.shape, candidate.layers, max_position_embeddings=64)
    assert "sink=learned" in str(err.value) and not err.value.remote_code_possible


def test_hf_export_check_fails_when_the_folder_is_not_our_model(tmp_path):
    candidate = preset("rnope_swa", local_window=9)
    result, model = export(candidate, tmp_path)
    from safetensors.torch import load_file, save_file

    path = result.out_dir / "model.safetensors"
    tensors = load_file(str(path))
    key = "model.layers.0.self_attn.q_proj.weight"
    tensors[key] = tensors[key].roll(1, dims=0)  # one head's rows moved: a mapping bug
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(ExportMismatch):
        check_export(result.out_dir, model, trust_remote_code=False, seq_len=40)


def test_hf_export_replaces_an_earlier_export_but_never_a_foreign_folder(tmp_path):
    candidate = preset("rope")
    first, _ = export(candidate, tmp_path, check=False)
    (first.out_dir / "stale.txt").write_text("from before")
    second, _ = export(candidate, tmp_path, check=False)  # our own folder: replaced whole
    assert not (second.out_dir / "stale.txt").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_candidate(
            candidate,
            random_weights(candidate),
            foreign,
            max_position_embeddings=64,
            card="",
            check=False,
        )
    assert (foreign / "notes.txt").read_text() == "mine"


def test_hf_tokenizer_round_trips_text_and_control_tokens(tmp_path):
    from workers.hf.tokenizer import save_byte_tokenizer

    save_byte_tokenizer(tmp_path, max_length=512)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tok) == VOCAB_SIZE
    texts = [
        "def main():\n\treturn 0\n",
        "héllo wörld, ∑ 🦙 and a trailing space ",
        "text that spells <DOC> or <OPEN> stays bytes",
        "",
    ]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert ids == tokens.encode(text).tolist()  # exactly the training encoding
        assert tok.decode(ids) == text
    # control tokens: by id, shown by name, parsed back from a trusted string
    ids = [DOC, *b"key ", NEEDLE_OPEN, *b"4213", NEEDLE_CLOSE, 261, 263, PAD]
    shown = tok.decode(ids)
    assert shown == tokens.decode(ids) == "<DOC>key <OPEN>4213<CLOSE><SEP><T263><PAD>"
    assert tok(shown, split_special_tokens=False)["input_ids"] == ids
    assert tok.convert_tokens_to_ids(["<DOC>", "<OPEN>", "<CLOSE>"]) == [
        DOC,
        NEEDLE_OPEN,
        NEEDLE_CLOSE,
    ]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (DOC, DOC, PAD)
    assert tok.decode(ids, skip_special_tokens=True) == "key 4213"


# What the remote-code files may import: the standard library they use, torch, transformers
# and each other ("" = a relative import); never the ropenope packages.
SELF_CONTAINED = {
    *("", "__future__", "dataclasses", "inspect", "math", "typing"),
    *("torch", "transformers"),
}


def _imported_packages(source: str) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("" if node.level else (node.module or "").split(".")[0])
    return names
