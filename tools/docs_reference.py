"""The generated pages of the documentation site, and the MkDocs hook that writes them.

Two references are never written by hand, so they cannot drift from the code:

- the CLI reference, walked from the argparse parser (:func:`search.cli.build_parser`):
  every subcommand, its usage line, its description and every argument;
- the sweep-file reference, walked from the schema: the top-level keys
  (:data:`space.sections.SECTIONS`), each section's pydantic model in
  :mod:`space.sections` / :mod:`space.hypotheses` (every key, its type, default and
  bounds, and the comment written beside it in the source) and the knob vocabulary of
  :mod:`space.knobs` (every knob, its kind, default and values).

A page holds a marker, ``<!-- generated: cli -->`` or ``<!-- generated: sweep-file -->``,
and the hook (``hooks:`` in ``mkdocs.yml``) replaces it with the generated Markdown.
``tests/test_docs.py`` checks the output against the parser and the schema.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

MARKERS = {
    "<!-- generated: cli -->": "cli_reference",
    "<!-- generated: sweep-file -->": "sweep_file_reference",
}
REPO = Path(__file__).resolve().parents[1]
API_MARKER = re.compile(r"<!-- generated: api (\w+) -->")


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: Any) -> str:
    return f"`{_cell(text)}`" if str(text) else ""


# -- the CLI ----------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands, by name, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices.items())
    return {}


def _argument_row(action: argparse.Action) -> str:
    if action.option_strings:
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
            name += f" {metavar if isinstance(metavar, str) else ' '.join(metavar)}"
    else:
        name = action.metavar if isinstance(action.metavar, str) else action.dest
    default = action.default
    shown = (
        ""
        if default in (None, False, argparse.SUPPRESS) or action.nargs == 0
        else _code(repr(default) if isinstance(default, str) else default)
    )
    choices = ", ".join(_code(c) for c in action.choices) if action.choices else ""
    help_text = (action.help or "").replace("%(default)s", str(default)).replace("%%", "%")
    return f"| {_code(name)} | {_cell(help_text)} | {choices} | {shown} |"


def cli_reference() -> str:
    """Markdown for every ``ropenope`` subcommand, from the parser itself."""
    from search.cli import build_parser

    parser = build_parser()
    commands = subcommands(parser)
    lines = [
        "| command | what it does |",
        "| --- | --- |",
        *(
            f"| [`ropenope {name}`](#ropenope-{name}) | {_cell(sub.description or '')} |"
            for name, sub in commands.items()
        ),
        "",
    ]
    for name, sub in commands.items():
        usage = " ".join(sub.format_usage().split())
        usage = usage.removeprefix("usage: ")
        lines += [f"## `ropenope {name}` {{#ropenope-{name}}}", "", sub.description or "", ""]
        lines += ["```text", usage, "```", ""]
        actions = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if actions:
            lines += ["| argument | meaning | choices | default |", "| --- | --- | --- | --- |"]
            lines += [_argument_row(a) for a in actions]
            lines.append("")
    return "\n".join(lines)


# -- the sweep file ---------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if origin is dict:
        return f"mapping {_type_name(args[0])} -> {_type_name(args[1])}"
    if annotation is typing.Any:
        return "any"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation).replace("typing.", "")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's type holds (itself, in a union, tuple or dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for model in _models_in(arg):
            if model not in found:
                found.append(model)
    return found


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=",
           "max_length": "length <=", "pattern": "matches"}  # fmt: skip


def _bounds(field: Any) -> str:
    out = []
    for item in field.metadata:
        for attr, word in _BOUNDS.items():
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{word} {value}")
    return ", ".join(out)


def _yaml(value: Any) -> str:
    """A value as a sweep file writes it (JSON is YAML): null, true, [1, 2], {"a": 1}."""
    plain = to_jsonable_python(value)
    return plain if isinstance(plain, str) else json.dumps(plain)


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(the section's defaults)"
    return _code(_yaml(value))


def _source_comments(model: type[BaseModel]) -> dict[str, str]:
    """``name: type = ...  # comment``: the comment beside each field in the source."""
    try:
        source = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    comments = {}
    for line in source.splitlines():
        match = re.match(r"\s{4}(\w+):[^#]*#\s*(.+)$", line)
        if match and match.group(1) in model.model_fields:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def _doc(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    inherited = any(doc == inspect.getdoc(base) for base in model.__mro__[1:])
    return "" if inherited else " ".join(doc.split())


def _anchor(path: str) -> str:
    return path.replace(".", "-").replace("[]", "")


@functools.cache
def config_examples() -> dict[str, tuple[str, str]]:
    """Each key path -> (a value written for it, the file) from the shipped ``configs/``:
    the first file (by name) that sets it. Lists of mappings are spelled ``key[]``."""
    import yaml

    found: dict[str, tuple[str, str]] = {}

    def walk(value: Any, path: str, file: str) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, f"{path}.{key}" if path else str(key), file)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    walk(item, f"{path}[]", file)
        if path and path not in found:
            found[path] = (_yaml(value), file)

    for config in sorted((REPO / "configs").rglob("*.yaml")):
        raw = yaml.safe_load(config.read_text())
        if isinstance(raw, dict):
            walk(raw, "", config.relative_to(REPO).as_posix())
    return found


def _example(path: str) -> str:
    example = config_examples().get(path)
    if example is None:
        return ""
    value, file = example
    return f"{_code(value if len(value) <= 60 else value[:57] + '...')} ({file})"


