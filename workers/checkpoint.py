"""Checkpoints on disk: written atomically, read safely, and a corrupt one falls back.

- :func:`save` writes to a unique temporary name, fsyncs, keeps the previous checkpoint
  as ``<stem>.prev.pt`` (``workers.trial_folder.PREVIOUS_CHECKPOINT_FILE``) and renames the new one into place: a crash at any moment leaves
  the newest complete checkpoint or the one before it, never half a file.
- :func:`load_latest` reads with ``torch.load(weights_only=True)``: tensors, numbers,
  strings and containers only, so a crafted ``checkpoint.pt`` cannot run code; such a
  file is refused with :class:`UnsafeCheckpoint`, never executed and never skipped
  silently. A truncated or corrupt newest checkpoint falls back to the previous good
  one (or to step 0) with a warning naming the file.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("ropenope.checkpoint")


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint holds objects other than tensors and plain data (a pickle that could
    run code); it is refused."""


def previous_of(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt`` (the layout's PREVIOUS_CHECKPOINT_FILE)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, keeping the last checkpoint as ``.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, previous_of(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # A well-formed pickle that names a global (a class, a function) other than the
        # tensor types: it would run code. Garbage fails on an operand instead.
        if re.search(r"\bglobal\b", str(err), flags=re.IGNORECASE):
            raise UnsafeCheckpoint(
                f"refusing to load {path}: it holds objects other than tensors and plain "
                "data (an unsafe pickle that could run code); delete it to start over"
            ) from None
        raise
    if not isinstance(state, dict):
        raise ValueError(f"not a checkpoint (a {type(state).__name__}, not a dict)")
    return state


def load_latest(path: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint at ``path`` (or its ``.prev``) and the file it came
    from; None when neither is there or readable (the run starts at step 0). Raises
    :class:`UnsafeCheckpoint` for a file that is not plain weights and data."""
    for candidate in (Path(path), previous_of(path)):
        if not candidate.is_file():
            continue
        try:
            return _read(candidate), candidate
        except UnsafeCheckpoint:
            raise
        except Exception as err:  # a damaged file fails in many ways; each is logged
            log.warning(
                "checkpoint %s is unreadable (%s: %s); falling back to an earlier one",
                candidate,
                type(err).__name__,
                str(err).splitlines()[0][:200] if str(err) else "",
            )
    return None
