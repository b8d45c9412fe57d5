"""µP (``model.parametrization: mup``): the coordinate check, the multipliers, and the
identity with the standard parametrization at the base width."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from space.expand import build_candidate
from space.layers import ModelShape, Parametrization
from workers.model import HybridTransformer, mup_query_scale
from workers.train import param_groups, set_lr

WIDTHS = (32, 64, 128)
BASE = 32
VOCAB, T, B = 64, 32, 8
# The coordinate check's bound: with µP, every measured activation's mean |x| after a few
# Adam steps stays within this factor across a 4x range of widths.
COORD_FACTOR = 2.0


def shape(d_model: int, parametrization: Parametrization) -> ModelShape:
    mup = parametrization is Parametrization.MUP
    return ModelShape(
        n_layers=2,
        d_model=d_model,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden=4 * d_model,
        vocab_size=VOCAB,
        init_std=0.02,
        parametrization=parametrization,
        base_d_model=BASE if mup else None,
    )


def model_of(s: ModelShape, seed: int = 0) -> HybridTransformer:
    candidate = build_candidate({"global_every": 2, "local_window": 8}, s, T)  # 1:1 hybrid
    torch.manual_seed(seed)
    return HybridTransformer(candidate.shape, candidate.layers)


def coordinates(parametrization: Parametrization, steps: int = 5, lr: float = 1e-2) -> dict:
    """Per width: mean |x| of every block's attention and MLP output, the residual stream
    after each block and the logits, after ``steps`` AdamW steps (the trainer's parameter
    groups and learning-rate rule) on one fixed batch of random tokens."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (B, T + 1), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:]
    out: dict[str, list[float]] = {}
    for width in WIDTHS:
        model = model_of(shape(width, parametrization))
        opt = torch.optim.AdamW(param_groups(model, 0.0), lr=lr, betas=(0.9, 0.95))
        for _ in range(steps):
            set_lr(opt, lr)
            opt.zero_grad()
            F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
            opt.step()
        seen: dict[str, float] = {}
        hooks = []
        for i, block in enumerate(model.blocks):
            for name, module in (("attn", block.attn), ("mlp", block.mlp), ("block", block)):

                def keep(_m, _i, o, key=f"{name}{i}", seen=seen) -> None:
                    o = o[0] if isinstance(o, tuple) else o
                    seen[key] = float(o.abs().mean())

                hooks.append(module.register_forward_hook(keep))
        with torch.no_grad():
            seen["logits"] = float(model(x).abs().mean())
        for h in hooks:
            h.remove()
        for key, value in seen.items():
            out.setdefault(key, []).append(value)
    return out


def spread(values: list[float]) -> float:
    return max(values) / min(values)


@pytest.mark.slow
def test_mup_coordinate_check_is_flat_across_widths_and_standard_is_not() -> None:
    mup = coordinates(Parametrization.MUP)
    standard = coordinates(Parametrization.STANDARD)
    mup_spread = {k: spread(v) for k, v in mup.items()}
    standard_spread = {k: spread(v) for k, v in standard.items()}
    assert max(mup_spread.values()) < COORD_FACTOR, mup_spread
    # the same check fails for the standard parametrization: its activations grow with width
    assert max(standard_spread.values()) >= COORD_FACTOR, standard_spread
    assert standard["logits"][-1] > standard["logits"][0] * COORD_FACTOR


def test_mup_at_base_width_is_the_standard_parametrization() -> None:
    x = torch.randint(0, VOCAB, (2, T))
    mup = model_of(shape(BASE, Parametrization.MUP))
    standard = model_of(shape(BASE, Parametrization.STANDARD))
    torch.testing.assert_close(mup(x), standard(x), rtol=0, atol=0)
    assert {g["lr_scale"] for g in param_groups(mup, 0.1)} == {1.0}


