"""Which device a run uses: the one home of what ``device: auto`` means.

``auto`` (or no choice) is the GPU when the run has one: inside a Ray trial, when Ray gave the
trial one (a trial without a GPU allocation must not take one Ray thinks is free); elsewhere,
when torch sees one. The caller says which (this module imports no torch: the driver's side
of a trial uses it too).
"""

from __future__ import annotations

AUTO = "auto"


def choose_device(wanted: str | None, *, gpu_given: bool) -> str:
    """``wanted`` unless it is ``auto`` or None; then ``cuda`` when ``gpu_given``, else ``cpu``."""
    if wanted is not None and wanted != AUTO:
        return wanted
    return "cuda" if gpu_given else "cpu"
