"""What `ropenope space` prints: searched and fixed knobs, and each preset's layers."""

from __future__ import annotations

from typing import Any

from space.errors import ConfigError, InvalidCandidate
from space.presets import BUILTIN_PRESETS
from space.schema import SweepConfig


def describe_space(config: SweepConfig) -> dict[str, Any]:
    """JSON-able description of a validated sweep file."""
    presets: dict[str, Any] = {}
    # A file that lists no presets still shows the shipped ones it could use.
    listed = config.presets or {name: dict(knobs) for name, knobs in BUILTIN_PRESETS.items()}
    for name, knobs in listed.items():
        try:
            cand = config.candidate(knobs, path=f"presets.{name}")
        except (InvalidCandidate, ConfigError) as err:
            presets[name] = {"error": str(err), "knobs": knobs, "layers": []}
            continue
        presets[name] = {
            "id": cand.id,
            "name": cand.name,
            "knobs": cand.knobs,
            "layers": [
                {k: v for k, v in layer.to_dict().items() if k != "temperature"}
                | {"temperature": layer.temperature is not None}
                for layer in cand.layers
            ],
        }
    return {
        "study": config.study.name,
        "source": config.source,
        "searched": {k: v.to_dict() for k, v in config.searched.items()},
        "fixed": {k: v.to_dict()["value"] for k, v in config.fixed.items()},
        "conditions": {k: dict(v.to_dict()["when"]) for k, v in config.space.items() if v.when},
        "model": config.model.model_dump(),
        "objectives": [o.model_dump() for o in config.study.objectives],
        "presets": presets,
        "warnings": [{"path": p, "message": m} for p, m in config.warnings],
        "hypotheses_from": config.hypotheses_from,
        "hypotheses": [h.to_dict() for h in config.hypotheses],
    }


def format_space(config: SweepConfig) -> str:
    """Human-readable tables for the terminal."""
    desc = describe_space(config)
    out = [f"study {config.study.name}  ({config.source})"]
    m = config.model
    out.append(
        f"model: {m.layers} layers, d_model {m.d_model}, {m.heads} heads, mlp {m.mlp_hidden}; "
        f"train T={config.train.seq_len}, {config.train.total_steps} steps"
    )
    out.append(
        "objectives: " + ", ".join(f"{o.direction} {o.metric}" for o in config.study.objectives)
    )
    out.append("")
    out.append("searched knobs:" if config.searched else "searched knobs: (none)")
    for name, spec in config.searched.items():
        out.append(f"  {name:<26} {spec.describe()}")
    out.append("fixed knobs:" if config.fixed else "fixed knobs: (none, defaults apply)")
    for name, spec in config.fixed.items():
        out.append(f"  {name:<26} {spec.describe()}")
    for name, info in desc["presets"].items():
        out.append("")
        if info.get("error"):
            out.append(f"preset {name}: impossible with this model: {info['error']}")
            continue
        out.append(f"preset {name}: {info['name']}  [id {info['id']}]")
        out.append(
            f"  {'layer':>5}  {'kind':<6}  {'position':<8}  {'rope_base':>9}  {'window':>6}  qk_norm"
        )
        for layer in info["layers"]:
            base = "-" if layer["rope_base"] is None else f"{layer['rope_base']:g}"
            window = "full" if layer["window"] is None else str(layer["window"])
            temp = "  +temperature" if layer["temperature"] else ""
            out.append(
                f"  {layer['index']:>5}  {layer['kind']:<6}  {layer['position']:<8}  {base:>9}  "
                f"{window:>6}  {layer['qk_norm']}{temp}"
            )
    if config.hypotheses:
        source = f" (from {config.hypotheses_from})" if config.hypotheses_from else ""
        out += ["", f"hypotheses{source}:"]
        for h in config.hypotheses:
            out.append(f"  {h.name}: {h.statement}")
            for m in h.measures:
                label = f"{m.label}: " if m.label else ""
                out.append(f"    {label}a = {m.a.describe()}; b = {m.b.describe()}")
                gate = m.effective_gate()
                gated = f"; only runs with {gate.score} >= {gate.min:g}" if gate else ""
                out.append(f"    {m.describe()}{gated}")
    s = config.study
    if s.adaptive:
        out += [
            "",
            f"adaptive seeds: {s.repeats} per candidate, then one more per round for the "
            f"candidates of undecided hypotheses, up to {s.max_repeats} ({s.looks} looks)",
        ]
    if s.repeats_others is not None:
        if not s.adaptive:
            out += ["", f"seeds: {s.repeats} per candidate a hypothesis compares"]
        out.append(f"candidates no hypothesis compares: {s.others_repeats} seed(s) each")
    return "\n".join(out)
