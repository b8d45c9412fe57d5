"""The model card (``README.md``) of an exported candidate: what it is, how to load it, its
layers, its scores, and the study and trial it came from."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from space.describe import describe_knobs
from space.expand import Candidate
from space.layers import (
    AttentionSink,
    LayerSpec,
    Mixer,
    OutputGate,
    Position,
    RopeScalingKind,
    WindowKind,
)
from space.names import (
    ACC_AT_T,
    KV_CACHE_BYTES,
    LONG_ACC,
    PARAMS,
    SHORT_BPB,
    TOKENS_PER_S,
    multiple_of,
)

# What each score means, for the card's table (the keys are space.names' score names).
SCORE_NOTES = {
    SHORT_BPB: "validation bits per byte at the training length (lower is better)",
    LONG_ACC: "mean needle retrieval accuracy beyond the training length",
    ACC_AT_T: "needle retrieval accuracy at the training length",
    KV_CACHE_BYTES: "KV cache at the sweep's score.kv_context_tokens of context, in bytes",
    PARAMS: "parameters (tied embedding counted once)",
    TOKENS_PER_S: "training throughput, tokens/s",
}


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says beyond the candidate itself."""

    study: str
    trial: int
    seed: int
    step: int  # optimizer steps the exported weights were trained for
    seq_len: int  # training length, tokens
    architecture: str  # the class config.json names
    remote_code: bool
    scores: Mapping[str, float]  # the exported seed's own scores
    trial_scores: Mapping[str, float] = field(default_factory=dict)  # mean over the seeds
    n_seeds: int = 1
    objectives: Sequence[tuple[str, str]] = ()  # (score, "maximize" | "minimize")
    preset: str | None = None
    mlflow_run_id: str | None = None
    tokenizer: bool = True  # the byte tokenizer is in the folder
    folder_name: str = "."


# Column headers of the layer table; the optional ones appear only when some layer uses them.
LAYER_COLUMNS = {
    "layer": "layer",
    "kind": "kind",
    "mixer": "mixer",
    "position": "position",
    "rope_base": "RoPE base",
    "window": "window",
    "qk_norm": "QK-norm",
    "output_gate": "output gate",
    "temperature": "temperature",
    "rotary": "rotary dims",
    "rope_scaling": "RoPE scaling",
    "sink": "sink",
}
_OPTIONAL_COLUMNS = ("mixer", "output_gate", "rotary", "rope_scaling", "sink")


def _scaling_cell(spec: LayerSpec) -> str | None:
    scaling = spec.rope_scaling
    if scaling is None:
        return None
    text = f"{scaling.kind.value} x{scaling.factor:g}"
    if scaling.kind is not RopeScalingKind.LINEAR:
        text += f" from {scaling.original_tokens}"
    if scaling.kind is RopeScalingKind.YARN:
        text += (
            f", beta {scaling.beta_fast:g}/{scaling.beta_slow:g}, "
            f"attention x{scaling.attention_factor:.4g}"
        )
    return text


