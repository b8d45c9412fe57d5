"""A trained candidate as a Hugging Face checkpoint folder, checked against our own model.

``export_candidate`` writes, into a fresh folder:

- ``config.json``: the stock class that reproduces the candidate (``workers.hf.classes``), or,
  with ``remote_code=True`` for a candidate no stock class expresses, our own
  ``configuration_ropenope.py`` / ``modeling_ropenope.py`` (``workers/hf/remote``) next to the
  weights with an ``auto_map`` for ``trust_remote_code=True``;
- ``model.safetensors`` (fp32, Hugging Face Llama parameter names, the tied output head left
  to ``tie_word_embeddings``; fused for Phi3 and Qwen3-Next, reordered for Llama 4's
  interleaved RoPE, see :func:`hf_state_dict`) and ``generation_config.json``;
- the byte tokenizer (``workers.hf.tokenizer``) when the model reads bytes;
- ``README.md``: the model card the caller renders (``workers.hf.card``);
- ``ropenope.json``: where it came from (study, trial, seed, candidate, scores, the check).

A ``model.parametrization: mup`` candidate exports as the standard model with the same
logits: µP's query and read-out multipliers are folded into the weights (:func:`fold_mup`).

The model is the candidate's last training stage (:func:`served_layers`): a later stage may
raise a base, add a RoPE scaling or change a window, and the trained weights run with those.
Before the folder is put in place, it is loaded back with ``AutoModelForCausalLM`` and its
logits are compared with our model's on random tokens longer than every window, chunk,
temperature floor and RoPE scaling's original length (:func:`check_export`); a mismatch is an
error, never a silent export.
transformers is imported lazily: it is the ``[export]`` extra.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from space.expand import Candidate
from space.layers import LayerSpec, Mixer, ModelShape, Parametrization, QKNorm
from space.vocab import DOC, PAD
from space.vocab import VOCAB_SIZE as BYTE_VOCAB_SIZE
from workers.hf.classes import (
    GRANITE_HYBRID,
    LLAMA4,
    PHI3,
    QWEN3_NEXT,
    StockLayout,
    stock_layout,
)
from workers.hf.reasons import NotExpressible, unknown_layer_fields
from workers.model import HybridTransformer, mup_query_scale

INFO_NAME = "ropenope.json"  # provenance; also marks a folder as ours (safe to replace)
WEIGHTS_NAME = "model.safetensors"
REMOTE_DIR = Path(__file__).resolve().parent / "remote"
REMOTE_FILES = ("configuration_ropenope.py", "modeling_ropenope.py")
REMOTE_ARCHITECTURE = "RopenopeForCausalLM"
# The MLflow pyfunc loader of an exported folder (copied into a registered MLflow model).
PYFUNC_LOADER = REMOTE_DIR / "mlflow_pyfunc.py"
AUTO_MAP = {
    "AutoConfig": "configuration_ropenope.RopenopeConfig",
    "AutoModelForCausalLM": "modeling_ropenope.RopenopeForCausalLM",
}
# Logits of the exported model and ours must agree this closely (fp32 on CPU).
CHECK_ATOL = 1e-4
CHECK_MAX_TOKENS = 4096  # the check's sequence length never exceeds this (memory)

# our parameter names -> Hugging Face Llama-family names (no reshaping needed)
_RENAMES = {
    "embed.": "model.embed_tokens.",
    "norm.": "model.norm.",
    "attn_norm.": "input_layernorm.",
    "mlp_norm.": "post_attention_layernorm.",
    "attn.": "self_attn.",
}


class ExportError(ValueError):
    """The export cannot be done as asked; the message says why."""


class ExportMismatch(ExportError):
    """The exported folder does not reproduce our model's logits."""


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    architecture: str  # the class config.json names, e.g. "SmolLM3ForCausalLM"
    remote_code: bool  # True: load with trust_remote_code=True
    files: tuple[str, ...]
    tokenizer: bool  # a tokenizer was written
    max_abs_diff: float | None  # largest |logit difference| of the check (None: not checked)
    check_tokens: int  # sequence length of the check


