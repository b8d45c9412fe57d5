"""A candidate in plain English, for reports and model cards."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from space.knobs import KNOB_DEFAULTS


def _base(value: Any) -> str:
    try:
        return f"base {float(value):g}"
    except (TypeError, ValueError):
        return "base ?"


def _attention(window: Any) -> str:
    return "full causal attention" if window is None else f"a {window}-token sliding window"


def describe_knobs(knobs: Mapping[str, Any]) -> str:
    """One plain-English sentence for a candidate's resolved knobs."""
    k = {**KNOB_DEFAULTS, **knobs}
    every = k.get("global_every")
    if k.get("global_position") == "rope":
        global_pos = f"RoPE ({_base(k.get('global_rope_base'))})"
    else:
        global_pos = "no positional encoding (NoPE)"
    local = f"RoPE ({_base(k.get('local_rope_base'))}) with {_attention(k.get('local_window'))}"
    glob = f"{global_pos} with {_attention(k.get('global_window'))}"
    if every == 1:
        text = f"Every layer: {glob}"
    elif not every:
        text = f"Every layer: {local}"
    else:
        text = (
            f"{every - 1} of every {every} layers: {local}; every {_ordinal(every)} layer: {glob}"
        )
    qk = k.get("qk_norm")
    if qk and qk != "none":
        where = {"all": "all layers", "local": "the local layers", "global": "the global layers"}
        when = "before" if qk == "pre_rope" else "after"
        text += (
            f"; QK-norm (RMSNorm on queries and keys, {when} the rotation) on "
            f"{where.get(k.get('qk_norm_layers'), str(k.get('qk_norm_layers')))}"
        )
    if k.get("global_temperature") not in (None, "none"):
        text += f"; {k['global_temperature']} temperature scaling of global queries past T"
    if k.get("kv_heads"):
        text += f"; {k['kv_heads']} KV heads (grouped-query attention)"
    return text + "."


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