def layer_rows(candidate: Candidate) -> list[dict[str, Any]]:
    """One row per layer the exported weights run with (the last training stage's): index,
    kind, position, RoPE base, window (``chunk`` when chunked), QK-norm, temperature, and the
    mixer, output gate, rotated dimensions, RoPE scaling and sink where any layer has them (a
    recurrent layer has no position nor QK-norm: ``-``)."""
    layers = candidate.final_layers
    head_dim = candidate.shape.head_dim
    rows = []
    for spec in layers:
        t = spec.temperature
        window = spec.window_tokens
        if window is not None and spec.window_kind is WindowKind.CHUNKED:
            window = f"chunk {window}"
        rope = spec.position is Position.ROPE
        attention = spec.mixer is Mixer.SOFTMAX
        rows.append(
            {
                "layer": spec.index,
                "kind": spec.kind.value,
                "mixer": spec.mixer.value,
                "position": spec.position.value if attention else None,
                "rope_base": spec.rope_base if rope else None,
                "window": window,
                "qk_norm": spec.qk_norm.value if attention else None,
                "output_gate": spec.output_gate.value if attention else None,
                "temperature": None if t is None else f"log, from {t.floor_tokens}, x{t.scale:g}",
                "rotary": f"{spec.rotary_dims(head_dim)} of {head_dim}" if rope else None,
                "rope_scaling": _scaling_cell(spec),
                "sink": "learned" if spec.attention_sink is AttentionSink.LEARNED else None,
            }
        )
    used = {
        "mixer": any(s.mixer is not Mixer.SOFTMAX for s in layers),
        "output_gate": any(s.output_gate is not OutputGate.NONE for s in layers),
        "rotary": any(s.rope_fraction != 1.0 for s in layers),
        "rope_scaling": any(s.rope_scaling is not None for s in layers),
        "sink": any(s.attention_sink is AttentionSink.LEARNED for s in layers),
    }
    for row in rows:
        for column in _OPTIONAL_COLUMNS:
            if not used[column]:
                del row[column]
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _score_order(name: str) -> tuple:
    fixed = [SHORT_BPB, LONG_ACC, ACC_AT_T]
    if name in fixed:
        return (0, fixed.index(name), 0)
    for i, prefix in enumerate(("acc@", "extrap_bpb@")):
        m = multiple_of(name, prefix)
        if m is not None:
            return (1 + i, m, 0)
    return (3, 0, name)


def _note(name: str) -> str:
    if name in SCORE_NOTES:
        return SCORE_NOTES[name]
    m = multiple_of(name, "acc@")
    if m is not None:
        return f"needle retrieval accuracy at {m} x the training length"
    m = multiple_of(name, "extrap_bpb@")
    if m is not None:
        return f"validation bits per byte at {m} x the training length"
    return ""


def score_table(facts: CardFacts) -> str:
    arrows = {n: "max" if d == "maximize" else "min" for n, d in facts.objectives}
    names = sorted(
        {k for k in facts.scores if k in SCORE_NOTES or multiple_of(k, "acc@") is not None}
        | {k for k in facts.scores if multiple_of(k, "extrap_bpb@") is not None}
        | set(arrows),
        key=_score_order,
    )
    header = ["score", f"seed {facts.seed}"]
    if facts.n_seeds > 1:
        header.append(f"trial (mean of {facts.n_seeds} seeds)")
    header += ["objective", "meaning"]
    rows = []
    for name in names:
        row: list[Any] = [f"`{name}`", facts.scores.get(name)]
        if facts.n_seeds > 1:
            row.append(facts.trial_scores.get(name))
        row += [arrows.get(name, ""), _note(name)]
        rows.append(row)
    return _table(header, rows)