def hf_state_dict(
    state: Mapping[str, Tensor],
    architecture: str | None = None,
    shape: ModelShape | None = None,
) -> dict[str, Tensor]:
    """Our ``HybridTransformer`` parameter names -> Hugging Face Llama-family names.

    The output head is the embedding (tied) and is not written: the config's
    ``tie_word_embeddings`` rebuilds it. A layer's sink logits keep their name
    (``self_attn.sinks``, as gpt-oss). For ``Phi3ForCausalLM`` the projections Phi3 fuses are
    concatenated in its order: ``qkv_proj`` = q, k, v rows; ``gate_up_proj`` = gate, up rows.
    For ``Llama4ForCausalLM`` (which needs ``shape``) the MLP is ``feed_forward`` and each
    head's q and k rows are reordered for its interleaved rotation (:func:`_interleave_for_llama4`).
    For ``Qwen3NextForCausalLM`` (which needs ``shape``) query and gate rows, and a Gated
    DeltaNet layer's projections, are fused, and the zero-centred norms written as gain minus
    one (:func:`_fuse_for_qwen3_next`).
    """
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("blocks."):
            _, index, rest = name.split(".", 2)
            for ours, theirs in _RENAMES.items():
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours) :]
                    break
            out[f"model.layers.{index}.{rest}"] = tensor
            continue
        prefix = next((p for p in ("embed.", "norm.") if name.startswith(p)), None)
        if prefix is None:
            raise ExportError(f"unexpected parameter {name!r} in the checkpoint")
        out[_RENAMES[prefix] + name[len(prefix) :]] = tensor
    if architecture == PHI3:
        out = _fuse_for_phi3(out)
    if architecture == GRANITE_HYBRID:
        out = _rename_for_granite(out)
    if architecture is None:  # the remote-code model: transformers' recurrent modules
        out = _rename_mamba(_fuse_deltanet(_rename_kda(out)))
    if architecture == QWEN3_NEXT:
        if shape is None:
            raise ValueError("the Qwen3-Next layout fuses q rows per head: pass the shape")
        out = _fuse_for_qwen3_next(out, shape)
    if architecture == LLAMA4:
        if shape is None:
            raise ValueError("the Llama4 layout reorders q/k rows per head: pass the shape")
        out = _interleave_for_llama4(out, shape)
    return out


