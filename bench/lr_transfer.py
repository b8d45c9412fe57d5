"""Does the best learning rate move with the width? Standard parametrization against µP.

    python bench/lr_transfer.py standard      # one parametrization per call (run two at once)
    python bench/lr_transfer.py mup

Trains a two-layer RoPE byte model (4 heads, MLP 4x, T 64, batch 16, 200 steps, warmup 20,
plain language modelling) at widths 32, 64 and 128 and learning rates 1e-3, 3e-3, 1e-2,
3e-2, each from seed 0, through ``workers.candidate.run_pilot`` (the ``train.lr_search``
pilot: training and the final validation bits per byte, no scoring); with ``mup`` the base
width is 32. Prints one line per run and, at the end, one JSON object
``{width: {lr: val_bpb}}`` and the best learning rate per width.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from space.schema import parse_config  # noqa: E402
from workers.candidate import run_pilot  # noqa: E402

WIDTHS = (32, 64, 128)
LRS = (1e-3, 3e-3, 1e-2, 3e-2)


def sweep_file(width: int, parametrization: str) -> dict:
    model = {"layers": 2, "d_model": width, "heads": 4, "mlp_hidden": 4 * width}
    if parametrization == "mup":
        model.update(parametrization="mup", base_d_model=WIDTHS[0])
    return {
        "study": {"name": "lr_transfer"},
        "model": model,
        "train": {
            "seq_len": 64,
            "batch_size": 16,
            "steps": 200,
            "warmup_steps": 20,
            "eval_every": 200,
            "checkpoint_every": 1000,
            "eval_windows": 16,
            "lm_fraction": 1.0,
            "task_mix": {"passkey": 1.0},
        },
        "score": {"task": "passkey"},
    }


def main(parametrization: str) -> None:
    losses: dict[int, dict[float, float | None]] = {}
    for width in WIDTHS:
        config = parse_config(sweep_file(width, parametrization))
        candidate = config.candidate({"global_every": 1, "global_position": "rope"})
        for lr in LRS:
            at_lr = config.model_copy(update={"train": config.train.model_copy(update={"lr": lr})})
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                pilot = run_pilot(
                    at_lr, candidate, lr=lr, seed=0, out_dir=Path(folder), device="cpu", threads=1
                )
            losses.setdefault(width, {})[lr] = pilot.val_bpb
            took = time.perf_counter() - started
            print(f"{parametrization} d{width} lr {lr:g}: {pilot.val_bpb} ({took:.0f} s)")
    best = {
        width: min((lr for lr in LRS if row[lr] is not None), key=lambda lr: row[lr])
        for width, row in losses.items()
    }
    print(json.dumps({"parametrization": parametrization, "val_bpb": losses, "best_lr": best}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mup")