def render_card(candidate: Candidate, facts: CardFacts) -> str:
    """The Markdown model card, with the Hugging Face metadata block on top."""
    remote = ", trust_remote_code=True" if facts.remote_code else ""
    title = f"{facts.study} trial {facts.trial}: {candidate.name}"
    if facts.preset:
        title = f"{facts.study} trial {facts.trial} ({facts.preset}): {candidate.name}"
    rows = layer_rows(candidate)
    layer_table = _table(
        [LAYER_COLUMNS[key] for key in rows[0]], [list(row.values()) for row in rows]
    )
    stages = [stage.plan for stage in candidate.stages]
    stage_note = (
        f"The weights are those after the last of {len(stages)} training stages (steps "
        f"{' + '.join(str(p.steps) for p in stages)}, sequence lengths "
        f"{' -> '.join(str(p.seq_len) for p in stages)} tokens); the table shows the layers they "
        "were last trained and scored with, which is what this folder runs."
        if candidate.multi_stage
        else ""
    )
    how = (
        f"`{facts.architecture}` from this folder's own `modeling_ropenope.py` "
        "(`trust_remote_code=True`): no stock transformers class reproduces this layout"
        if facts.remote_code
        else f"the stock transformers class `{facts.architecture}`, which reproduces it exactly"
    )
    tokenizer = (
        "The tokenizer is the byte tokenizer the model was trained with: token `b` is byte `b` "
        "of the UTF-8 text; ids 256 and up are control tokens (`<PAD>` 256, `<DOC>` 257, which "
        "begins every document, `<OPEN>` 258 and `<CLOSE>` 259 around retrieval needles). "
        "Text never turns into a control token; insert them by id, or encode a trusted "
        "string with `tokenizer(text, split_special_tokens=False)`."
        if facts.tokenizer
        else "No tokenizer is included: the study trained on pre-tokenized data; use the "
        "tokenizer that made it."
    )
    prompt = (
        'ids = [tok.bos_token_id] + tok("def main(").input_ids  # <DOC> opens a document\n'
        "out = model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False)\n"
        "print(tok.decode(out[0]))"
        if facts.tokenizer
        else "out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=40)"
    )
    provenance = _provenance(candidate, facts)
    tags = _tags(candidate.final_layers)
    return "\n".join(
        [
            "---",
            "library_name: transformers",
            "pipeline_tag: text-generation",
            "tags:",
            *[f"- {t}" for t in tags],
            "---",
            "",
            f"# {title}",
            "",
            describe_knobs(candidate.knobs, stages if candidate.multi_stage else ()),
            "",
            f"A small research model from an architecture search with ropenope: study "
            f"`{facts.study}`, trial {facts.trial}, seed {facts.seed}, trained at "
            f"{facts.seq_len} tokens. It loads as {how}; its logits were checked against the "
            "training code's model when it was exported.",
            "",
            "## Load it",
            "",
            "```python",
            "import torch",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{facts.folder_name}"{remote})',
            f'tok = AutoTokenizer.from_pretrained("{facts.folder_name}")'
            if facts.tokenizer
            else "",
            prompt,
            "```",
            "",
            tokenizer,
            "",
            "## Layers",
            "",
            layer_table,
            "",
            *([stage_note, ""] if stage_note else []),
            "## Scores",
            "",
            score_table(facts),
            "",
            "## Where it came from",
            "",
            *provenance,
            "",
        ]
    )


def _provenance(candidate: Candidate, facts: CardFacts) -> list[str]:
    """The card's "Where it came from" lines."""
    lines = [
        f"- study `{facts.study}`, trial {facts.trial}, seed {facts.seed}"
        + (f" of {facts.n_seeds}" if facts.n_seeds > 1 else ""),
        f"- candidate `{candidate.id}`: `{candidate.name}`"
        + (f" (preset `{facts.preset}`)" if facts.preset else ""),
        f"- trained {facts.step} optimizer steps at {facts.seq_len} tokens per sequence",
    ]
    if facts.mlflow_run_id:
        lines.append(f"- MLflow run `{facts.mlflow_run_id}`")
    lines.append("- `ropenope.json` in this folder holds the knobs, layers and scores")
    return lines


def _tags(layers: tuple[LayerSpec, ...]) -> list[str]:
    """The Hugging Face tags of a model with these layers."""
    tags = ["ropenope", "long-context", "hybrid-attention"]
    if any(s.position is Position.NOPE for s in layers):
        tags.append("nope")
    if any(s.window_tokens is not None and s.window_kind is WindowKind.SLIDING for s in layers):
        tags.append("sliding-window")
    if any(s.window_tokens is not None and s.window_kind is WindowKind.CHUNKED for s in layers):
        tags.append("chunked-attention")
    if any(s.attention_sink is AttentionSink.LEARNED for s in layers):
        tags.append("attention-sinks")
    return tags


__all__ = ["LAYER_COLUMNS", "CardFacts", "layer_rows", "render_card", "score_table"]
