"""`ropenope export` without a study: each shipped preset as a Hugging Face folder, loaded back
with ``AutoModelForCausalLM`` and compared with our model (logits and greedy generation).

Every layout runs with GQA, random weights and non-trivial norm gains, on sequences longer
than its largest window (and past its temperature floor), so a layer wired to the wrong
window, base, norm or head shows up. Stock layouts load without remote code; the ones no stock
class expresses load from the folder's own ``modeling_ropenope.py``.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from space.expand import build_candidate  # noqa: E402
from space.layers import ModelShape  # noqa: E402
from space.presets import BUILTIN_PRESETS  # noqa: E402
from space.vocab import DOC, NEEDLE_CLOSE, NEEDLE_OPEN, PAD, VOCAB_SIZE  # noqa: E402
from workers import tokens  # noqa: E402
from workers.hf_export import (  # noqa: E402
    INFO_NAME,
    ExportError,
    ExportMismatch,
    check_export,
    export_candidate,
)
from workers.hf_layout import LLAMA, QWEN3, SMOLLM3, NotExpressible, stock_layout  # noqa: E402
from workers.model import HybridTransformer  # noqa: E402
from workers.scores import greedy_decode  # noqa: E402

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
}


def preset(name: str, **knobs):
    return build_candidate({**BUILTIN_PRESETS[name], "kv_heads": 2, **knobs}, SHAPE, TRAIN_LEN)


def random_weights(candidate, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = HybridTransformer(candidate.shape, candidate.layers)
    with torch.no_grad():  # norm gains away from 1, so a misplaced or missing norm shows
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.mul_(4.0)  # sharper attention than init, so masks matter
    return model.state_dict()


def ours(candidate, weights) -> HybridTransformer:
    model = HybridTransformer(candidate.shape, candidate.layers)
    model.load_state_dict(weights)
    return model.eval()


def longest_span(candidate) -> int:
    spans = [16]
    for spec in candidate.layers:
        if spec.window_tokens is not None:
            spans.append(spec.window_tokens)
        if spec.temperature is not None:
            spans.append(spec.temperature.floor_tokens)
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
        "sliding_attention" if s.window_tokens else "full_attention" for s in candidate.layers
    ]
    assert_same_model(result, model, candidate, remote=False)


@pytest.mark.parametrize("name", [n for n, cls in EXPECTED.items() if cls is None])
def test_hf_export_preset_without_stock_class_is_refused_then_exports_as_remote_code(
    name, tmp_path
):
    candidate = preset(name)
    with pytest.raises(NotExpressible):
        export(candidate, tmp_path)
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


def test_hf_export_remote_code_handles_left_padded_batches(tmp_path):
    candidate = preset("llama4_like")
    result, model = export(candidate, tmp_path, remote_code=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(result.out_dir), trust_remote_code=True
    ).eval()
    gen = torch.Generator().manual_seed(5)
    short, long = (torch.randint(0, 256, (1, n), generator=gen) for n in (40, 75))
    batch = torch.full((2, 75), PAD)
    batch[0, 35:], batch[1] = short[0], long[0]
    mask = (batch != PAD).long()
    mask[1] = 1
    with torch.no_grad():
        out = hf.generate(
            batch, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None
        )
        for row, prompt in enumerate((short, long)):
            assert out[row, 75:].tolist() == greedy_decode(model, prompt, 6)[0].tolist()


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
    from workers.hf_tokenizer import save_byte_tokenizer

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
SELF_CONTAINED = {"", "__future__", "dataclasses", "math", "typing", "torch", "transformers"}


def _imported_packages(source: str) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("" if node.level else (node.module or "").split(".")[0])
    return names
