"""Reading a sweep file's YAML safely: bounded size, time and memory, and no silent merges.

A sweep file is user input, sometimes hostile. :func:`read_yaml_file` and
:func:`parse_yaml` turn every way a file can be malformed into a :class:`ConfigError`
with one line that says where and why:

- not a readable file, too large, not UTF-8 text, binary (NUL bytes), not YAML;
- a key given twice in one mapping, at any depth (YAML's "last one wins" would silently
  drop a value the researcher wrote);
- anchors and aliases that expand beyond :data:`MAX_NODES` values (the "billion laughs"
  bomb), or refer to themselves;
- nesting deeper than :data:`MAX_DEPTH`;
- mapping keys that are not plain scalars (a list or mapping as a key);
- integers longer than :data:`MAX_INT_DIGITS` digits (Python refuses to convert more
  than 4300 digits, with a traceback; no setting needs more than a few).

YAML 1.1 reads ``1e4`` as a string; researchers mean a number, so exponent floats without
a dot are numbers here. Values echoed in messages are cut to :data:`ECHO_CHARS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from space.errors import ConfigError

MAX_FILE_BYTES = 1_000_000  # a sweep file is a few KB; more is a mistake or an attack
MAX_NODES = 100_000  # values after expanding aliases
MAX_DEPTH = 32  # nesting of mappings and lists
ECHO_CHARS = 60
MAX_INT_DIGITS = 100  # 10**100 is past every count, size and seed a sweep file holds
_INT_TAG = "tag:yaml.org,2002:int"


def echo(value: Any) -> str:
    """``repr(value)`` cut to a short prefix, for error messages."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a self-referencing value, a huge int
        text = f"<{type(value).__name__}>"
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate and non-scalar keys, with numbers like ``1e4``."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep=deep)
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base": merged keys may be overridden, that is the point
            if not isinstance(key_node, yaml.ScalarNode):
                raise _KeyProblem(
                    key_node, "a mapping key must be a plain value, not a list or mapping"
                )
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _KeyProblem(
                    key_node,
                    f"key {echo(key)} appears twice in one mapping "
                    f"(first at line {seen[key].start_mark.line + 1}); remove one",
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


class _KeyProblem(yaml.YAMLError):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1
        self.message = message


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _check_size(root: yaml.Node) -> None:
    """Expanded size and depth of a composed document, without expanding it: aliases
    share their anchor's node, so sizes are counted once per node (memoised) and cycles
    are found by the nodes on the current path."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    on_path: set[int] = set()

    def visit(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key], depths[key]
        if key in on_path:
            raise ConfigError.at(
                f"line {node.start_mark.line + 1}", "an alias refers to the value that contains it"
            )
        if isinstance(node, yaml.ScalarNode):
            return 1, 0
        on_path.add(key)
        size, depth = 1, 0
        children = (
            [v for pair in node.value for v in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        for child in children:
            child_size, child_depth = visit(child)
            size += child_size
            depth = max(depth, child_depth + 1)
            if size > MAX_NODES:
                raise ConfigError.at(
                    f"line {node.start_mark.line + 1}",
                    f"the file expands to more than {MAX_NODES:,} values (YAML aliases?)",
                )
            if depth > MAX_DEPTH:
                raise ConfigError.at(
                    f"line {node.start_mark.line + 1}",
                    f"nested more than {MAX_DEPTH} levels deep",
                )
        on_path.discard(key)
        sizes[key], depths[key] = size, depth
        return size, depth

    visit(root)


def _check_integers(root: yaml.Node) -> None:
    """Refuse an integer literal of more than :data:`MAX_INT_DIGITS` digits, naming its key
    path (``train.steps``, ``space.local_window.choice[1]``), before it is converted. Each
    node is visited once (aliases share nodes), so this is linear in the file."""
    seen: set[int] = set()

    def visit(node: yaml.Node, path: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            digits = sum(ch.isdigit() for ch in node.value) if node.tag == _INT_TAG else 0
            if digits > MAX_INT_DIGITS:
                raise ConfigError.at(
                    path or f"line {node.start_mark.line + 1}",
                    f"an integer of {digits:,} digits (line {node.start_mark.line + 1}); "
                    f"numbers here have at most {MAX_INT_DIGITS} digits",
                )
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                visit(key_node, path)
                key = key_node.value[:ECHO_CHARS] if isinstance(key_node, yaml.ScalarNode) else "?"
                visit(value_node, f"{path}.{key}" if path else key)
        else:
            for i, item in enumerate(node.value):
                visit(item, f"{path}[{i}]")

    visit(root, "")


def parse_yaml(text: str, source: str | None = None) -> Any:
    """The YAML document in ``text`` (one document; empty text is ``None``)."""
    if "\x00" in text:
        raise ConfigError([("", "binary data (NUL bytes), not a YAML text file")], source)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_size(node)
            _check_integers(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except ConfigError as err:
        raise ConfigError(err.problems, source) from None
    except _KeyProblem as err:
        raise ConfigError([(f"line {err.line}", err.message)], source) from None
    except yaml.YAMLError as err:
        raise ConfigError([("", f"not valid YAML: {_one_line(err)}")], source) from None
    except RecursionError:
        raise ConfigError([("", f"nested more than {MAX_DEPTH} levels deep")], source) from None


def _one_line(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"[:200]


def read_yaml_file(path: str | Path) -> tuple[Any, str]:
    """The parsed document and the text of a sweep file. Raises ConfigError."""
    path = Path(path)
    source = str(path)
    try:
        if not path.is_file():
            raise ConfigError([("", f"no such file: {path}")], source)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                [("", f"{size:,} bytes; a sweep file is at most {MAX_FILE_BYTES:,} bytes")], source
            )
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError([("", f"cannot read the file: {err.strerror}")], source) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            [("", f"not UTF-8 text (byte {err.start}: {data[err.start : err.start + 1]!r})")],
            source,
        ) from None
    return parse_yaml(text, source), text


def frozen(value: Any) -> Any:
    """YAML lists as tuples, all the way down: the schema's models are frozen and strict."""
    if isinstance(value, Mapping):
        return {k: frozen(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    return value
