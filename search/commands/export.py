"""`ropenope export STUDY`: a trained trial as a Hugging Face model folder, optionally
registered as a new version in the MLflow Model Registry.

Which trial: ``--trial N``, ``--best METRIC`` (the best COMPLETE trial on one objective, as
``ropenope status`` shows it) or ``--pareto`` (every candidate of the Pareto front, one folder
each). The weights are the trial's checkpoint ``<trial_dir>/seed_<S>/checkpoint.pt`` (its
first seed unless ``--seed``); the candidate is rebuilt from the study's sweep file and must
have the trial's candidate id. The conversion and its check are ``workers.hf.export``; the
registry is ``tracking.registry``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from space.trial_attrs import ATTR_TRIAL_DIR, TrialAttrs

HELP = "write a trained trial as a Hugging Face model folder (and register it in MLflow)"

_STORAGE_HELP = (
    "Optuna storage URL or SQLite file (default: $ROPENOPE_STORAGE, else runs/optuna.db)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help=HELP,
        description=f"{HELP[0].upper()}{HELP[1:]}: config.json for the stock transformers "
        "class that reproduces the candidate (or, with --remote-code, its own modeling file), "
        "model.safetensors, the tokenizer and a model card; the folder is loaded back and its "
        "logits compared with ropenope's before it is written. "
        "Example: ropenope export demo --best long_acc --register demo-winner",
    )
    p.add_argument("study", help="study name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="the trial with this number")
    which.add_argument("--best", metavar="METRIC", help="the best COMPLETE trial on this objective")
    which.add_argument("--pareto", action="store_true", help="every candidate of the Pareto front")
    p.add_argument(
        "--out",
        type=Path,
        help="the model folder (with --pareto: the folder that gets one trial_<N>/ each); "
        "default runs/exports/STUDY/trial_<N>",
    )
    p.add_argument("--seed", type=int, help="which seed's weights (default: the trial's first)")
    p.add_argument(
        "--remote-code",
        action="store_true",
        help="for a candidate no stock transformers class reproduces: write its own modeling "
        "file next to the weights (load with trust_remote_code=True)",
    )
    p.add_argument(
        "--register",
        metavar="NAME",
        help="also log the model to MLflow and register it as a new version of NAME, "
        "linked to the trial's run, with its scores as version tags",
    )
    p.add_argument("--storage", help=_STORAGE_HELP)
    p.add_argument(
        "--config", help="sweep file to rebuild the candidate (default: the study's own)"
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI for --register (default: the sweep file's, else "
        "$MLFLOW_TRACKING_URI, else runs/mlflow.db)",
    )
    p.add_argument(
        "--no-check",
        action="store_true",
        help="do not load the folder back to compare its logits with ropenope's model",
    )


@dataclass
class Exported:
    trial: int
    seed: int
    result: Any  # workers.hf.export.ExportResult
    registered: Any = None  # tracking.registry.RegisteredVersion


# -- which trials -----------------------------------------------------------------------


def select_trials(
    study: Any, objectives: list[str], *, trial: int | None, best: str | None, pareto: bool
) -> list[Any]:
    """The COMPLETE trials to export, by number, best objective or Pareto front."""
    from optuna.trial import TrialState

    from search.errors import CliError
    from search.status import best_per_objective, pareto_set

    trials = study.get_trials(deepcopy=False)
    directions = [d.name.lower() for d in study.directions]
    if trial is not None:
        found = [t for t in trials if t.number == trial]
        if not found:
            raise CliError(f"study {study.study_name!r} has no trial {trial}")
        t = found[0]
        if t.state != TrialState.COMPLETE:
            reason = TrialAttrs.of(t.user_attrs).reason
            raise CliError(
                f"trial {trial} is {t.state.name}{f' ({reason})' if reason else ''}: only a "
                "COMPLETE trial has fully trained weights to export"
            )
        return [t]
    if best is not None:
        if best not in objectives:
            raise CliError(f"--best {best!r} is not an objective of the study: {objectives}")
        picked = best_per_objective(trials, objectives, directions).get(best)
        if picked is None:
            raise CliError(f"study {study.study_name!r} has no COMPLETE trial to export")
        return [t for t in trials if t.number == picked["number"]]
    if pareto:
        front = sorted(pareto_set(trials, directions), key=lambda t: t.number)
        if not front:
            raise CliError(f"study {study.study_name!r} has no COMPLETE trial to export")
        return front
    raise CliError("choose --trial N, --best METRIC or --pareto")


def _seed_entries(trial: Any) -> dict[int, dict[str, Any]]:
    attrs = TrialAttrs.of(trial.user_attrs)
    entries = {int(e["seed"]): e for e in attrs.seeds or [] if "seed" in e}
    if not entries and attrs.seed is not None:
        entries[attrs.seed] = {"seed": attrs.seed}
    return entries


def trial_scores(trial: Any) -> dict[str, float]:
    """The trial's scores (the mean over its seeds when it trained several)."""
    return dict(TrialAttrs.of(trial.user_attrs).scores)