def test_mup_multipliers_follow_the_width() -> None:
    wide = model_of(shape(4 * BASE, Parametrization.MUP))
    assert wide.readout_scale == pytest.approx(1 / 4)
    # scores scale as 1 / head_dim: sqrt(base_head_dim) / head_dim over 1 / sqrt(head_dim)
    assert mup_query_scale(wide.shape) == pytest.approx(0.5)
    scales = wide.lr_scales()
    assert scales["blocks.0.attn.q_proj.weight"] == pytest.approx(1 / 4)
    assert scales["blocks.1.mlp.down_proj.weight"] == pytest.approx(1 / 4)
    assert "embed.weight" not in scales and "norm.weight" not in scales
    groups = {g["lr_scale"]: g for g in param_groups(wide, 0.1) if g["weight_decay"]}
    # decay per step (lr x weight_decay) stays that of the base width
    assert groups[0.25]["weight_decay"] == pytest.approx(0.4)
    assert groups[1.0]["weight_decay"] == pytest.approx(0.1)  # the tied embedding
    # hidden matrices start at init_std / sqrt(width_mult); the embedding at init_std
    assert float(wide.blocks[0].attn.q_proj.weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    assert float(wide.embed.weight.detach().std()) == pytest.approx(0.02, rel=0.1)


def test_model_shape_refuses_mup_without_a_base() -> None:
    with pytest.raises(ValueError, match="base_d_model"):
        ModelShape(4, 64, 4, 4, 128, 64, parametrization=Parametrization.MUP)
    with pytest.raises(ValueError, match="base_d_model"):
        ModelShape(4, 64, 4, 4, 128, 64, base_d_model=32)


@pytest.mark.parametrize("name", ["rope", "qknorm", "gptoss_like", "qwen3_next_like"])
def test_mup_candidate_exports_as_the_standard_model_with_the_same_logits(name, tmp_path):
    pytest.importorskip("transformers")
    from test_hf_export import assert_same_model, random_weights

    from space.presets import BUILTIN_PRESETS
    from space.vocab import VOCAB_SIZE
    from workers.hf.export import INFO_NAME, export_candidate

    wide = ModelShape(
        n_layers=6,
        d_model=64,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden=96,
        vocab_size=VOCAB_SIZE,
        parametrization=Parametrization.MUP,
        base_d_model=16,  # width multiplier 4: multipliers far from 1
    )
    candidate = build_candidate({**BUILTIN_PRESETS[name], "kv_heads": 2}, wide, 32)
    weights = random_weights(candidate)
    result = export_candidate(
        candidate,
        weights,
        tmp_path / "model",
        max_position_embeddings=1024,
        card="# test card\n",
        remote_code=name == "gptoss_like",  # sinks: our own modeling file
    )
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    ours = HybridTransformer(candidate.shape, candidate.final_layers)
    ours.load_state_dict(weights)
    assert_same_model(result, ours.eval(), candidate, remote=result.remote_code)
    info = json.loads((result.out_dir / INFO_NAME).read_text())
    assert info["folded"] == "model.parametrization: mup"
    assert info["candidate"]["shape"]["parametrization"] == "mup"


def _sweep(**model):
    from space.schema import parse_config, parse_yaml

    raw = parse_yaml((Path(__file__).resolve().parents[1] / "configs/demo.yaml").read_text())
    raw["model"].update(model)
    return parse_config(raw)


@pytest.mark.parametrize(
    "model",
    [
        {"parametrization": "mup"},  # no base width
        {"base_d_model": 64},  # a base width without mup
        {"parametrization": "mup", "base_d_model": 66},  # not a multiple of the heads
    ],
)
def test_mup_config_names_model_base_d_model(model) -> None:
    from space.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        _sweep(**model)
    assert "model.base_d_model" in dict(err.value.problems)


def test_mup_candidate_id_is_new_and_round_trips_while_standard_ids_stay() -> None:
    from space.expand import Candidate

    standard, mup = _sweep(), _sweep(parametrization="mup", base_d_model=64)
    assert "parametrization" not in standard.model.model_dump()  # older dumps unchanged
    plain, wide = standard.preset_candidate("rope"), mup.preset_candidate("rope")
    assert "parametrization" not in plain.canonical()["shape"]  # ids made before µP stay
    assert wide.id != plain.id and wide.name.endswith("mup/64")
    back = Candidate.from_dict(wide.to_dict())
    assert back == wide and back.shape.width_mult == 2.0
