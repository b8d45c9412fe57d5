"""Speed settings of training (issue 14): bf16 autocast, torch.compile and its fallback,
activation checkpointing, micro-batches; and the sweep file keys that turn them on.

Tolerances of one training step against fp32 eager: bf16 autocast, loss within 1e-3
relative and gradients within 2e-2 (relative L2 norm of the difference; bf16 keeps 8 bits
of mantissa); compile, loss within 1e-6 and weights after the step within 1e-5.
Activation checkpointing and micro-batches recompute the same numbers: 1e-6.
"""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from engines import TINY, tiny_config_file

import workers.train as train_module
from space.errors import ConfigError
from space.schema import load_config, load_config_text
from space.sections import TrainSection
from workers.model import HybridTransformer
from workers.train import autocast_for, train, weighted_loss

DEVICE = torch.device("cpu")


def _candidate(layers: int = 2):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    raw["model"] = {"layers": layers, "d_model": 16, "heads": 2, "mlp_hidden": 32}
    raw["space"] = {}
    config = load_config_text(yaml.safe_dump(raw))
    knobs = {"global_every": min(2, layers), "global_position": "nope", "local_window": 8}
    return config.candidate(knobs)


def _model(candidate) -> HybridTransformer:
    torch.manual_seed(0)
    return HybridTransformer(candidate.shape, candidate.layers)


def _batch(rows: int = 6, length: int = 16):
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 250, (rows, length + 1), generator=g)
    w = torch.rand(rows, length, generator=g) + 0.1
    return x[:, :-1], x[:, 1:], w


def _next_batch(rng, stage):
    x = torch.from_numpy(rng.integers(0, 250, (4, 17)))
    return x[:, :-1], x[:, 1:], torch.ones(4, 16)


def _train(model, **settings):
    s = TrainSection(
        steps=settings.pop("steps", 2),
        batch_size=4,
        seq_len=16,
        eval_every=1,
        checkpoint_every=100,
        warmup_steps=0,
        **settings,
    )
    return train(model, s, _next_batch, lambda m, stage: {"val_bpb": 1.0}, seed=0, device=DEVICE)


def _grads(model, precision: str = "fp32") -> tuple[float, torch.Tensor]:
    x, y, w = _batch()
    model.zero_grad()
    with autocast_for(DEVICE, precision):
        logits = model(x)
    loss = weighted_loss(logits, y, w)
    loss.backward()
    return float(loss), torch.cat([p.grad.flatten() for p in model.parameters()])


def test_train_bf16_step_is_within_tolerance_of_fp32():
    candidate = _candidate()
    loss32, grad32 = _grads(_model(candidate), "fp32")
    model = _model(candidate)
    loss16, grad16 = _grads(model, "bf16")
    assert abs(loss16 - loss32) <= 1e-3 * abs(loss32)
    assert (grad16 - grad32).norm() <= 2e-2 * grad32.norm()
    assert loss16 != loss32  # bf16 did compute in bf16
    # master weights and gradients stay fp32
    assert all(
        p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters()
    )


def test_train_bf16_run_keeps_fp32_weights_and_optimizer_state(tmp_path):
    model = _model(_candidate())
    path = tmp_path / "checkpoint.pt"
    s = TrainSection(
        steps=2, batch_size=4, seq_len=16, eval_every=1, warmup_steps=0, precision="bf16"
    )
    outcome = train(
        model,
        s,
        _next_batch,
        lambda m, st: {"val_bpb": 1.0},
        seed=0,
        device=DEVICE,
        checkpoint_path=path,
    )
    assert outcome.status == "complete"
    state = torch.load(path, weights_only=True)
    assert {t.dtype for t in state["model"].values()} == {torch.float32}
    moments = [v for s in state["optimizer"]["state"].values() for k, v in s.items() if k != "step"]
    assert moments and {t.dtype for t in moments} == {torch.float32}


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("auto", torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16)],
)
def test_train_precision_decides_the_compute_dtype_on_cpu(precision, dtype):
    # auto is what every study trained with before the key existed: fp32 on CPU (bf16 on CUDA)
    a = torch.ones(4, 4)
    with autocast_for(DEVICE, precision):
        assert (a @ a).dtype == dtype