def _interleave_for_llama4(tensors: dict[str, Tensor], shape: ModelShape) -> dict[str, Tensor]:
    """Llama 4 turns the pairs ``(2i, 2i + 1)`` of a head as one complex number, we turn
    ``(i, i + D/2)`` with the same frequency ``i``: its row ``2i`` is our row ``i`` and its row
    ``2i + 1`` our row ``i + D/2``. The same reordering of q and k leaves every score of a NoPE
    layer unchanged, so every layer is reordered alike."""
    dim = shape.head_dim
    ours_of_theirs = torch.stack([torch.arange(dim // 2), torch.arange(dim // 2) + dim // 2], 1)
    order = ours_of_theirs.flatten()  # their row r holds our row order[r]
    out = {}
    for name, tensor in tensors.items():
        heads = None
        if name.endswith("self_attn.q_proj.weight"):
            heads = shape.n_heads
        elif name.endswith("self_attn.k_proj.weight"):
            heads = shape.n_kv_heads
        if heads is not None:
            tensor = tensor.view(heads, dim, -1)[:, order].reshape(heads * dim, -1)
        out[name.replace(".mlp.", ".feed_forward.")] = tensor
    return out


def _fuse_for_qwen3_next(tensors: dict[str, Tensor], shape: ModelShape) -> dict[str, Tensor]:
    """Qwen3-Next: an attention layer's ``q_proj`` holds, head by head, our ``q_proj`` rows
    then our ``gate_proj`` rows (its query and gate); a Gated DeltaNet layer is ``linear_attn``
    with q, k, v, z fused in ``in_proj_qkvz`` and b, a in ``in_proj_ba``, both key-head group
    by group (the group's query and key rows, then its value heads' v rows and z rows; its
    value heads' b rows then a rows), and its gated norm ``norm``. Every other RMSNorm is
    zero-centred (``1 + w``): its weight is written as ours minus one."""
    dim = shape.head_dim
    out = {
        # input/post-attention, final and QK norms: 1 + w (not the Gated DeltaNet's own norm)
        name: tensor - 1.0
        if name.endswith("norm.weight") and not name.endswith("linear_attn.norm.weight")
        else tensor
        for name, tensor in _fuse_deltanet(tensors).items()
    }
    layers = sorted({k.split(".")[2] for k in tensors if k.startswith("model.layers.")}, key=int)
    for i in layers:
        pre = f"model.layers.{i}."
        if f"{pre}self_attn.gate_proj.weight" in out:
            pre += "self_attn."
            q, gate = (out.pop(f"{pre}{p}_proj.weight") for p in ("q", "gate"))
            heads = q.shape[0] // dim
            fused = torch.cat([q.view(heads, dim, -1), gate.view(heads, dim, -1)], dim=1)
            out[f"{pre}q_proj.weight"] = fused.reshape(2 * heads * dim, -1)
    return out


def _fuse_deltanet(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Gated DeltaNet layer as transformers' ``Qwen3NextGatedDeltaNet`` (Qwen3-Next's
    ``linear_attn``, also the remote-code model's): q, k, v, z fused in ``in_proj_qkvz`` and
    b, a in ``in_proj_ba``, both key-head group by group (the group's query and key rows, then
    its value heads' v rows and z rows; its value heads' b rows then a rows), and its gated
    norm ``norm`` (weight as ours). Every other tensor is kept as it is."""
    deltanet = {k.split(".")[2] for k in tensors if k.endswith("self_attn.norm_weight")}
    out: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        parts = name.split(".")
        layer = parts[2] if name.startswith("model.layers.") else None
        if layer in deltanet and parts[3] == "self_attn":
            name = name.replace(".self_attn.", ".linear_attn.")
        out[name] = tensor
    for i in sorted(deltanet, key=int):
        pre = f"model.layers.{i}.linear_attn."
        q, k, v, z, b, a = (out.pop(f"{pre}{p}_proj.weight") for p in "qkvzba")
        norm = out.pop(f"{pre}norm_weight")
        groups = q.shape[0] // norm.numel()  # key heads
        per = b.shape[0] // groups  # value heads per key head
        grouped = [x.view(groups, -1, x.shape[-1]) for x in (q, k, v, z)]
        qkvz = torch.cat(grouped, dim=1)  # (groups, 2 D + 2 per D, C)
        out[f"{pre}in_proj_qkvz.weight"] = qkvz.reshape(-1, q.shape[-1])
        ba = torch.cat([x.view(groups, per, x.shape[-1]) for x in (b, a)], dim=1)
        out[f"{pre}in_proj_ba.weight"] = ba.reshape(-1, b.shape[-1])
        out[f"{pre}norm.weight"] = norm
    return out


# Our KDA parameter names -> transformers' KimiLinearDeltaAttention's (Kimi Linear's
# ``self_attn``); the others (q/k/v/b/g_a/g_b projections, conv1d) are the same.
_KDA_RENAMES = {
    "f_a_proj.weight": "forget_gate.f_a_proj.weight",
    "f_b_proj.weight": "forget_gate.f_b_proj.weight",
    "A_log": "forget_gate.A_log",
    "dt_bias": "forget_gate.dt_bias",
    "norm_weight": "o_norm.weight",
    "out_proj.weight": "o_proj.weight",
}


def _rename_kda(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """A KDA layer as transformers' ``KimiLinearDeltaAttention`` (Kimi Linear's and the
    remote-code model's ``self_attn``): the forget gate's parameters under ``forget_gate``
    (``A_log`` shaped ``(1, 1, heads, 1)``), the gated norm ``o_norm``, the output ``o_proj``.
    Run before the Gated DeltaNet and Mamba2 renames, which know their layers by a
    ``norm_weight`` and an ``A_log`` that a KDA layer has too."""
    kda = {k.split(".")[2] for k in tensors if k.endswith("self_attn.f_a_proj.weight")}
    out = {}
    for name, tensor in tensors.items():
        parts = name.split(".")
        if name.startswith("model.layers.") and parts[2] in kda and parts[3] == "self_attn":
            rest = ".".join(parts[4:])
            rest = _KDA_RENAMES.get(rest, rest)
            if rest == "forget_gate.A_log":
                tensor = tensor.view(1, 1, -1, 1)
            name = f"model.layers.{parts[2]}.self_attn.{rest}"
        out[name] = tensor
    return out


def _rename_for_granite(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """GraniteMoeHybrid: a Mamba2 layer's mixer is ``mamba`` (parameters named as ours, which
    are transformers' Mamba2Mixer's); every layer's SwiGLU is ``shared_mlp`` with gate and up
    fused in ``input_linear`` (gate rows first) and down as ``output_linear``."""
    out = _rename_mamba(tensors)
    layers = sorted({k.split(".")[2] for k in tensors if k.startswith("model.layers.")}, key=int)
    for i in layers:
        pre = f"model.layers.{i}."
        parts = [out.pop(f"{pre}mlp.{p}_proj.weight") for p in ("gate", "up")]
        out[f"{pre}shared_mlp.input_linear.weight"] = torch.cat(parts, dim=0)
        out[f"{pre}shared_mlp.output_linear.weight"] = out.pop(f"{pre}mlp.down_proj.weight")
    return out


def _rename_mamba(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Mamba2 layer's mixer is ``mamba`` (GraniteMoeHybrid's, and the remote-code model's
    ``Mamba2Mixer``): our parameter names are that module's. A Gated DeltaNet layer, which has
    an ``A_log`` too, is already ``linear_attn`` here."""
    mamba = {k.split(".")[2] for k in tensors if k.endswith("self_attn.A_log")}
    out = {}
    for name, tensor in tensors.items():
        parts = name.split(".")
        if name.startswith("model.layers.") and parts[2] in mamba and parts[3] == "self_attn":
            name = name.replace(".self_attn.", ".mamba.")
        out[name] = tensor
    return out


def _fuse_for_phi3(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    out = dict(tensors)
    layers = sorted({k.split(".")[2] for k in tensors if k.startswith("model.layers.")}, key=int)
    for i in layers:
        pre = f"model.layers.{i}."
        parts = [out.pop(f"{pre}self_attn.{p}_proj.weight") for p in ("q", "k", "v")]
        out[f"{pre}self_attn.qkv_proj.weight"] = torch.cat(parts, dim=0)
        parts = [out.pop(f"{pre}mlp.{p}_proj.weight") for p in ("gate", "up")]
        out[f"{pre}mlp.gate_up_proj.weight"] = torch.cat(parts, dim=0)
    return out


def load_weights(checkpoint: str | Path) -> tuple[dict[str, Tensor], int]:
    """The model weights and optimizer step of a training checkpoint (``workers.train``),
    read with ``weights_only=True`` (no code in a checkpoint runs)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ExportError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and why
        raise ExportError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
    if not isinstance(state, dict) or "model" not in state:
        raise ExportError(f"{path} is not a ropenope training checkpoint (no 'model' entry)")
    return dict(state["model"]), int(state.get("step", 0))


def served_layers(candidate: Candidate) -> tuple[LayerSpec, ...]:
    """The layers the trained weights run with: those of the last training stage (a later
    stage may raise a base, add a RoPE scaling or change a window), which is what was scored
    and what is exported."""
    return candidate.final_layers


def served_knobs(candidate: Candidate) -> dict[str, Any]:
    """The knobs in force in the last training stage (for naming a refusal in the user's words)."""
    return dict(candidate.stages[-1].knobs) if candidate.stages else dict(candidate.knobs)


def build_model(candidate: Candidate, weights: Mapping[str, Tensor]) -> HybridTransformer:
    """Our model with ``weights`` loaded (strict: every parameter, nothing else), in eval, with
    the layers of the last training stage."""
    model = HybridTransformer(candidate.shape, served_layers(candidate))
    try:
        model.load_state_dict(dict(weights), strict=True)
    except RuntimeError as err:
        raise ExportError(f"the checkpoint does not fit candidate {candidate.name}: {err}") from err
    return model.eval()


def fold_mup(
    candidate: Candidate, weights: Mapping[str, Tensor]
) -> tuple[Candidate, dict[str, Tensor]]:
    """A ``model.parametrization: mup`` candidate as the standard-parametrization model with
    the same logits (no Hugging Face class has µP's multipliers): the query multiplier
    (``workers.model.mup_query_scale``) folded into each attention layer's ``q_proj`` (into
    its ``q_norm`` gain on a QK-norm layer, where a factor before the norm would be undone),
    the read-out multiplier ``1 / width_mult`` into the final norm's gain (the logits are
    linear in it; the tied embedding stays as the input needs it). A standard candidate is
    returned as it is. The export's check compares the result with the µP model itself."""
    shape = candidate.shape
    if shape.parametrization is not Parametrization.MUP:
        return candidate, dict(weights)
    out = {k: v.detach().clone() for k, v in weights.items()}
    query = mup_query_scale(shape)
    for spec in served_layers(candidate):
        if spec.mixer is not Mixer.SOFTMAX:
            continue
        where = "q_norm" if spec.qk_norm is not QKNorm.NONE else "q_proj"
        out[f"blocks.{spec.index}.attn.{where}.weight"] *= query
    out["norm.weight"] *= 1.0 / shape.width_mult
    standard = replace(shape, parametrization=Parametrization.STANDARD, base_d_model=None)
    return replace(candidate, shape=standard), out


def is_byte_vocabulary(candidate: Candidate) -> bool:
    return candidate.shape.vocab_size == BYTE_VOCAB_SIZE


def special_token_ids(candidate: Candidate) -> dict[str, int | None]:
    if is_byte_vocabulary(candidate):
        return {"bos_token_id": DOC, "eos_token_id": DOC, "pad_token_id": PAD}
    return {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}


def remote_config(candidate: Candidate, max_position_embeddings: int) -> dict[str, Any]:
    """``config.json`` fields of the remote-code model: the shape and every layer's spec."""
    s = candidate.shape
    return {
        "vocab_size": s.vocab_size,
        "hidden_size": s.d_model,
        "intermediate_size": s.mlp_hidden,
        "num_hidden_layers": s.n_layers,
        "num_attention_heads": s.n_heads,
        "num_key_value_heads": s.n_kv_heads,
        "rms_norm_eps": s.norm_eps,
        "initializer_range": s.init_std,
        "max_position_embeddings": int(max_position_embeddings),
        "layer_specs": [spec.to_dict() for spec in served_layers(candidate)],
        "tie_word_embeddings": True,
        "dtype": "float32",
        "architectures": [REMOTE_ARCHITECTURE],
        "auto_map": dict(AUTO_MAP),
        **special_token_ids(candidate),
    }


def choose_layout(
    candidate: Candidate, *, remote_code: bool, max_position_embeddings: int
) -> StockLayout | None:
    """The stock layout, or None when the remote-code model is to be written.

    Raises NotExpressible when no stock class fits and ``remote_code`` is off, or when the
    candidate has per-layer fields nothing here implements.
    """
    try:
        return stock_layout(
            candidate.shape,
            served_layers(candidate),
            served_knobs(candidate),
            max_position_embeddings=max_position_embeddings,
            special_tokens=special_token_ids(candidate),
        )
    except NotExpressible as err:
        if remote_code and err.remote_code_possible:
            return None
        raise


def check_tokens(candidate: Candidate) -> int:
    """Length of the check: past twice every window (or chunk), every temperature floor and
    every RoPE scaling's original length (where NTK starts to change the frequencies)."""
    spans = [64]
    for spec in served_layers(candidate):
        if spec.window_tokens is not None:
            spans.append(2 * spec.window_tokens + 1)
        if spec.temperature is not None:
            spans.append(2 * spec.temperature.floor_tokens + 1)
        if spec.rope_scaling is not None and spec.rope_scaling.original_tokens:
            spans.append(2 * spec.rope_scaling.original_tokens + 1)
    return min(max(spans), CHECK_MAX_TOKENS)


@torch.no_grad()
def check_export(
    folder: str | Path,
    model: HybridTransformer,
    *,
    trust_remote_code: bool,
    seq_len: int,
    atol: float = CHECK_ATOL,
    seed: int = 0,
) -> float:
    """Load ``folder`` with ``AutoModelForCausalLM`` and compare its logits with ``model``'s
    on random token ids (2 x ``seq_len``); returns the largest absolute difference and raises
    ExportMismatch above ``atol``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    extra: dict[str, Any] = {}
    if trust_remote_code:
        # Our own model refuses sequences past max_position_embeddings (the longest context
        # it was scored at); the check may run past it (twice a window), so it raises that
        # limit for this load only. Stock classes keep their config as written.
        limit = AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
        if limit.max_position_embeddings < seq_len:
            extra["max_position_embeddings"] = seq_len
    theirs = AutoModelForCausalLM.from_pretrained(
        str(folder), trust_remote_code=trust_remote_code, dtype=torch.float32, **extra
    ).eval()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, model.shape.vocab_size, (2, seq_len), generator=gen)
    want = model.float()(idx)
    got = theirs(input_ids=idx).logits.float()
    diff = float((got - want).abs().max())
    if not diff <= atol:  # also catches NaN
        raise ExportMismatch(
            f"the exported model's logits differ from ours by up to {diff:.3g} (> {atol:g}) "
            f"on {seq_len} random tokens; the folder was not written"
        )
    return diff


def _write_config(folder: Path, layout: StockLayout | None, candidate: Candidate, mpe: int) -> str:
    from transformers import AutoConfig, GenerationConfig

    if layout is not None:
        fields = {k: v for k, v in layout.config.items() if k != "model_type"}
        config = AutoConfig.for_model(layout.model_type, **fields)
        architecture = layout.architecture
    else:
        for name in REMOTE_FILES:
            shutil.copyfile(REMOTE_DIR / name, folder / name)
        from workers.hf.remote.configuration_ropenope import RopenopeConfig

        config = RopenopeConfig(**remote_config(candidate, mpe))
        architecture = REMOTE_ARCHITECTURE
    config.save_pretrained(str(folder))
    ids = special_token_ids(candidate)
    GenerationConfig(**ids).save_pretrained(str(folder))
    return architecture


def _files(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))


def file_digests(folder: Path) -> dict[str, str]:
    """``name -> sha256`` of every file of an export folder but ``ropenope.json`` (which
    records them). The MLflow loader (hf/remote/mlflow_pyfunc.py) checks them before it
    loads anything, so a changed weight, tokenizer or modeling file is refused."""
    out: dict[str, str] = {}
    for name in _files(folder):
        if name == INFO_NAME:
            continue
        digest = hashlib.sha256()
        with (folder / name).open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
        out[name] = digest.hexdigest()
    return out


def _prepare_destination(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / INFO_NAME).is_file():
        raise ExportError(
            f"{out_dir} is not empty and holds no earlier export ({INFO_NAME}); choose another "
            "--out or empty it"
        )


def export_candidate(
    candidate: Candidate,
    weights: Mapping[str, Tensor],
    out_dir: str | Path,
    *,
    max_position_embeddings: int,
    card: str,
    info: Mapping[str, Any] | None = None,
    remote_code: bool = False,
    check: bool = True,
) -> ExportResult:
    """Write the Hugging Face folder for ``candidate`` with ``weights`` (our parameter names).

    The folder is built next to ``out_dir``, checked, then moved into place, replacing an
    earlier export there (a folder with ``ropenope.json``); any other non-empty folder is
    refused. Raises NotExpressible (no stock class, and ``remote_code`` off), ExportError,
    ExportMismatch.
    """
    out_dir = Path(out_dir).resolve()
    _prepare_destination(out_dir)
    unknown = unknown_layer_fields(served_layers(candidate))
    if unknown:
        raise NotExpressible(unknown, remote_code_possible=False)
    model = build_model(candidate, weights)  # also checks the weights fit the candidate
    trained = candidate  # what the record names; the folder holds its standard equivalent
    candidate, weights = fold_mup(candidate, weights)
    layout = choose_layout(
        candidate, remote_code=remote_code, max_position_embeddings=max_position_embeddings
    )

    from safetensors.torch import save_file

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        architecture = _write_config(staging, layout, candidate, max_position_embeddings)
        tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in weights.items()}
        stock = layout.architecture if layout is not None else None
        hf_tensors = hf_state_dict(tensors, stock, candidate.shape)
        save_file(hf_tensors, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        tokenizer = is_byte_vocabulary(candidate)
        if tokenizer:
            from workers.hf.tokenizer import save_byte_tokenizer

            save_byte_tokenizer(staging, max_length=max_position_embeddings)
        (staging / "README.md").write_text(card)
        n_check = check_tokens(candidate)
        diff = (
            check_export(staging, model, trust_remote_code=layout is None, seq_len=n_check)
            if check
            else None
        )
        files = (*_files(staging), INFO_NAME)
        record = {
            **dict(info or {}),
            # µP's multipliers live in the weights (fold_mup): the folder is a standard model
            **({"folded": "model.parametrization: mup"} if trained is not candidate else {}),
            "architecture": architecture,
            "remote_code": layout is None,
            "candidate": trained.to_dict(),
            "check": {"max_abs_diff": diff, "tokens": n_check, "atol": CHECK_ATOL}
            if check
            else None,
            "files": list(files),
            "sha256": file_digests(staging),
        }
        (staging / INFO_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
        _swap_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(
        out_dir=out_dir,
        architecture=architecture,
        remote_code=layout is None,
        files=files,
        tokenizer=tokenizer,
        max_abs_diff=diff,
        check_tokens=n_check,
    )


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` (absent, empty, or an earlier export) by ``staging``."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "CHECK_ATOL",
    "INFO_NAME",
    "PYFUNC_LOADER",
    "ExportError",
    "ExportMismatch",
    "ExportResult",
    "build_model",
    "check_export",
    "check_tokens",
    "choose_layout",
    "export_candidate",
    "hf_state_dict",
    "is_byte_vocabulary",
    "load_weights",
    "remote_config",
    "served_knobs",
    "served_layers",
]
