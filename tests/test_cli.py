"""The `ropenope` parser and its lazy dispatch table (search.cli)."""

from __future__ import annotations

import subprocess
import sys

from search.cli import COMMANDS, build_parser, handler

ENGINES = ("torch", "ray", "mlflow", "optuna", "transformers")


def test_cli_dispatch_table_has_exactly_the_parsers_commands():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(COMMANDS) == set(choices)


def test_cli_dispatch_table_resolves_every_command_to_a_function():
    for command, target in COMMANDS.items():
        module, _, function = target.partition(":")
        assert module.startswith("search.commands."), command
        run = handler(command)
        assert callable(run) and run.__name__ == function, command


def test_cli_help_imports_no_engine():
    # A fresh interpreter: this test process has the engines loaded already.
    code = (
        "import sys\n"
        "from search.cli import main\n"
        "for argv in (['--help'], ['submit', '--help'], ['export', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {ENGINES!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "usage: ropenope" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"
