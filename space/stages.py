"""Training stages: the plan one trial trains through, and which knobs a later stage may change.

A stage is a run of optimizer steps with its own sequence length, learning-rate schedule and
task mix (``train.stages`` in a sweep file; without it the train section is one stage). A
later stage may also override knobs: the paper's RoPE baseline is pretrained short, then
trained long with a larger ``global_rope_base``; production models add a ``rope_scaling`` in
their long stage. Overrides accumulate: stage 3 keeps what stage 2 changed unless it changes
it again. The first stage trains the candidate's own knobs and overrides none.

The weights carry over from stage to stage, so an override may change how a layer attends
(bases, windows, scaling, NoPE vs RoPE) but never what parameters it has:
:func:`parameter_layout` is what must stay equal.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from space.layers import LayerKind, LayerPlacement, global_layer_indices

# Knobs that change parameter shapes whatever else is set: never overridable by a stage.
SHAPE_KNOBS = (
    "kv_heads",
    "deltanet_heads",
    "deltanet_value_heads",
    "deltanet_head_dim",
    "deltanet_conv_tokens",
)
# Knobs that decide which layers carry QK-norm weights or sink logits.
LAYOUT_KNOBS = (
    "global_every",
    "layout",
    "qk_norm",
    "qk_norm_layers",
    "attention_sink",
    "attention_sink_layers",
    "output_gate",
    "output_gate_layers",
    "local_mixer",
)


@dataclass(frozen=True)
class StagePlan:
    """One training stage with every setting resolved (the train section fills the gaps)."""

    steps: int
    seq_len: int
    batch_size: int
    lr: float
    warmup_steps: int
    min_lr_ratio: float
    task_mix: dict[str, float]
    lm_fraction: float
    knobs: dict[str, Any] = field(default_factory=dict)  # this stage's own overrides

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "warmup_steps": self.warmup_steps,
            "min_lr_ratio": self.min_lr_ratio,
            "task_mix": dict(sorted(self.task_mix.items())),
            "lm_fraction": self.lm_fraction,
            "knobs": dict(sorted(self.knobs.items())),
        }


def seq_len_at(stages: Sequence[StagePlan], step: int) -> int:
    """The sequence length training used at optimizer step ``step`` (1-based, as checkpoints
    count): the stage whose steps contain it; past the last stage, the last stage's."""
    end = 0
    for plan in stages:
        end += plan.steps
        if step <= end:
            return plan.seq_len
    return stages[-1].seq_len


def stage_knobs(base: Mapping[str, Any], stages: Sequence[StagePlan], index: int) -> dict[str, Any]:
    """The knobs in force in stage ``index``: ``base`` plus every override up to it."""
    out = dict(base)
    for stage in stages[: index + 1]:
        out.update(stage.knobs)
    return out


def eval_steps(stages: Sequence[StagePlan], eval_every: int) -> tuple[int, ...]:
    """Global optimizer steps after which training evaluates: every ``eval_every`` steps and at
    the end of each stage (steps count on across stages)."""
    total = sum(s.steps for s in stages)
    ends = set(itertools.accumulate(s.steps for s in stages))
    return tuple(sorted(set(range(eval_every, total + 1, eval_every)) | ends))


def parameter_layout(knobs: Mapping[str, Any], n_layers: int) -> tuple[tuple[bool, bool, str], ...]:
    """Per layer (QK-norm weights?, sink logits?, output gate) from resolved knobs, without
    building layers.

    The same answer as ``LayerSpec.parameter_layout`` of the expanded layers; cheap enough to
    check every combination a search space allows.
    """
    globals_ = set(
        global_layer_indices(n_layers, int(knobs["global_every"] or 0), knobs.get("layout"))
    )
    qk = knobs["qk_norm"] != "none"
    qk_where = LayerPlacement(knobs["qk_norm_layers"])
    sink = knobs["attention_sink"] != "none"
    sink_where = LayerPlacement(knobs["attention_sink_layers"])
    gate = knobs.get("output_gate", "none")
    gate_where = LayerPlacement(knobs.get("output_gate_layers", "all"))
    local_mixer = knobs.get("local_mixer", "softmax")
    out = []
    for i in range(n_layers):
        kind = LayerKind.GLOBAL if i in globals_ else LayerKind.LOCAL
        mixer = local_mixer if kind is LayerKind.LOCAL else "softmax"
        softmax = mixer == "softmax"
        out.append(
            (
                softmax and qk and qk_where.covers(kind),
                softmax and sink and sink_where.covers(kind),
                gate if softmax and gate_where.covers(kind) else "none",
                mixer,
            )
        )
    return tuple(out)


def layout_changes(
    base: Mapping[str, Any], overrides: Mapping[str, Any], n_layers: int
) -> list[str]:
    """Which override keys (alone) change the parameter layout of ``base``; ``["*"]`` when only
    their combination does; ``[]`` when the layout is kept."""
    before = parameter_layout(base, n_layers)
    if parameter_layout({**base, **overrides}, n_layers) == before:
        return []
    alone = [
        key
        for key in overrides
        if key in LAYOUT_KNOBS
        and parameter_layout({**base, key: overrides[key]}, n_layers) != before
    ]
    return alone or ["*"]


def describe_layout_change(
    base: Mapping[str, Any], overrides: Mapping[str, Any], n_layers: int
) -> str:
    """For the error: which layers would gain or lose which weights."""
    before = parameter_layout(base, n_layers)
    after = parameter_layout({**base, **overrides}, n_layers)
    changes: dict[str, list[int]] = {}
    for i, (old, new) in enumerate(zip(before, after, strict=True)):
        for slot, what in ((0, "QK-norm weights"), (1, "sink logits")):
            if old[slot] != new[slot]:
                verb = "gain" if new[slot] else "lose"
                changes.setdefault(f"would {verb} {what}", []).append(i)
        for slot, what in ((2, "output gate"), (3, "mixer")):
            if old[slot] != new[slot]:
                changes.setdefault(f"would change {what} {old[slot]} -> {new[slot]}", []).append(i)
    return "; ".join(
        f"layer{'s' if len(idx) > 1 else ''} {', '.join(map(str, idx))} {what}"
        for what, idx in changes.items()
    )


def layout_knob_values(
    domains: Mapping[str, tuple[Any, ...]], limit: int = 4096
) -> list[dict[str, Any]] | None:
    """Every combination of the layout knobs' possible values (``domains`` per knob), or None
    when there are more than ``limit`` (the per-candidate check then decides)."""
    names = list(domains)
    size = 1
    for name in names:
        size *= max(1, len(domains[name]))
    if size > limit:
        return None
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*domains.values())]


__all__ = [
    "LAYOUT_KNOBS",
    "SHAPE_KNOBS",
    "StagePlan",
    "describe_layout_change",
    "eval_steps",
    "layout_changes",
    "layout_knob_values",
    "parameter_layout",
    "stage_knobs",
]
