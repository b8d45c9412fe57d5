# Names vulture cannot see used: arguments that framework interfaces pass by keyword
# (Ray Tune's Callback and Searcher), and module hooks Python calls itself.
# `make test` runs: vulture space workers tracking search vulture_whitelist.py --min-confidence 80
iteration  # noqa: B018, F821 - tune.Callback.on_* (iteration=..., trials=...)
checkpoint_dir  # noqa: B018, F821 - tune Searcher.save_to_dir(checkpoint_dir, session_str)
session_str  # noqa: B018, F821
tune_controller  # noqa: B018, F821 - tune TrialScheduler.on_trial_*(tune_controller, trial, ...)
