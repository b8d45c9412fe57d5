"""`ropenope space CONFIG`: validate a sweep file and show its knobs and preset layer tables."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "validate a sweep file and show its knobs and preset layer tables"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help=HELP, description=HELP)
    p.add_argument("config", help="sweep file (YAML)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    from space.report import describe_space, format_space
    from space.schema import load_config

    config = load_config(args.config)
    for path, message in config.warnings:
        print(f"ropenope space: warning: {path}: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps(describe_space(config), indent=2, default=str))
    else:
        print(format_space(config))
    return 0