def model_table(model: type[BaseModel], path: str, seen: dict[type, str]) -> list[str]:
    """The keys of ``model`` at ``path``, then the nested sections each key opens; a model
    met again (a predicate inside a predicate) links to where it is written out."""
    seen[model] = path
    comments = _source_comments(model)
    lines = [f"### `{path}` {{#{_anchor(path)}}}", ""]
    if _doc(model):
        lines += [_doc(model), ""]
    lines += [
        "| key | type | default | bounds | meaning | example (a shipped file) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        meaning = comments.get(name, field.description or "")
        for sub in _models_in(field.annotation):
            if sub in seen:
                meaning += f" (a `{sub.__name__}`: see [`{seen[sub]}`](#{_anchor(seen[sub])}))"
            else:
                many = "tuple" in str(field.annotation)
                nested.append((f"{path}.{name}{'[]' if many else ''}", sub))
                seen[sub] = nested[-1][0]
        lines.append(
            f"| `{path}.{name}` | {_code(_type_name(field.annotation))} | {_default(field)} "
            f"| {_cell(_bounds(field))} | {_cell(meaning)} | {_example(f'{path}.{name}')} |"
        )
    lines.append("")
    for sub_path, sub in nested:
        lines += model_table(sub, sub_path, seen)
    return lines


def knob_rows() -> list[tuple[str, str, Any, tuple[str, ...], bool, str]]:
    """Every knob of :data:`space.knobs.KNOBS`: (name, kind, default, values, nullable,
    meaning)."""
    from space.knobs import KNOBS

    return [(k.name, str(k.kind), k.default, k.values, k.nullable, k.doc) for k in KNOBS]


def knob_table() -> list[str]:
    lines = [
        "| knob | kind | default | values | null allowed | meaning | example (a shipped file) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, kind, default, values, nullable, meaning in knob_rows():
        lines.append(
            f"| `space.{name}` | {kind} | {_code(_yaml(default))} "
            f"| {', '.join(_code(v) for v in values)} | {'yes' if nullable else ''} "
            f"| {_cell(meaning)} | {_example(f'space.{name}')} |"
        )
    return lines


def sweep_file_reference() -> str:
    """Markdown for every key of a sweep file, from the schema's models and the knobs."""
    from space.hypotheses import Hypothesis
    from space.presets import BUILTIN_PRESETS
    from space.schema import SweepConfig
    from space.sections import SECTIONS, PresetEntry

    fields = SweepConfig.model_fields
    lines = [
        "## Top-level keys",
        "",
        "| key | type | default |",
        "| --- | --- | --- |",
    ]
    special = {"space": "mapping knob -> value or domain", "presets": "list of PresetEntry"}
    for name in SECTIONS:
        field = fields[name]
        kind = special.get(name, _type_name(field.annotation))
        default = "`[]`" if name == "presets" else _default(field)
        lines.append(f"| [`{name}`](#{name}) | {_code(kind)} | {default} |")
    lines.append("")
    seen: dict[type, str] = {}
    for name in SECTIONS:
        if name == "space":
            lines += [
                "### `space` {#space}",
                "",
                "Each knob is a plain value (fixed) or one domain: `{choice: [...]}`, "
                "`{int: [lo, hi], step: s}`, `{float: [lo, hi]}`, `{log: [lo, hi]}`, "
                "optionally with `when: {other_knob: value}`. An unset knob keeps its default.",
                "",
                *knob_table(),
                "",
            ]
        elif name == "presets":
            table = model_table(PresetEntry, "presets[]", seen)
            shipped = ", ".join(f"`{preset}`" for preset in BUILTIN_PRESETS)
            lines += [*table[:2], f"An item is a shipped preset's name ({shipped}) or:", ""]
            lines += table[2:]
        elif name == "hypotheses":
            lines += model_table(Hypothesis, "hypotheses[]", seen)
        elif name == "hypotheses_from":
            lines += [
                "### `hypotheses_from` {#hypotheses_from}",
                "",
                "A YAML file of `hypotheses:` (a path relative to the sweep file), "
                "instead of the sweep file's own.",
                "",
            ]
        else:
            for model in _models_in(fields[name].annotation):
                lines += model_table(model, name, seen)
    return "\n".join(lines)


# -- the API of a package ---------------------------------------------------------------


def public_names(package: str) -> dict[str, str]:
    """Each name of ``package.__all__`` -> the dotted path mkdocstrings documents it at.

    The packages that load their members lazily (a module ``__getattr__``) name each
    member's module in a table; the others import them, and the package path resolves.
    """
    module = importlib.import_module(package)
    where = getattr(module, "_EXPORTS", None) or getattr(module, "_WHERE", None) or {}
    return {name: f"{where.get(name, package)}.{name}" for name in module.__all__}


def api_reference(package: str) -> str:
    """mkdocstrings blocks for every public name of ``package``, in ``__all__``'s order."""
    lines = [f"::: {package}", "    options:", "      members: false", ""]
    for path in public_names(package).values():
        lines += [f"::: {path}", "    options:", "      heading_level: 2", ""]
    return "\n".join(lines)


# -- the MkDocs hook --------------------------------------------------------------------


# The docstrings are reStructuredText-flavoured: ``:func:`name``` renders as ":func:" and
# the name in code; the role's prefix is dropped from the page.
_ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub("", html)


def on_page_markdown(markdown: str, **_: Any) -> str:
    for marker, function in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, globals()[function]())
    return API_MARKER.sub(lambda m: api_reference(m.group(1)), markdown)
