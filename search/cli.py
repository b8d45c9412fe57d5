"""The `ropenope` command line. Every command is shown in the README with an example."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from space.errors import ConfigError, InvalidCandidate


class CliError(Exception):
    """An error meant for the user: printed on stderr, exit code 2, no traceback."""


def _cmd_space(args: argparse.Namespace) -> int:
    from space.report import describe_space, format_space
    from space.schema import load_config

    config = load_config(args.config)
    if args.json:
        print(json.dumps(describe_space(config), indent=2, default=str))
    else:
        print(format_space(config))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from search import train_cmd

    return train_cmd.run(args)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "space": (_cmd_space, "validate a sweep file and show its knobs and preset layer tables"),
    "train": (_cmd_train, "train and score one candidate locally"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ropenope",
        description="Architecture search and ablation for long-context attention.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("space", help=COMMANDS["space"][1], description=COMMANDS["space"][1])
    p.add_argument("config", help="sweep file (YAML)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")

    from search import train_cmd

    train_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command][0]
    try:
        return handler(args)
    except (ConfigError, InvalidCandidate, CliError) as err:
        print(f"ropenope {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ropenope {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
