"""Where a run ran (STYLE 11): torch and CUDA versions and the device, as tags.

Computed in the trial process (the one that has torch and the device) and handed to
tracking, which records it without importing torch itself.
"""

from __future__ import annotations

import platform
from pathlib import Path

from space.names import TAG_CUDA_VERSION, TAG_DEVICE, TAG_TORCH_VERSION
from workers.device import choose_device


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall back to what platform knows
    return platform.processor() or platform.machine() or "cpu"


def environment_tags(device: str | None = None) -> dict[str, str]:
    """torch and CUDA versions and the device a run uses (``cpu``, ``cuda``, ``cuda:1``;
    None = what torch would pick)."""
    import torch

    tags = {
        TAG_TORCH_VERSION: torch.__version__,
        TAG_CUDA_VERSION: torch.version.cuda or "none",
    }
    wanted = choose_device(device, gpu_given=torch.cuda.is_available())
    if wanted.startswith("cuda") and torch.cuda.is_available():
        index = int(wanted.split(":", 1)[1]) if ":" in wanted else torch.cuda.current_device()
        tags[TAG_DEVICE] = f"{wanted}: {torch.cuda.get_device_name(index)}"
    else:
        tags[TAG_DEVICE] = f"cpu: {_cpu_name()}"
    return tags
