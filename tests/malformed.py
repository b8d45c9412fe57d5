"""A corpus of malformed sweep files: what a new user mistypes and a hostile user crafts.

Each :class:`Case` is a file's content (text or bytes) and a fragment the one-line error
must contain: the dotted key path of the bad key, or the cause for a file that is not a
sweep file at all. ``tests/test_malformed.py`` runs every case through ``ropenope space``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

VALID: dict[str, Any] = {
    "study": {"name": "ok", "trials": 4, "sampler": "tpe"},
    "space": {
        "global_every": {"choice": [1, 2, 4]},
        "global_position": {"choice": ["nope", "rope"]},
        "local_window": {"choice": [16, 32, None]},
    },
    "model": {"layers": 4, "d_model": 64, "heads": 4, "mlp_hidden": 128},
    "train": {"seq_len": 64, "batch_size": 4, "steps": 10, "task_mix": {"passkey": 1.0}},
    "score": {"task": "passkey", "lengths": [1, 2]},
    "presets": ["rope", {"name": "hybrid", "extends": "rnope_swa", "knobs": {"local_window": 16}}],
}


@dataclass(frozen=True)
class Case:
    name: str
    content: str | bytes
    expect: str  # a fragment of the error message (a key path or the cause)


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


_DELETE = object()


def _with(path: str, value: Any) -> str:
    """VALID with the dotted ``path`` set to ``value`` (``_DELETE`` removes it)."""
    doc = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return _dump(doc)


def _cases() -> list[Case]:
    c: list[Case] = []

    def add(name: str, content: str | bytes, expect: str) -> None:
        c.append(Case(name, content, expect))

    valid = _dump(VALID)
    # -- not a sweep file at all ---------------------------------------------------------
    add("empty", "", "mapping of sections")
    add("comment_only", "# nothing here\n", "mapping of sections")
    add("top_level_list", "- study\n- model\n", "mapping of sections")
    add("top_level_scalar", "42\n", "mapping of sections")
    add("binary_png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "UTF-8")
    add("nul_in_text", valid.replace("ok", "o\x00k"), "binary")
    add("latin1", valid.replace("ok", "caf\xe9").encode("latin-1"), "UTF-8")
    add("utf16", valid.encode("utf-16"), "UTF-8")
    add("tab_indent", "study:\n\tname: x\n", "not valid YAML")
    add("unclosed_bracket", "study: {name: x\nmodel: [1, 2\n", "not valid YAML")
    add("bad_indent", "study:\n  name: x\n    trials: 3\n", "not valid YAML")
    add("two_documents", valid + "---\n" + valid, "not valid YAML")
    add("python_tag", "study: !!python/object:os.system {}\n", "not valid YAML")
    add("unknown_tag", "study: !secret {name: x}\n", "not valid YAML")
    add("too_large", valid + "# " + "x" * 1_100_000 + "\n", "at most")
    add("deep_nesting", "study: " + "[" * 5000 + "]" * 5000 + "\n", "nested")
    add("deep_mapping", "study:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 60)), "nested")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
    )
    add("alias_bomb", bomb, "expands to more than")
    add("recursive_alias", "study: &s {name: x, self: *s}\n", "contains it")
    add("recursive_list", "space: &s [*s]\n", "contains it")
    add("duplicate_section", valid + "study: {name: again}\n", "appears twice")
    add("duplicate_nested", valid.replace("  steps: 10\n", "  steps: 10\n  steps: 20\n"), "steps")
    add(
        "duplicate_knob",
        valid.replace("space:\n", "space:\n  local_window: 8\n", 1),
        "appears twice",
    )
    add("complex_key", "? [a, b]\n: 1\n", "plain value")
    # -- sections --------------------------------------------------------------------
    add("unknown_section", valid + "trainer: {lr: 1}\n", "trainer")
    add("misspelled_section", valid.replace("score:", "scores:"), "scores")
    add("section_scalar", _with("train", 5), "train")
    add("section_list", _with("model", [1, 2]), "model")
    add("missing_study", _with("study", _DELETE), "study")
    add("missing_model", _with("model", _DELETE), "model")
    add("missing_train", _with("train", _DELETE), "train")
    add("study_null", _with("study", None), "study.name")
    # -- study -----------------------------------------------------------------------
    add("name_missing", _with("study.name", _DELETE), "study.name")
    add("name_empty", _with("study.name", ""), "study.name")
    add("name_dotdot_path", _with("study.name", "../escape"), "study.name")
    add("name_slash", _with("study.name", "a/b"), "study.name")
    add("name_dotdot", _with("study.name", ".."), "study.name")
    add("name_long", _with("study.name", "x" * 300), "study.name")
    add("name_space", _with("study.name", "my study"), "study.name")
    add("name_int", _with("study.name", 5), "study.name")
    add("trials_zero", _with("study.trials", 0), "study.trials")
    add("trials_negative", _with("study.trials", -1), "study.trials")
    add("trials_string", _with("study.trials", "10"), "study.trials")
    add("trials_float", _with("study.trials", 2.5), "study.trials")
    add("trials_huge", _with("study.trials", 10**40), "study.trials")
    add("trials_bool", _with("study.trials", True), "study.trials")
    add("trials_inf", _with("study.trials", float("inf")), "study.trials")
    add("sampler_unknown", _with("study.sampler", "bayes"), "study.sampler")
    add("objectives_empty", _with("study.objectives", []), "study.objectives")
    add("objectives_not_list", _with("study.objectives", "long_acc"), "study.objectives")
    add(
        "objective_unknown_metric",
        _with("study.objectives", [{"metric": "accuracy", "direction": "maximize"}]),
        "study.objectives[0].metric",
    )
    add(
        "objective_bad_direction",
        _with("study.objectives", [{"metric": "long_acc", "direction": "up"}]),
        "study.objectives[0].direction",
    )
    add(
        "objective_missing_direction",
        _with("study.objectives", [{"metric": "long_acc"}]),
        "study.objectives[0].direction",
    )
    add(
        "objective_twice",
        _with("study.objectives", [{"metric": "long_acc", "direction": "maximize"}] * 2),
        "study.objectives",
    )
    add(
        "objective_needs_lengths",
        _with("study.objectives", [{"metric": "acc@8x", "direction": "maximize"}]),
        "study.objectives[0].metric",
    )
    add("repeats_zero", _with("study.repeats", 0), "study.repeats")
    add("seed_string", _with("study.seed", "x"), "study.seed")
    add("seed_nan", _with("study.seed", float("nan")), "study.seed")
    add("dedup_string", _with("study.dedup", "yes"), "study.dedup")
    add("storage_int", _with("study.storage", 5), "study.storage")
    add("study_extra_key", _with("study.trails", 4), "study.trails")
    # -- model -----------------------------------------------------------------------
    add("layers_zero", _with("model.layers", 0), "model.layers")
    add("layers_negative", _with("model.layers", -3), "model.layers")
    add("layers_huge", _with("model.layers", 10**9), "model.layers")
    add("layers_string", _with("model.layers", "four"), "model.layers")
    add("head_dim_odd", _with("model.d_model", 6).replace("heads: 4", "heads: 2"), "model.heads")
    add("heads_zero", _with("model.heads", 0), "model.heads")
    add("heads_not_dividing", _with("model.heads", 3), "model.heads")
    add("mlp_nan", _with("model.mlp_hidden", float("nan")), "model.mlp_hidden")
    add("init_std_inf", _with("model.init_std", float("inf")), "model.init_std")
    add("init_std_negative", _with("model.init_std", -0.1), "model.init_std")
    add("norm_eps_zero", _with("model.norm_eps", 0), "model.norm_eps")
    add("vocab_one", _with("model.vocab_size", 1), "model.vocab_size")
    add("d_model_huge", _with("model.d_model", 10**12), "model.d_model")
    add("model_extra_key", _with("model.dmodel", 64), "model.dmodel")
    # -- train -----------------------------------------------------------------------
    add("seq_len_small", _with("train.seq_len", 4), "train.seq_len")
    add("seq_len_huge", _with("train.seq_len", 10**12), "train.seq_len")
    add("batch_zero", _with("train.batch_size", 0), "train.batch_size")
    add("steps_zero", _with("train.steps", 0), "train.steps")
    add("steps_huge", _with("train.steps", 10**30), "train.steps")
    add("steps_and_tokens", _with("train.tokens", 1000), "train.tokens")
    add("no_budget", _with("train.steps", _DELETE), "train.steps")
    add("lr_nan", _with("train.lr", float("nan")), "train.lr")
    add("lr_inf", _with("train.lr", float("inf")), "train.lr")
    add("lr_negative", _with("train.lr", -1.0), "train.lr")
    add("lr_string", _with("train.lr", "fast"), "train.lr")
    add("betas_short", _with("train.betas", [0.9]), "train.betas")
    add("betas_nan", _with("train.betas", [float("nan"), 0.95]), "train.betas")
    add("warmup_negative", _with("train.warmup_steps", -1), "train.warmup_steps")
    add("task_mix_unknown", _with("train.task_mix", {"summarise": 1.0}), "train.task_mix")
    add("task_mix_negative", _with("train.task_mix", {"passkey": -1.0}), "train.task_mix")
    add("task_mix_nan", _with("train.task_mix", {"passkey": float("nan")}), "train.task_mix")
    add("task_mix_empty", _with("train.task_mix", {}), "train.task_mix")
    add("lm_fraction_two", _with("train.lm_fraction", 2.0), "train.lm_fraction")
    add(
        "task_params_unknown",
        _with("train.task_params", {"passkey": {"bogus": 1}}),
        "train.task_params.passkey",
    )
    add(
        "task_params_many_needles",
        _with("train.task_params", {"multikey": {"n_needles": 100}}),
        "train.task_params.multikey",
    )
    add(
        "task_params_zero",
        _with("train.task_params", {"passkey": {"value_len": 0}}),
        "train.task_params.passkey",
    )
    add("seq_len_too_short_for_task", _with("train.seq_len", 12), "train.seq_len")
    add("eval_every_zero", _with("train.eval_every", 0), "train.eval_every")
    add("checkpoint_every_zero", _with("train.checkpoint_every", 0), "train.checkpoint_every")
    add("threads_zero", _with("train.threads", 0), "train.threads")
    add("compile_string", _with("train.compile", "yes"), "train.compile")
    add("min_lr_ratio_five", _with("train.min_lr_ratio", 5), "train.min_lr_ratio")
    add("grad_clip_zero", _with("train.grad_clip", 0), "train.grad_clip")
    add("filler_weight_inf", _with("train.filler_weight", float("inf")), "train.filler_weight")
    # -- data, score, scheduler, resources, tracking ------------------------------------
    add("data_source_int", _with("data.source", 5), "data.source")
    add("val_fraction_zero", _with("data.val_fraction", 0), "data.val_fraction")
    add("val_fraction_one", _with("data.val_fraction", 1), "data.val_fraction")
    add("val_fraction_nan", _with("data.val_fraction", float("nan")), "data.val_fraction")
    add("data_dtype", _with("data.dtype", "float32"), "data.dtype")
    add("score_task_unknown", _with("score.task", "haystack"), "score.task")
    add("lengths_empty", _with("score.lengths", []), "score.lengths")
    add("lengths_zero", _with("score.lengths", [0, 1]), "score.lengths")
    add("lengths_without_one", _with("score.lengths", [2, 4]), "score.lengths")
    add("lengths_huge", _with("score.lengths", [1, 10**9]), "score.lengths")
    add("depths_out_of_range", _with("score.depths", [0.5, 1.5]), "score.depths")
    add("depths_nan", _with("score.depths", [float("nan")]), "score.depths")
    add("samples_zero", _with("score.samples", 0), "score.samples")
    add("samples_huge", _with("score.samples", 10**12), "score.samples")
    add("extrap_zero", _with("score.extrap", [0]), "score.extrap")
    add("kv_context_zero", _with("score.kv_context_tokens", 0), "score.kv_context_tokens")
    add("mass_lengths_negative", _with("score.mass_lengths", [-1]), "score.mass_lengths")
    add("scheduler_kind", _with("scheduler", {"kind": "hyperband"}), "scheduler.kind")
    add(
        "scheduler_metric_score",
        _with("scheduler", {"kind": "asha", "metric": "long_acc"}),
        "scheduler.metric",
    )
    add(
        "scheduler_metric_unknown",
        _with("scheduler", {"kind": "asha", "metric": "foo"}),
        "scheduler.metric",
    )
    add("scheduler_mode", _with("scheduler", {"kind": "asha", "mode": "up"}), "scheduler.mode")
    add(
        "scheduler_reduction_one",
        _with("scheduler", {"kind": "asha", "reduction_factor": 1}),
        "scheduler.reduction_factor",
    )
    add(
        "early_stopping_scheduler",
        _with("study.early_stopping", {"scheduler": "hyperband"}),
        "study.early_stopping.scheduler",
    )
    add(
        "early_stopping_reduction_one",
        _with("study.early_stopping", {"scheduler": "mo_asha", "reduction_factor": 1}),
        "study.early_stopping.reduction_factor",
    )
    add(
        "early_stopping_grace_zero",
        _with("study.early_stopping", {"scheduler": "mo_asha", "grace_period": 0}),
        "study.early_stopping.grace_period",
    )
    add(
        "early_stopping_unknown_key",
        _with("study.early_stopping", {"scheduler": "mo_asha", "eta": 3}),
        "study.early_stopping.eta",
    )
    add(
        "early_stopping_objective_after_training",
        _with(
            "study.early_stopping",
            {
                "scheduler": "mo_asha",
                "objectives": [{"metric": "long_acc", "direction": "maximize"}],
            },
        ),
        "study.early_stopping.objectives[0].metric",
    )
    add(
        "early_stopping_objectives_fixed_before_training",
        _with(
            "study.early_stopping",
            {
                "scheduler": "mo_asha",
                "objectives": [{"metric": "kv_cache_bytes", "direction": "minimize"}],
            },
        ),
        "study.early_stopping.objectives",
    )
    add(
        "early_stopping_objective_direction",
        _with(
            "study.early_stopping",
            {"scheduler": "mo_asha", "objectives": [{"metric": "val_bpb", "direction": "down"}]},
        ),
        "study.early_stopping.objectives[0].direction",
    )
    add(
        "early_stopping_and_asha",
        _dump(
            {
                **VALID,
                "study": {**VALID["study"], "early_stopping": {"scheduler": "mo_asha"}},
                "scheduler": {"kind": "asha"},
            }
        ),
        "study.early_stopping.scheduler",
    )
    add("cpus_zero", _with("resources", {"cpus_per_trial": 0}), "resources.cpus_per_trial")
    add(
        "cpus_nan", _with("resources", {"cpus_per_trial": float("nan")}), "resources.cpus_per_trial"
    )
    add("gpus_negative", _with("resources", {"gpus_per_trial": -1}), "resources.gpus_per_trial")
    add(
        "max_concurrent_zero", _with("resources", {"max_concurrent": 0}), "resources.max_concurrent"
    )
    add("device_tpu", _with("resources", {"device": "tpu"}), "resources.device")
    add("tracking_enabled_string", _with("tracking", {"enabled": "maybe"}), "tracking.enabled")
    add("tracking_uri_int", _with("tracking", {"uri": 5}), "tracking.uri")
    add("tracking_extra", _with("tracking", {"url": "http://x"}), "tracking.url")
    # -- space -----------------------------------------------------------------------
    add("space_list", _with("space", ["global_every"]), "space")
    add("knob_unknown", _with("space.local_windw", 16), "space.local_windw")
    add("global_every_string", _with("space.global_every", "x"), "space.global_every")
    add("global_every_negative", _with("space.global_every", -1), "space.global_every")
    add("global_every_too_many", _with("space.global_every", 9), "space.global_every")
    add("position_unknown", _with("space.global_position", "rotary"), "space.global_position")
    add("window_zero", _with("space.local_window", 0), "space.local_window")
    add(
        "window_negative_choice",
        _with("space.local_window", {"choice": [16, -4]}),
        "space.local_window.choice[1]",
    )
    add("window_float", _with("space.local_window", 1.5), "space.local_window")
    add("window_string", _with("space.local_window", "32"), "space.local_window")
    add("window_bool", _with("space.local_window", True), "space.local_window")
    add("choice_empty", _with("space.local_window", {"choice": []}), "space.local_window.choice")
    add("choice_not_list", _with("space.local_window", {"choice": 16}), "space.local_window.choice")
    add(
        "choice_duplicates",
        _with("space.local_window", {"choice": [16, 16]}),
        "space.local_window.choice",
    )
    add("int_one_bound", _with("space.global_every", {"int": [1]}), "space.global_every.int")
    add("int_empty_range", _with("space.global_every", {"int": [4, 1]}), "space.global_every.int")
    add(
        "int_range_beyond_layers",
        _with("space.global_every", {"int": [1, 10**9]}),
        "space.global_every",
    )
    add("int_on_enum", _with("space.global_position", {"int": [1, 2]}), "space.global_position.int")
    add("float_on_int", _with("space.global_every", {"float": [1, 2]}), "space.global_every.float")
    add(
        "log_zero", _with("space.local_rope_base", {"log": [0, 10]}), "space.local_rope_base.log[0]"
    )
    add(
        "log_inf",
        _with("space.local_rope_base", {"log": [1e4, float("inf")]}),
        "space.local_rope_base.log[1]",
    )
    add(
        "log_with_step",
        _with("space.local_rope_base", {"log": [1e3, 1e5], "step": 10}),
        "space.local_rope_base.step",
    )
    add(
        "float_nan_bound",
        _with("space.global_temperature_scale", {"float": [float("nan"), 1]}),
        "space.global_temperature_scale.float[0]",
    )
    add(
        "step_zero",
        _with("space.global_every", {"int": [1, 4], "step": 0}),
        "space.global_every.step",
    )
    add(
        "step_string",
        _with("space.global_every", {"int": [1, 4], "step": "x"}),
        "space.global_every.step",
    )
    add(
        "int_step_float",
        _with("space.global_every", {"int": [1, 4], "step": 1.5}),
        "space.global_every.step",
    )
    add(
        "two_domains",
        _with("space.global_every", {"choice": [1, 2], "int": [1, 4]}),
        "space.global_every",
    )
    add(
        "no_domain",
        _with("space.global_every", {"when": {"global_position": "rope"}}),
        "space.global_every",
    )
    add(
        "unknown_domain_key",
        _with("space.global_every", {"range": [1, 2]}),
        "space.global_every.range",
    )
    add(
        "when_not_mapping",
        _with("space.local_window", {"choice": [16], "when": "rope"}),
        "space.local_window.when",
    )
    add(
        "when_empty",
        _with("space.local_window", {"choice": [16], "when": {}}),
        "space.local_window.when",
    )
    add(
        "when_undeclared",
        _with("space.local_window", {"choice": [16], "when": {"qk_norm": "none"}}),
        "space.local_window.when.qk_norm",
    )
    add(
        "when_self",
        _with("space.local_window", {"choice": [16, 32], "when": {"local_window": 16}}),
        "space.local_window.when.local_window",
    )
    cycle = copy.deepcopy(VALID)
    cycle["space"]["global_position"] = {"choice": ["nope", "rope"], "when": {"local_window": 16}}
    cycle["space"]["local_window"] = {"choice": [16, 32], "when": {"global_position": "rope"}}
    add("when_cycle", _dump(cycle), "space")
    add(
        "when_impossible",
        _with("space.local_window", {"choice": [16], "when": {"global_position": "alibi"}}),
        "space.local_window.when.global_position",
    )
    add(
        "when_no_overlap",
        _with("space.local_window", {"choice": [16], "when": {"global_every": 3}}),
        "space.local_window.when.global_every",
    )
    add("kv_heads_none_divide", _with("space.kv_heads", {"choice": [3, 5]}), "space.kv_heads")
    add("kv_heads_fixed_bad", _with("space.kv_heads", 3), "space.kv_heads")
    add("qk_norm_unknown", _with("space.qk_norm", "both"), "space.qk_norm")
    add("rope_base_nan", _with("space.local_rope_base", float("nan")), "space.local_rope_base")
    add("rope_base_negative", _with("space.local_rope_base", -1e4), "space.local_rope_base")
    add("rope_base_huge_int", _with("space.local_rope_base", 10**400), "space.local_rope_base")
    add(
        "temperature_scale_inf",
        _with("space.global_temperature_scale", float("inf")),
        "space.global_temperature_scale",
    )
    add("value_key_bad", _with("space.local_window", {"value": -1}), "space.local_window.value")
    # -- presets ---------------------------------------------------------------------
    add("presets_not_list", _with("presets", "rope"), "presets")
    add("preset_int", _with("presets", [5]), "presets[0]")
    add("preset_unknown", _with("presets", ["ropee"]), "presets[0]")
    add("preset_empty_name", _with("presets", [{"name": ""}]), "presets[0].name")
    add("preset_twice", _with("presets", ["rope", "rope"]), "presets[1]")
    add(
        "preset_extends_unknown",
        _with("presets", [{"name": "x", "extends": "nothing"}]),
        "presets[0].extends",
    )
    add(
        "preset_unknown_knob",
        _with("presets", [{"name": "x", "knobs": {"window": 8}}]),
        "presets[0].knobs.window",
    )
    add(
        "preset_bad_value",
        _with("presets", [{"name": "x", "knobs": {"local_window": -1}}]),
        "presets[0].knobs.local_window",
    )
    add(
        "preset_missing_name", _with("presets", [{"knobs": {"local_window": 8}}]), "presets[0].name"
    )
    add("preset_name_list", _with("presets", [{"name": ["a"]}]), "presets[0].name")
    add("preset_knobs_list", _with("presets", [{"name": "x", "knobs": [1]}]), "presets[0].knobs")
    # -- explicit placement, output gate, proportional RoPE -----------------------------
    add("layout_wrong_length", _with("space.layout", "GLL"), "space.layout")
    add(
        "layout_bad_letter",
        _with("space.layout", {"choice": ["GLLL", "GXLL"]}),
        "space.layout.choice[1]",
    )
    add("layout_number", _with("space.layout", 1010), "space.layout")
    add("layout_list", _with("space.layout", ["G", "L"]), "space.layout")
    add("output_gate_unknown", _with("space.output_gate", "sigmoid"), "space.output_gate")
    add(
        "output_gate_layers_unknown",
        _with("space.output_gate_layers", "odd"),
        "space.output_gate_layers",
    )
    add("rope_type_unknown", _with("space.rope_type", "gptj"), "space.rope_type")
    add(
        "rope_fraction_layers_unknown",
        _with("space.rope_fraction_layers", "first"),
        "space.rope_fraction_layers",
    )
    add("local_mixer_unknown", _with("space.local_mixer", "mamba"), "space.local_mixer")
    recurrent = copy.deepcopy(VALID)
    recurrent["space"]["local_mixer"] = "gated_deltanet"
    add("window_on_recurrent_layers", _dump(recurrent), "space.local_window")
    recurrent["space"]["local_window"] = None
    recurrent["space"]["local_rope_base"] = 50000.0
    add("rope_base_on_recurrent_layers", _dump(recurrent), "space.local_rope_base")
    add("deltanet_heads_zero", _with("space.deltanet_heads", 0), "space.deltanet_heads")
    add(
        "deltanet_conv_tokens_float",
        _with("space.deltanet_conv_tokens", 2.5),
        "space.deltanet_conv_tokens",
    )
    mamba = copy.deepcopy(VALID)
    mamba["space"]["local_mixer"] = "mamba2"
    add("window_on_mamba2_layers", _dump(mamba), "space.local_window")
    mamba["space"]["local_window"] = None
    mamba["space"]["local_rope_base"] = 50000.0
    add("rope_base_on_mamba2_layers", _dump(mamba), "space.local_rope_base")
    add("mamba2_state_size_zero", _with("space.mamba2_state_size", 0), "space.mamba2_state_size")
    add("mamba2_expand_float", _with("space.mamba2_expand", 1.5), "space.mamba2_expand")
    grid = copy.deepcopy(VALID)
    grid["study"]["sampler"] = "grid"
    grid["space"]["local_window"] = {"int": [1, 10**9]}
    add("grid_billion_points", _dump(grid), "space.local_window")
    # -- numbers Python will not convert (issue 21: a traceback, not a one-line error) --
    add("int_5000_digits", valid.replace("steps: 10", "steps: " + "9" * 5000), "train.steps")
    add(
        "int_5000_digits_in_a_list",
        _with("space.local_window", {"choice": [16, 424242]}).replace("424242", "7" * 5000),
        "space.local_window.choice[1]",
    )
    add(
        "int_5000_digits_in_a_preset",
        valid.replace("local_window: 16\n", "local_window: " + "3" * 5000 + "\n"),
        "presets[1].knobs.local_window",
    )
    return c


CASES = _cases()


# Legal but suspicious files: exit 0, and this warning (its key path and its cause) on stderr.
WARNING_CASES = [
    Case(
        "preset_window_past_seq_len",
        _with("presets", ["rope", {"name": "wide", "knobs": {"local_window": 128}}]),
        "warning: presets[1].knobs.local_window: preset 'wide': a window of 128 tokens is not "
        "smaller than train.seq_len=64",
    ),
    Case(
        "preset_extends_a_window_past_seq_len",
        _with("presets", [{"name": "wide_swa", "extends": "rnope_swa"}]),
        "warning: presets[0].knobs.local_window: preset 'wide_swa': a window of 64 tokens is "
        "not smaller than train.seq_len=64",
    ),
    Case(
        "searched_window_past_seq_len",
        _with("space.local_window", {"choice": [16, 128]}),
        "warning: space.local_window: a window of 128 tokens is not smaller than train.seq_len=64",
    ),
]
