"""The longest functions per package: ``python tools/function_lengths.py [ROOT] [-n N]``.

A function's length is its lines from ``def`` (decorators excluded) to its last line, nested
functions included in their parent's length and listed on their own too.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGES = ("space", "workers", "tracking", "search")


def function_lengths(root: Path, package: str) -> list[tuple[int, str]]:
    """(lines, ``path:line name``) of every function and method under ``root/package``."""
    out = []
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                out.append((lines, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=".", help="the repository (default: .)")
    parser.add_argument("-n", type=int, default=1, help="functions shown per package")
    args = parser.parse_args()
    for package in PACKAGES:
        for lines, where in function_lengths(Path(args.root), package)[: args.n]:
            print(f"{package:9} {lines:4}  {where}")


if __name__ == "__main__":
    main()
