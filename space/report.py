"""What `ropenope space` prints: searched and fixed knobs, the training stages, and each
preset's layers (per stage when a later stage changes them)."""

from __future__ import annotations

from typing import Any

from space.errors import ConfigError, InvalidCandidate
from space.expand import Candidate
from space.ladder import apply_rung
from space.layers import LayerSpec
from space.presets import BUILTIN_PRESETS
from space.schema import SweepConfig


def layer_row(layer: LayerSpec) -> dict[str, Any]:
    """One layer for `ropenope space --json`: every field, defaults included."""
    return {
        **{k: v for k, v in layer.to_dict().items() if k != "temperature"},
        "temperature": layer.temperature is not None,
        "window_kind": layer.window_kind.value,
        "attention_sink": layer.attention_sink.value,
        "rope_fraction": layer.rope_fraction,
        "rope_scaling": None if layer.rope_scaling is None else layer.rope_scaling.to_dict(),
        "rope_type": layer.rope_type.value,
        "output_gate": layer.output_gate.value,
        "mixer": layer.mixer.value,
    }


def _preset_entry(cand: Candidate) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": cand.id,
        "name": cand.name,
        "knobs": cand.knobs,
        "layers": [layer_row(layer) for layer in cand.layers],
        "rope_scaling_at_eval": cand.scaled_at_eval(),
    }
    if cand.multi_stage:
        entry["stages"] = [
            {**stage.plan.to_dict(), "layers": [layer_row(layer) for layer in stage.layers]}
            for stage in cand.stages
        ]
    return entry


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
        presets[name] = _preset_entry(cand)
    return {
        "study": config.study.name,
        "source": config.source,
        "searched": {k: v.to_dict() for k, v in config.searched.items()},
        "fixed": {k: v.to_dict()["value"] for k, v in config.fixed.items()},
        "conditions": {k: dict(v.to_dict()["when"]) for k, v in config.space.items() if v.when},
        "model": config.model.model_dump(),
        "vocab_size": config.base_shape().vocab_size,
        "tasks": list(config.score.families),
        "stages": [plan.to_dict() for plan in config.train.stage_plans()],
        "parametrization": config.model.parametrization,
        "lr_search": _lr_search(config),
        "objectives": [o.model_dump() for o in config.study.objectives],
        "presets": presets,
        "warnings": [{"path": p, "message": m} for p, m in config.warnings],
        "hypotheses_from": config.hypotheses_from,
        "hypotheses": [h.to_dict() for h in config.hypotheses],
    }


def _lr_search(config: SweepConfig) -> dict[str, Any] | None:
    """``train.lr_search`` with the pilot length it implies, or None."""
    search = config.train.lr_search
    if search is None:
        return None
    return {
        "values": list(search.values),
        "pilot_steps": search.pilot_steps(config.train.total_steps),
    }


def describe_training(config: SweepConfig) -> list[str]:
    """Lines on the parametrization and the learning-rate search, when the file sets them."""
    out = []
    m = config.model
    if m.parametrization == "mup":
        out.append(
            f"parametrization: mup, base d_model {m.base_d_model} "
            f"(width multiplier {m.d_model / (m.base_d_model or m.d_model):g}): an lr tuned at "
            "the base width holds at this one"
        )
    search = _lr_search(config)
    if search is not None:
        values = ", ".join(f"{v:g}" for v in search["values"])
        out.append(
            f"lr search: pilots of {search['pilot_steps']} steps at lr {values} on each "
            "candidate's first seed (train.seed); the seeds train at the lowest final val_bpb"
        )
    return out


def describe_data(config: SweepConfig) -> str:
    """One line: the corpus, the tokenizer and model vocabulary, the scored task families."""
    d, s = config.data, config.score
    tok = d.tokenizer
    if tok.bpe is not None:
        tokenizer = f"bpe {tok.bpe.vocab_size}"
    elif tok.file is not None:
        tokenizer = f"file {tok.file}"
    elif d.vocab_size is not None:
        tokenizer = f"pre-tokenized ids < {d.vocab_size}"
    else:
        tokenizer = "bytes"
    tasks = ", ".join(s.families) or "none"
    headline = f" (long_acc over {', '.join(s.headline_tasks)})" if s.families else ""
    if s.held_out and s.families:
        headline += f" (held out, never trained: {', '.join(s.held_out)})"
    return (
        f"data: {d.source or 'python stdlib'}, tokenizer {tokenizer} "
        f"(model vocabulary {config.base_shape().vocab_size}); tasks: {tasks}{headline}"
    )


def _scaling_text(scaling: dict[str, Any] | None) -> str:
    if scaling is None:
        return "-"
    text = f"{scaling['kind']} x{scaling['factor']:g}"
    if "original_tokens" in scaling:
        text += f" from {scaling['original_tokens']}"
    return text


