"""`ropenope train`: train and score one candidate locally, with no Ray and no MLflow."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from space.errors import ConfigError
from space.expand import Candidate
from space.knobs import KNOB_NAMES
from space.schema import SweepConfig, load_config, parse_yaml
from workers.lr_search import describe, with_lr

SUMMARY_KEYS = (
    "short_bpb",
    "long_acc",
    "acc_at_T",
    "kv_cache_bytes",
    "params",
    "tokens_per_s",
    "peak_memory_bytes",
    "attn_flops_per_token",
    "train_seconds",
)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``knob=value`` pairs; values read as YAML (``null``, ``1e5``, ``rope``)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError.at("--set", f"expected knob=value, got {item!r}")
        if name not in KNOB_NAMES:
            raise ConfigError.at(
                f"--set {name}", f"unknown knob; expected one of {list(KNOB_NAMES)}"
            )
        out[name] = parse_yaml(text)
    return out


def resolve_candidate(config: SweepConfig, preset: str | None, sets: dict[str, Any]) -> Candidate:
    """A preset (from the file or shipped) plus overrides; without one, the space's fixed knobs."""
    from space.presets import BUILTIN_PRESETS

    if preset is not None:
        if preset in config.presets:
            base = dict(config.presets[preset])
        elif preset in BUILTIN_PRESETS:
            base = dict(BUILTIN_PRESETS[preset])
        else:
            known = sorted({*config.presets, *BUILTIN_PRESETS})
            raise ConfigError.at("--preset", f"unknown preset {preset!r}; expected one of {known}")
    else:
        base = {name: spec.value for name, spec in config.fixed.items()}
    return config.candidate({**base, **sets}, path="--set")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train and score one candidate locally (no Ray, no MLflow)",
        description="Train and score one candidate locally. Example: "
        "ropenope train configs/demo.yaml --preset rnope_swa --set local_window=16 --out runs/one",
    )
    p.add_argument("config", help="sweep file (YAML)")
    p.add_argument("--preset", help="preset name (from the file or shipped)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="override a knob",
    )
    p.add_argument("--seed", type=int, default=None, help="seed (default: train.seed)")
    p.add_argument("--out", type=Path, default=None, help="artifact folder")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    p.add_argument("--fresh", action="store_true", help="ignore a checkpoint already in --out")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from workers.candidate import run_candidate
    from workers.corpus import prepare
    from workers.data import DataError

    config = load_config(args.config)
    candidate = resolve_candidate(config, args.preset, parse_sets(args.sets))
    seed = config.train.seed if args.seed is None else args.seed
    out = args.out or Path("runs") / "train" / f"{candidate.id}-s{seed}"
    steps = config.train.total_steps
    print(f"candidate {candidate.name} [{candidate.id}] seed {seed} -> {out}", file=sys.stderr)
    try:
        corpus = prepare(config)  # tokenized once, in the runs folder's cache
    except DataError as err:
        print(f"ropenope train: data: {err}", file=sys.stderr)
        return 2
    lr = None
    if config.train.lr_search is not None:  # the pilots first, as a sweep's trial does
        choice = search_lr(config, candidate, out, corpus, args)
        print(f"lr search: {describe(choice)}", file=sys.stderr)
        if choice.chosen is None:
            print("ropenope train: every train.lr_search pilot lost", file=sys.stderr)
            return 1
        lr = choice.chosen
        config = with_lr(config, lr)
    bar = tqdm(total=steps, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_step(step: int, loss: float, tokens_per_s: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        bar.refresh()

    try:
        result = run_candidate(
            config,
            candidate,
            seed=seed,
            out_dir=out,
            on_step=on_step,
            resume=not args.fresh,
            threads=args.threads,
            corpus=corpus,
        )
    finally:
        bar.close()
    if args.json:
        print(
            json.dumps(
                {
                    "status": result.status,
                    "reason": result.reason,
                    **result.scores,
                    "niah": result.niah,
                    "candidate": candidate.name,
                    "candidate_id": candidate.id,
                    "seed": seed,
                    "out": str(out),
                    **({} if lr is None else {"lr": lr}),
                }
            )
        )
    else:
        print(format_summary(result, candidate, out))
    return 0 if result.status == "complete" else 1


def search_lr(
    config: Any, candidate: Candidate, out: Path, corpus: Any, args: argparse.Namespace
) -> Any:
    """``train.lr_search``'s pilots in ``out`` (``out/lr_search.json``; ``--fresh`` runs them
    again) on ``train.seed`` as a sweep's (whatever ``--seed`` says), each with a progress
    bar; the choice (``workers.lr_search.LrChoice``)."""
    from tqdm import tqdm

    from workers.candidate import run_pilot
    from workers.lr_search import choose_lr, pilot_seed

    seed = pilot_seed(config)

    def pilot(pilot_config: Any, lr: float, folder: Path) -> Any:
        steps = pilot_config.train.total_steps
        bar = tqdm(total=steps, desc=f"pilot lr {lr:g}", unit="step", file=sys.stderr)
        try:
            return run_pilot(
                pilot_config,
                candidate,
                lr=lr,
                seed=seed,
                out_dir=folder,
                threads=args.threads,
                corpus=corpus,
                resume=not args.fresh,
                on_step=lambda step, loss, _: bar.update(step - bar.n),
            )
        finally:
            bar.close()

    return choose_lr(config, out, seed, pilot, fresh=args.fresh)


def format_summary(result: Any, candidate: Candidate, out: Path) -> str:
    lines = [f"{candidate.name}  [{candidate.id}]  status: {result.status}"]
    if result.reason:
        lines.append(f"reason: {result.reason}")
    for key in SUMMARY_KEYS:
        if key in result.scores:
            value = result.scores[key]
            text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
            lines.append(f"  {key:<22} {text}")
    prefixes = ("acc@", "extrap_bpb@", "answer_nll@", "long_answer_nll")
    for key in sorted(k for k in result.scores if k.startswith(prefixes)):
        lines.append(f"  {key:<22} {result.scores[key]:.4g}")
    families = (result.niah or {}).get("tasks") or {}
    if len(families) > 1:  # several task families: each one's long-context mean
        for task in families:
            key = f"{task}/long_acc"
            if key in result.scores:
                lines.append(f"  {key:<22} {result.scores[key]:.4g}")
    if result.niah:
        lines.append("NIAH accuracy (rows: length, columns: depth)")
        depths = result.niah["depths"]
        lines.append("  " + " " * 8 + "".join(f"{d:>7.2f}" for d in depths))
        for length, row in zip(result.niah["lengths"], result.niah["acc"], strict=True):
            lines.append(f"  {length:>8}" + "".join(f"{a:>7.2f}" for a in row))
    lines.append(f"artifacts in {out}: " + ", ".join(sorted(result.artifacts)))
    return "\n".join(lines)
