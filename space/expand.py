"""Knobs -> per-layer specs. The only place where ratios and offsets become layers.

Global layers are the 0-based indices ``k-1, 2k-1, ...`` for ``global_every: k``
(Hugging Face Cohere2 / Llama 4 convention): ``k = 1`` makes every layer global,
``k = 0`` makes none global.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from space.errors import ConfigError, InvalidCandidate
from space.knobs import KNOB_DEFAULTS, KNOB_NAMES, check_value
from space.layers import (
    LayerKind,
    LayerSpec,
    ModelShape,
    Position,
    QKNorm,
    QKNormLayers,
    Temperature,
)


def global_layer_indices(n_layers: int, global_every: int) -> tuple[int, ...]:
    """0-based indices of the global layers: k-1, 2k-1, ... (empty for k = 0)."""
    if global_every == 0:
        return ()
    return tuple(range(global_every - 1, n_layers, global_every))


def resolve_knobs(knobs: Mapping[str, Any], path: str = "knobs") -> dict[str, Any]:
    """Defaults overlaid with ``knobs``; every value validated. Raises ConfigError."""
    unknown = sorted(set(knobs) - set(KNOB_NAMES))
    if unknown:
        raise ConfigError.at(
            f"{path}.{unknown[0]}", f"unknown knob; expected one of {list(KNOB_NAMES)}"
        )
    out = dict(KNOB_DEFAULTS)
    for name, value in knobs.items():
        out[name] = check_value(name, value, f"{path}.{name}")
    return out


def expand_layers(
    knobs: Mapping[str, Any], shape: ModelShape, train_seq_len: int
) -> tuple[LayerSpec, ...]:
    """Expand resolved knobs into one LayerSpec per layer. Raises InvalidCandidate."""
    k = knobs["global_every"]
    if k > shape.n_layers:
        raise InvalidCandidate(
            f"global_every={k} > layers={shape.n_layers}: no layer would be global"
        )
    if knobs["global_temperature"] != "none" and knobs["global_position"] != "nope":
        raise InvalidCandidate(
            "global_temperature scales NoPE queries; it needs global_position: nope"
        )
    globals_ = set(global_layer_indices(shape.n_layers, k))
    qk_norm = QKNorm(knobs["qk_norm"])
    qk_where = QKNormLayers(knobs["qk_norm_layers"])
    temperature = None
    if knobs["global_temperature"] == "log":
        floor = knobs["global_temperature_floor"] or train_seq_len
        temperature = Temperature(
            floor_tokens=int(floor), scale=float(knobs["global_temperature_scale"])
        )

    layers = []
    for i in range(shape.n_layers):
        kind = LayerKind.GLOBAL if i in globals_ else LayerKind.LOCAL
        if kind is LayerKind.GLOBAL:
            position = Position(knobs["global_position"])
            base = knobs["global_rope_base"] if position is Position.ROPE else None
            window = knobs["global_window"]
            temp = temperature
        else:
            position, base, window, temp = (
                Position.ROPE,
                knobs["local_rope_base"],
                knobs["local_window"],
                None,
            )
        norm_here = qk_where is QKNormLayers.ALL or qk_where.value == kind.value
        layers.append(
            LayerSpec(
                index=i,
                kind=kind,
                position=position,
                rope_base=None if base is None else float(base),
                window_tokens=window,
                qk_norm=qk_norm if norm_here else QKNorm.NONE,
                temperature=temp,
            )
        )
    return tuple(layers)


def check_shape(shape: ModelShape) -> None:
    if shape.d_model % shape.n_heads:
        raise InvalidCandidate(f"heads={shape.n_heads} does not divide d_model={shape.d_model}")
    if shape.n_heads % shape.n_kv_heads:
        raise InvalidCandidate(f"kv_heads={shape.n_kv_heads} does not divide heads={shape.n_heads}")
    if shape.head_dim % 2:
        raise InvalidCandidate(f"head_dim={shape.head_dim} must be even for RoPE")


@dataclass(frozen=True)
class Candidate:
    """One concrete architecture: resolved knobs, the model size and its layers."""

    knobs: dict[str, Any]
    shape: ModelShape
    layers: tuple[LayerSpec, ...]

    def canonical(self) -> dict[str, Any]:
        """What makes two candidates the same model (knobs that do not change a layer do not count)."""
        return {
            "shape": {
                "n_layers": self.shape.n_layers,
                "d_model": self.shape.d_model,
                "n_heads": self.shape.n_heads,
                "n_kv_heads": self.shape.n_kv_heads,
                "mlp_hidden": self.shape.mlp_hidden,
                "vocab_size": self.shape.vocab_size,
                "init_std": self.shape.init_std,
                "norm_eps": self.shape.norm_eps,
            },
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @property
    def id(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return candidate_name(self.shape, self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "knobs": dict(self.knobs), **self.canonical()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        """The inverse of :meth:`to_dict` (how a candidate crosses to a trial process:
        validated once by the driver, never re-expanded). Refuses a dict whose id does
        not match its content."""
        candidate = cls(
            knobs=dict(d["knobs"]),
            shape=ModelShape(**d["shape"]),
            layers=tuple(LayerSpec.from_dict(layer) for layer in d["layers"]),
        )
        if "id" in d and d["id"] != candidate.id:
            raise ValueError(f"candidate {d['id']} does not match its layers ({candidate.id})")
        return candidate


def _base(value: float) -> str:
    exp = math.log10(value)
    return f"1e{int(exp)}" if exp.is_integer() else f"{value:g}"


def _attn(spec: LayerSpec) -> str:
    pos = "nope" if spec.position is Position.NOPE else f"rope{_base(spec.rope_base)}"
    win = f" swa{spec.window_tokens}" if spec.window_tokens is not None else ""
    temp = " temp" if spec.temperature is not None else ""
    return pos + win + temp


def candidate_name(shape: ModelShape, layers: tuple[LayerSpec, ...]) -> str:
    """Readable name, e.g. ``L4 3:1 rope1e4 swa32/nope qk:none``."""
    n_global = sum(layer.kind is LayerKind.GLOBAL for layer in layers)
    n_local = len(layers) - n_global
    local = next((layer for layer in layers if layer.kind is LayerKind.LOCAL), None)
    glob = next((layer for layer in layers if layer.kind is LayerKind.GLOBAL), None)
    if local is None:
        parts = ["global", _attn(glob)]
    elif glob is None:
        parts = ["local", _attn(local)]
    else:
        ratio = f"{n_local // n_global}:1" if n_local % n_global == 0 else f"{n_local}:{n_global}"
        parts = [ratio, f"{_attn(local)}/{_attn(glob)}"]
    norms = {layer.qk_norm for layer in layers} - {QKNorm.NONE}
    if not norms:
        qk = "qk:none"
    else:
        normed = {layer.kind for layer in layers if layer.qk_norm is not QKNorm.NONE}
        where = (
            "" if len(normed) == 2 or n_global == 0 or n_local == 0 else f"@{normed.pop().value}"
        )
        qk = f"qk:{norms.pop().value}{where}"
    kv = f" kv{shape.n_kv_heads}" if shape.n_kv_heads != shape.n_heads else ""
    return f"L{shape.n_layers} {' '.join(parts)} {qk}{kv}"


def build_candidate(
    knobs: Mapping[str, Any], base_shape: ModelShape, train_seq_len: int, path: str = "knobs"
) -> Candidate:
    """Resolve knobs, apply ``kv_heads`` to the shape, expand the layers.

    Raises ConfigError for a malformed knob value and InvalidCandidate for a
    well-formed but impossible combination.
    """
    resolved = resolve_knobs(knobs, path)
    kv_heads = resolved["kv_heads"] or base_shape.n_heads
    shape = ModelShape(
        n_layers=base_shape.n_layers,
        d_model=base_shape.d_model,
        n_heads=base_shape.n_heads,
        n_kv_heads=kv_heads,
        mlp_hidden=base_shape.mlp_hidden,
        vocab_size=base_shape.vocab_size,
        init_std=base_shape.init_std,
        norm_eps=base_shape.norm_eps,
    )
    check_shape(shape)
    layers = expand_layers(resolved, shape, train_seq_len)
    return Candidate(knobs=resolved, shape=shape, layers=layers)