def _layer_table(layers: list[dict[str, Any]]) -> list[str]:
    """The layer table; the newer columns only when some layer uses them."""
    show_rot = any(x["rope_fraction"] != 1.0 for x in layers)
    show_scaling = any(x["rope_scaling"] is not None for x in layers)
    show_sink = any(x["attention_sink"] != "none" for x in layers)
    show_gate = any(x["output_gate"] != "none" for x in layers)
    show_mixer = any(x["mixer"] != "softmax" for x in layers)
    head = f"  {'layer':>5}  {'kind':<6}  {'position':<8}  {'rope_base':>9}  {'window':>9}  "
    head += f"{'qk_norm':<9}"
    head += f"  {'rot':>4}  {'rope_type':<12}" if show_rot else ""
    head += f"  {'rope_scaling':<20}" if show_scaling else ""
    head += "  sink   " if show_sink else ""
    head += f"  {'gate':<11}" if show_gate else ""
    head += f"  {'mixer':<14}" if show_mixer else ""
    out = [head.rstrip()]
    for layer in layers:
        base = "-" if layer["rope_base"] is None else f"{layer['rope_base']:g}"
        window = "full" if layer["window"] is None else str(layer["window"])
        if layer["window"] is not None and layer["window_kind"] == "chunked":
            window = f"chunk {window}"
        row = (
            f"  {layer['index']:>5}  {layer['kind']:<6}  {layer['position']:<8}  {base:>9}  "
            f"{window:>9}  {layer['qk_norm']:<9}"
        )
        if show_rot:
            row += f"  {layer['rope_fraction']:>4g}  {layer['rope_type']:<12}"
        if show_scaling:
            row += f"  {_scaling_text(layer['rope_scaling']):<20}"
        if show_sink:
            row += f"  {layer['attention_sink']:<7}"
        if show_gate:
            row += f"  {layer['output_gate']:<11}"
        if show_mixer:
            row += f"  {layer['mixer']:<14}"
        if layer["temperature"]:
            row += "  +temperature"
        out.append(row.rstrip())
    return out


def _ladder_lines(config: SweepConfig) -> list[str]:
    """The scale ladder: each rung as it trains (rung 0 is the model and train above)."""
    ladder = config.ladder
    if ladder is None:
        return []
    p = ladder.promote
    out = [f"ladder: {len(ladder.rungs)} rungs, promote the top {p.top_k} by {p.by} (and "
           "every candidate a hypothesis compares)"]  # fmt: skip
    for rung in range(len(ladder.rungs)):
        at = apply_rung(config, rung)
        m, t = at.model, at.train
        knobs = ", ".join(f"{k}={v}" for k, v in ladder.rungs[rung].knobs.items())
        out.append(
            f"  rung {rung}: {m.layers} layers, d_model {m.d_model}, {m.heads} heads, mlp "
            f"{m.mlp_hidden}; T={t.seq_len}, {t.total_steps} steps, batch {t.batch_size}; "
            f"{at.study.repeats} seed(s)" + (f"; knobs {knobs}" if knobs else "")
        )
    return out


def format_space(config: SweepConfig) -> str:
    """Human-readable tables for the terminal."""
    desc = describe_space(config)
    out = [f"study {config.study.name}  ({config.source})"]
    m = config.model
    out.append(
        f"model: {m.layers} layers, d_model {m.d_model}, {m.heads} heads, mlp {m.mlp_hidden}; "
        f"train T={config.train.seq_len}, {config.train.total_steps} steps"
    )
    out.append(describe_data(config))
    out.extend(describe_training(config))
    if config.train.stages:
        for i, plan in enumerate(config.train.stage_plans(), start=1):
            knobs = ", ".join(f"{k}={v}" for k, v in plan.knobs.items())
            out.append(
                f"  stage {i}: {plan.steps} steps at T={plan.seq_len}, batch {plan.batch_size}, "
                f"lr {plan.lr:g} (warmup {plan.warmup_steps}, min ratio {plan.min_lr_ratio:g})"
                + (f"; knobs {knobs}" if knobs else "")
            )
    out += _ladder_lines(config)
    out.append(
        "objectives: " + ", ".join(f"{o.direction} {o.metric}" for o in config.study.objectives)
    )
    out.append("")
    out.append("searched knobs:" if config.searched else "searched knobs: (none)")
    for name, spec in config.searched.items():
        out.append(f"  {name:<30} {spec.describe()}")
    out.append("fixed knobs:" if config.fixed else "fixed knobs: (none, defaults apply)")
    for name, spec in config.fixed.items():
        out.append(f"  {name:<30} {spec.describe()}")
    for name, info in desc["presets"].items():
        out.append("")
        if info.get("error"):
            out.append(f"preset {name}: impossible with this model: {info['error']}")
            continue
        out.append(f"preset {name}: {info['name']}  [id {info['id']}]")
        stages = info.get("stages")
        if not stages:
            out.extend(_layer_table(info["layers"]))
        else:
            previous = None
            for i, stage in enumerate(stages, start=1):
                if stage["layers"] == previous:
                    out.append(f"  stage {i}: layers as in stage {i - 1}")
                    continue
                out.append(f"  stage {i}:")
                out.extend("  " + row for row in _layer_table(stage["layers"]))
                previous = stage["layers"]
        scaled = info.get("rope_scaling_at_eval")
        if scaled:
            out.append(
                f"  scored with RoPE scaling {_scaling_text(scaled['scaling'])} on layers "
                f"{', '.join(map(str, scaled['layers']))}"
            )
    if config.hypotheses:
        source = f" (from {config.hypotheses_from})" if config.hypotheses_from else ""
        out += ["", f"hypotheses{source}:"]
        for h in config.hypotheses:
            out.append(f"  {h.name}: {h.statement}")
            if len(h.measures) > 1:
                how = "one measure suffices" if h.combine == "any" else "every measure must hold"
                out.append(f"    combine: {h.combine} ({how})")
            for m in h.measures:
                label = f"{m.label}: " if m.label else ""
                out.append(f"    {label}a = {m.a.describe()}; b = {m.b.describe()}")
                gate = m.effective_gate()
                gated = ""
                if gate is not None:
                    gated = (
                        f"; invalid unless each side has {gate.score} >= {gate.min:g} on "
                        f"{gate.share:.0%} of its seeds"
                    )
                    if gate.runs == "passing":
                        gated += ", then only its passing runs"
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
