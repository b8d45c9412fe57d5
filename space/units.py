"""How quantities are shown to a person: bytes in binary units (KiB, MiB, GiB), the one
spelling every table, note, verdict and plot axis uses."""

from __future__ import annotations

import math

_BINARY_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def human_bytes(n: float) -> str:
    """``2_500_000`` -> ``"2.38 MiB"`` (three significant digits); ``"-"`` for NaN/inf."""
    if not math.isfinite(n):
        return "-"
    for unit, size in _BINARY_UNITS:
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def is_bytes_score(name: str) -> bool:
    """Scores counted in bytes (``kv_cache_bytes``...) are shown with :func:`human_bytes`."""
    return name.endswith("_bytes")
