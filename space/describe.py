"""A candidate in plain English, for reports and model cards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from space.knobs import KNOB_DEFAULTS
from space.stages import StagePlan

_WHERE = {"all": "all layers", "local": "the local layers", "global": "the global layers"}


def _base(value: Any) -> str:
    try:
        return f"base {float(value):g}"
    except (TypeError, ValueError):
        return "base ?"


def _attention(window: Any, kind: str = "sliding") -> str:
    if window is None:
        return "full causal attention"
    if kind == "chunked":
        return f"attention within {window}-token chunks"
    return f"a {window}-token sliding window"


def _rope(k: Mapping[str, Any], base_knob: str) -> str:
    text = f"RoPE ({_base(k.get(base_knob))}"
    fraction = k.get("rope_fraction", 1.0)
    kind = base_knob.split("_")[0]  # local_rope_base -> local
    if fraction not in (None, 1, 1.0) and k.get("rope_fraction_layers", "all") in ("all", kind):
        if k.get("rope_type") == "proportional":
            text += f", proportional: only the fastest {float(fraction):g} of its frequencies turn"
        else:
            text += f", on the first {float(fraction):g} of each head's dimensions"
    return text + ")"


def _scaling(k: Mapping[str, Any]) -> str:
    kind = k.get("rope_scaling")
    if kind in (None, "none"):
        return ""
    factor = k.get("rope_scaling_factor")
    factor_text = "?" if factor is None else f"{float(factor):g}"
    where = _WHERE.get(k.get("rope_scaling_layers"), str(k.get("rope_scaling_layers")))
    return f"; {kind} RoPE scaling x{factor_text} on the RoPE layers among {where}"


def describe_knobs(knobs: Mapping[str, Any], stages: Sequence[StagePlan] = ()) -> str:
    """One plain-English sentence for a candidate's resolved knobs.

    ``stages`` (the sweep's ``train.stage_plans()``) adds what each later stage trains and
    changes, so a reader sees which candidates were scored with a RoPE scaling.
    """
    k = {**KNOB_DEFAULTS, **knobs}
    every = k.get("global_every")
    if k.get("global_position") == "rope":
        global_pos = _rope(k, "global_rope_base")
    else:
        global_pos = "no positional encoding (NoPE)"
    local_attention = _attention(k.get("local_window"), k.get("local_attention", "sliding"))
    local = f"{_rope(k, 'local_rope_base')} with {local_attention}"
    if k.get("local_mixer") in ("gated_deltanet", "kda"):
        local = (
            "a Gated DeltaNet recurrent layer (Qwen3-Next; no positions, constant state"
            if k["local_mixer"] == "gated_deltanet"
            else "a Kimi Delta Attention recurrent layer (KDA, Kimi Linear: a decay per key "
            "channel; no positions, constant state"
        )
        sizes = [
            f"{k[name]} {what}"
            for name, what in (
                ("deltanet_heads", "key heads"),
                ("deltanet_value_heads", "value heads"),
                ("deltanet_head_dim", "dimensions a head"),
            )
            if k.get(name)
        ]
        conv = k.get("deltanet_conv_tokens", 4)
        local += ", " + ", ".join([*sizes, f"a {conv}-token convolution"]) + ")"
    if k.get("local_mixer") == "mamba2":
        local = (
            f"a Mamba2 state-space layer (no positions, constant state: "
            f"{k['mamba2_head_dim']}-channel heads over {k['mamba2_expand']} x d_model, "
            f"state size {k['mamba2_state_size']}, {k['mamba2_groups']} B/C "
            f"group{'s' if k['mamba2_groups'] != 1 else ''}, "
            f"a {k['mamba2_conv_tokens']}-token convolution)"
        )
    glob = f"{global_pos} with {_attention(k.get('global_window'))}"
    layout = k.get("layout")
    if layout:
        where = ", ".join(str(i) for i, letter in enumerate(layout) if letter == "G")
        parts = [f"layers {where} (from 0): {glob}"] if where else []
        if "L" in layout:
            parts.insert(0, f"the L layers: {local}")
        text = f"Layers {layout} (G global, L local): " + "; ".join(parts)
    elif every == 1:
        text = f"Every layer: {glob}"
    elif not every:
        text = f"Every layer: {local}"
    else:
        text = (
            f"{every - 1} of every {every} layers: {local}; every {_ordinal(every)} layer: {glob}"
        )
    qk = k.get("qk_norm")
    if qk and qk != "none":
        when = "before" if qk == "pre_rope" else "after"
        text += (
            f"; QK-norm (RMSNorm on queries and keys, {when} the rotation) on "
            f"{_WHERE.get(k.get('qk_norm_layers'), str(k.get('qk_norm_layers')))}"
        )
    if k.get("attention_sink") not in (None, "none"):
        where = _WHERE.get(k.get("attention_sink_layers"), str(k.get("attention_sink_layers")))
        text += f"; learned attention-sink logits on {where}"
    if k.get("output_gate") not in (None, "none"):
        where = _WHERE.get(k.get("output_gate_layers"), str(k.get("output_gate_layers")))
        article = "an" if k["output_gate"][0] in "aeiou" else "a"
        text += (
            f"; {article} {k['output_gate']} sigmoid gate on each head's attention output "
            f"on {where}"
        )
    if k.get("global_temperature") not in (None, "none"):
        text += f"; {k['global_temperature']} temperature scaling of global queries past T"
    if k.get("kv_heads"):
        text += f"; {k['kv_heads']} KV heads (grouped-query attention)"
    text += _scaling(k)
    if k.get("local_mixer", "softmax") != "softmax":  # attention options: softmax layers only
        text = text.replace("all layers", "the attention layers")
    for i, stage in enumerate(stages[1:], start=2):
        text += f"; then stage {i}: {stage.steps} steps at T={stage.seq_len}"
        if stage.knobs:
            text += " with " + ", ".join(f"{name}={_value(v)}" for name, v in stage.knobs.items())
    if stages[1:] and any(s.knobs.get("rope_scaling") not in (None, "none") for s in stages):
        text += " (the RoPE scaling is in force when the candidate is scored)"
    return text + "."


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