@pytest.mark.slow
def test_train_compiled_step_matches_eager():
    # one layer and full attention: the smallest graph inductor compiles (~30 s on 2 cores)
    candidate = _candidate(layers=1)
    eager_model, compiled_model = _model(candidate), _model(candidate)
    eager = _train(eager_model, steps=1)
    compiled = _train(compiled_model, steps=1, compile=True)
    assert compiled.compiled and compiled.compile_error is None
    got, want = compiled.history[-1]["train_loss"], eager.history[-1]["train_loss"]
    assert abs(got - want) <= 1e-6 * abs(want)
    for a, b in zip(compiled_model.parameters(), eager_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_train_model_that_cannot_compile_trains_eager_with_one_message(monkeypatch, caplog):
    def cannot_compile(gm, example_inputs):
        raise RuntimeError("no C++ compiler for this graph")

    monkeypatch.setattr(
        train_module, "compile_model", lambda m: torch.compile(m, backend=cannot_compile)
    )
    candidate = _candidate()
    eager = _train(_model(candidate))
    with caplog.at_level(logging.WARNING, logger="ropenope.train"):
        fallen = _train(_model(candidate), compile=True)
    assert fallen.status == "complete" and not fallen.compiled
    assert "cannot compile this model" in fallen.compile_error
    assert "no C++ compiler for this graph" in fallen.compile_error
    messages = [r.getMessage() for r in caplog.records if r.name == "ropenope.train"]
    assert messages == [fallen.compile_error]  # one line, once
    assert [h["train_loss"] for h in fallen.history] == [h["train_loss"] for h in eager.history]


def test_train_eager_error_is_raised_not_hidden_by_the_fallback(monkeypatch):
    class Broken(HybridTransformer):
        def forward(self, idx, **kw):
            raise ValueError("a bug in the model")

    candidate = _candidate()
    torch.manual_seed(0)
    model = Broken(candidate.shape, candidate.layers)
    monkeypatch.setattr(train_module, "compile_model", lambda m: torch.compile(m, backend="eager"))
    with pytest.raises(ValueError, match="a bug in the model"):
        _train(model, compile=True)


def test_train_activation_checkpointing_recomputes_the_same_gradients():
    candidate = _candidate()
    plain = _model(candidate)
    _, want = _grads(plain)
    recomputed = _model(candidate)
    recomputed.activation_checkpointing = True
    _, got = _grads(recomputed)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    a, b = _model(candidate), _model(candidate)
    one, two = _train(a), _train(b, activation_checkpointing=True)
    assert [h["train_loss"] for h in one.history] == pytest.approx(
        [h["train_loss"] for h in two.history], rel=1e-6
    )


def test_train_micro_batches_accumulate_to_the_whole_batch():
    candidate = _candidate()
    a, b = _model(candidate), _model(candidate)
    whole, micro = _train(a, steps=3), _train(b, steps=3, micro_batch_size=3)  # rows 3 + 1
    assert [h["train_loss"] for h in micro.history] == pytest.approx(
        [h["train_loss"] for h in whole.history], rel=1e-6
    )
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_schema_speed_and_scale_keys_leave_existing_dumps_alone(tmp_path):
    plain = load_config(tiny_config_file(tmp_path / "plain.yaml"))
    assert not {"precision", "activation_checkpointing", "parallel", "micro_batch_size"} & set(
        plain.model_dump()["train"]
    )
    assert not {"workers_per_trial", "placement"} & set(plain.model_dump()["resources"])
    assert plain.train.precision == "auto" and plain.resources.workers_per_trial == 1

    fast = load_config(
        tiny_config_file(
            tmp_path / "fast.yaml",
            train={
                "precision": "bf16",
                "parallel": "fsdp",
                "micro_batch_size": 2,
                "activation_checkpointing": True,
            },
            resources={"workers_per_trial": 2, "placement": "spread"},
        )
    )
    dump = fast.model_dump()
    assert dump["train"]["precision"] == "bf16" and dump["train"]["parallel"] == "fsdp"
    assert (
        dump["resources"]["workers_per_trial"] == 2 and dump["resources"]["placement"] == "spread"
    )


def test_schema_each_worker_needs_a_row_of_every_stage(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(
            tiny_config_file(
                tmp_path / "s.yaml",
                train={
                    "batch_size": 8,
                    "steps": None,
                    "stages": [{"steps": 5}, {"steps": 5, "batch_size": 2}],
                },
                resources={"workers_per_trial": 4},
            )
        )
    (problem,) = [p for p in err.value.problems if p[0] == "resources.workers_per_trial"]
    assert "(train.stages[1].batch_size)" in problem[1]
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(tiny_config_file(tmp_path / "p.yaml", train={"precision": "fp16"}))