def _context_tokens(config: Any) -> int:
    s = config.score
    multiples = [*s.lengths, *s.extrap, *s.mass_lengths, 1]
    return int(config.train.final_seq_len * max(multiples))


def _default_out(study_name: str, number: int, seed: int, n_seeds: int) -> Path:
    from space.paths import runs_dir

    leaf = f"trial_{number}" if n_seeds <= 1 else f"trial_{number}_seed_{seed}"
    return runs_dir() / "exports" / study_name / leaf


# -- one trial --------------------------------------------------------------------------


def export_trial(
    study: Any,
    trial: Any,
    config: Any,
    *,
    out_dir: Path,
    seed: int | None,
    remote_code: bool,
    check: bool,
    storage_url: str,
) -> tuple[Exported, dict[str, Any]]:
    """Export one COMPLETE trial; returns what was written and the facts for registering."""
    from space.secrets import redact_url as redact
    from space.stages import seq_len_at
    from tracking.provenance import source_tags
    from workers.hf.card import CardFacts, render_card
    from workers.hf.export import export_candidate, is_byte_vocabulary, load_weights

    candidate, seeds, seed, checkpoint = _trained_checkpoint(trial, config, seed)
    weights, step = load_weights(checkpoint)
    seed_scores = dict((seeds.get(seed) or {}).get("scores") or {}) or trial_scores(trial)
    attrs = TrialAttrs.of(trial.user_attrs)
    preset, run_id = attrs.preset, attrs.mlflow_run_id

    def card(architecture: str, remote: bool) -> str:
        facts = CardFacts(
            study=study.study_name,
            trial=trial.number,
            seed=seed,
            step=step,
            seq_len=seq_len_at(config.train.stage_plans(), step),
            architecture=architecture,
            remote_code=remote,
            scores=seed_scores,
            trial_scores=trial_scores(trial),
            n_seeds=max(1, len(seeds)),
            objectives=list(zip(config.objective_names(), config.directions(), strict=True)),
            preset=preset,
            mlflow_run_id=run_id,
            tokenizer=is_byte_vocabulary(candidate),
            folder_name=out_dir.name,
        )
        return render_card(candidate, facts)

    # The card names the class; pick it first (this also refuses what cannot be exported).
    from workers.hf.export import REMOTE_ARCHITECTURE, choose_layout

    layout = choose_layout(
        candidate, remote_code=remote_code, max_position_embeddings=_context_tokens(config)
    )
    architecture = layout.architecture if layout is not None else REMOTE_ARCHITECTURE
    info = {
        "study": study.study_name,
        "storage": redact(storage_url),
        "trial": trial.number,
        "seed": seed,
        "step": step,
        "preset": preset,
        "mlflow_run_id": run_id,
        "checkpoint": str(checkpoint),
        "scores": seed_scores,
        "trial_scores": trial_scores(trial),
        "git_commit": source_tags().get("git_commit"),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    result = export_candidate(
        candidate,
        weights,
        out_dir,
        max_position_embeddings=_context_tokens(config),
        card=card(architecture, layout is None),
        info=info,
        remote_code=remote_code,
        check=check,
    )
    facts = {
        "study": study.study_name,
        "trial": trial.number,
        "seed": seed,
        "candidate_id": candidate.id,
        "candidate_name": candidate.name,
        "preset": preset,
        "architecture": result.architecture,
        "remote_code": str(result.remote_code).lower(),
    }
    extra = {"run_id": run_id, "scores": seed_scores, "knobs": candidate.knobs, "facts": facts}
    return Exported(trial.number, seed, result), extra


def _trained_checkpoint(
    trial: Any, config: Any, seed: int | None
) -> tuple[Any, dict[int, dict[str, Any]], int, Path]:
    """``(candidate, seed entries, seed, checkpoint)`` of the trial's trained model: the
    candidate rebuilt from its knobs must have the trial's id, the seed one it trained
    (default: its first), the checkpoint a file."""
    from search.errors import CliError
    from workers.layout import CHECKPOINT_FILE, seed_dir

    attrs = TrialAttrs.of(trial.user_attrs)
    if attrs.knobs is None:
        raise CliError(f"trial {trial.number} has no recorded knobs; was it made by ropenope?")
    candidate = config.candidate(attrs.knobs)
    if attrs.candidate_id and candidate.id != attrs.candidate_id:
        raise CliError(
            f"trial {trial.number} trained candidate {attrs.candidate_id}, but this sweep "
            f"file builds {candidate.id} from its knobs (a different model size?); pass the "
            "sweep file the study ran with (--config)"
        )
    seeds = _seed_entries(trial)
    if seed is None:
        seed = min(seeds) if seeds else 0
    elif seeds and seed not in seeds:
        raise CliError(f"trial {trial.number} trained seeds {sorted(seeds)}, not seed {seed}")
    if not attrs.trial_dir:
        raise CliError(f"trial {trial.number} has no trial folder ({ATTR_TRIAL_DIR})")
    checkpoint = seed_dir(Path(attrs.trial_dir), seed) / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise CliError(
            f"trial {trial.number}: no checkpoint at {checkpoint} (on a cluster the trial "
            "folders are on the shared runs volume: run export where it is mounted)"
        )
    return candidate, seeds, seed, checkpoint


def _register(
    args: argparse.Namespace, config: Any, study_name: str, exported: Exported, extra: dict
) -> Any:
    from tracking.registry import register_exported_model
    from tracking.target import tracking_target
    from workers.hf.export import PYFUNC_LOADER

    target = tracking_target(config, study_name, uri=args.tracking_uri)
    return register_exported_model(
        target,
        args.register,
        exported.result.out_dir,
        loader_file=PYFUNC_LOADER,
        run_id=extra["run_id"],
        scores=extra["scores"],
        facts=extra["facts"],
        params=extra["knobs"],
        description=f"{study_name} trial {exported.trial} (seed {exported.seed}): "
        f"{extra['facts']['candidate_name']}, exported as {exported.result.architecture}",
    )


def _describe(exported: Exported, name: str) -> list[str]:
    r = exported.result
    how = (
        "its own modeling file (trust_remote_code=True)" if r.remote_code else "stock transformers"
    )
    lines = [
        f"trial {exported.trial} (seed {exported.seed}): {name}",
        f"  -> {r.out_dir}: {r.architecture}, {how}",
    ]
    if r.max_abs_diff is not None:
        lines.append(
            f"  logits match ropenope's model within {r.max_abs_diff:.2g} on {r.check_tokens} "
            "random tokens"
        )
    remote = ", trust_remote_code=True" if r.remote_code else ""
    lines.append(f'  load: AutoModelForCausalLM.from_pretrained("{r.out_dir}"{remote})')
    if exported.registered is not None:
        v = exported.registered
        run = f", run {v.run_id}" if v.run_id else " (no MLflow run recorded for this trial)"
        lines.append(f"  registered: {v.name} version {v.version} (model {v.model_id}{run})")
    return lines


def run(args: argparse.Namespace) -> int:
    from search.errors import CliError
    from search.storage import resolve_storage_url
    from search.study import load_with_config
    from space.errors import InvalidCandidate
    from tracking.registry import RegistryError
    from workers.hf.export import ExportError
    from workers.hf.reasons import NotExpressible

    missing = [m for m in ("transformers", "safetensors", "tokenizers") if not find_spec(m)]
    if missing:
        raise CliError(
            f"ropenope export needs {', '.join(missing)}: install the export extra, "
            "pip install -e '.[export]' (make install does)"
        )
    study, config = load_with_config(args.study, args.storage, args.config)
    if config is None:
        raise CliError(f"study {args.study!r} has no stored sweep file; pass --config FILE")
    trials = select_trials(
        study, config.objective_names(), trial=args.trial, best=args.best, pareto=args.pareto
    )
    failed = 0
    for trial in trials:
        seeds = _seed_entries(trial)
        seed = args.seed if args.seed is not None else min(seeds, default=0)
        default = _default_out(study.study_name, trial.number, seed, len(seeds))
        if args.pareto:  # --out is the parent of one folder per trial
            out_dir = Path(args.out) / default.name if args.out else default
        else:
            out_dir = args.out or default
        name = TrialAttrs.of(trial.user_attrs).candidate_name or ""
        try:
            exported, extra = export_trial(
                study,
                trial,
                config,
                out_dir=Path(out_dir),
                seed=seed,
                remote_code=args.remote_code,
                check=not args.no_check,
                storage_url=resolve_storage_url(args.storage or config.study.storage),
            )
            if args.register:
                exported.registered = _register(args, config, study.study_name, exported, extra)
        except NotExpressible as err:
            failed += 1
            hint = (
                "; export it with --remote-code (its own modeling file, trust_remote_code=True)"
                if err.remote_code_possible
                else "; this export does not implement it"
            )
            print(
                f"ropenope export: trial {trial.number} ({name}): no stock transformers class "
                f"reproduces it: {err}{hint}",
                file=sys.stderr,
            )
            continue
        except (ExportError, RegistryError, InvalidCandidate, CliError) as err:
            failed += 1
            print(f"ropenope export: trial {trial.number}: {err}", file=sys.stderr)
            continue
        print("\n".join(_describe(exported, name)))
    if failed and len(trials) == 1:
        return 2
    if failed:
        print(f"ropenope export: {failed} of {len(trials)} trials not exported", file=sys.stderr)
        return 2
    return 0


__all__ = ["add_parser", "export_trial", "run", "select_trials", "trial_scores"]
