"""The documentation site: generated references that cover the parser and the schema,
a README whose command table is the parser's, and a strict build whose pages open in a
browser with no console error."""

from __future__ import annotations

import argparse
import functools
import http.server
import importlib
import os
import re
import shlex
import subprocess
import sys
import threading
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from search.cli import build_parser
from space.hypotheses import Hypothesis
from space.knobs import KNOB_NAMES
from space.schema import SweepConfig
from space.sections import SECTIONS, PresetEntry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import docs_reference  # noqa: E402  (tools/ is not a package: the MkDocs hook's module)

sys.path.remove(str(ROOT / "tools"))


def _commands() -> dict:
    return docs_reference.subcommands(build_parser())


def test_cli_reference_has_every_command_and_option():
    page = docs_reference.cli_reference()
    commands = _commands()
    assert len(commands) >= 10
    for name, sub in commands.items():
        assert f"## `ropenope {name}` {{#ropenope-{name}}}" in page, name
        section = page.split(f"## `ropenope {name}`", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"`{option}" in section or f", {option}" in section, (name, option)
            if not action.option_strings:
                assert f"| `{action.metavar or action.dest}` |" in section, (name, action.dest)


def _models(model: type[BaseModel], found: dict) -> dict:
    """``model`` and every model its fields hold, each once."""
    found.setdefault(model, None)
    for field in model.model_fields.values():
        for sub in docs_reference._models_in(field.annotation):
            if sub not in found:
                _models(sub, found)
    return found


def _sections(page: str) -> dict[str, set[str]]:
    """Each ``### `path``` section of the page -> the keys its table lists."""
    out = {}
    for chunk in page.split("\n### `")[1:]:
        path = chunk.split("`", 1)[0]
        out[path] = set(re.findall(r"^\| `([^`]+)` \|", chunk, re.M))
    return out


def test_sweep_file_reference_has_every_key_and_knob():
    page = docs_reference.sweep_file_reference()
    sections = _sections(page)
    fields = SweepConfig.model_fields
    roots: dict[type[BaseModel], str] = {PresetEntry: "presets[]", Hypothesis: "hypotheses[]"}
    for name in SECTIONS:
        assert f"[`{name}`](#{name})" in page, name
        if name not in ("presets", "hypotheses"):
            roots.update({m: name for m in docs_reference._models_in(fields[name].annotation)})
    for model, path in roots.items():  # a section's own keys, at its own path
        assert {f"{path}.{key}" for key in model.model_fields} <= sections[path], path
    models: dict = {}
    for model in roots:
        _models(model, models)
    assert len(models) > 15
    for model in models:  # every nested model written out once, all its keys
        assert any(
            {f"{path}.{key}" for key in model.model_fields} <= keys
            for path, keys in sections.items()
        ), model.__name__
    assert {f"space.{knob}" for knob in KNOB_NAMES} <= sections["space"]
    # the types, defaults and bounds come from the schema
    assert "| `train.seq_len` | `integer` | **required** | >= 8" in page
    assert (
        "| `study.sampler` | `'tpe' \\| 'nsga2' \\| 'gp' \\| 'random' \\| 'grid'` | `tpe` |" in page
    )
    assert "| `study.dedup` | `boolean` | `true` |" in page


def test_the_anchors_of_every_section_are_distinct():
    page = docs_reference.sweep_file_reference()
    anchors = re.findall(r"\{#([\w-]+)\}", page)
    assert len(anchors) == len(set(anchors)), anchors


def test_api_reference_names_resolve():
    for package in ("space", "workers", "tracking", "search"):
        names = docs_reference.public_names(package)
        assert names and set(names) == set(importlib.import_module(package).__all__)
        for name, path in names.items():
            module, _, attr = path.rpartition(".")
            assert hasattr(importlib.import_module(module), attr), path
            assert attr == name


def _readme_command_rows() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Every command", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `ropenope ([\w-]+)` \| [^|]+ \| `([^`]+)` \|$", table, re.M)
    return dict(rows)


def test_readme_lists_every_command_with_an_example_that_parses():
    rows = _readme_command_rows()
    assert set(rows) == set(_commands())
    parser = build_parser()
    for name, example in rows.items():
        argv = shlex.split(example)
        assert argv[:2] == ["ropenope", name], example
        assert parser.parse_args(argv[1:]).command == name


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first = next(i for i, line in enumerate(lines) if line.startswith("| 0 | rope"))
    assert first < 60  # what `make demo` prints, early
    for link in re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines)):
        assert (ROOT / link).is_file(), link


# -- the built site ---------------------------------------------------------------------


@pytest.mark.slow
def test_site_builds_strictly_and_its_pages_open_without_console_errors(tmp_path):
    from browser import open_page, screenshot

    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    pages = [p for p in pages if p != "404.html" and not p.startswith("assets/")]
    assert {"index.html", "reference/cli.html", "reference/sweep-file.html"} <= set(pages)
    assert len(pages) >= 20

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with open_page(f"{base}/index.html", tmp_path / "live", offline=True) as page:
            for path in pages:
                page.console_errors.clear()
                page.goto(f"{base}/{path}")
                title = page.evaluate("document.querySelector('h1') && document.title")
                assert title, path
                assert not page.console_errors, (path, page.console_errors)
            outside = [u for u in page.requests if not u.startswith((base, "data:"))]
            assert not outside, outside
            # the search index loads and finds a glossary term
            page.goto(f"{base}/index.html?q=hypothesis")
            page.wait_for("document.querySelectorAll('.md-search-result__item').length > 0")
            assert not page.console_errors, page.console_errors
        pixels = screenshot(f"{base}/reference/cli.html", tmp_path / "cli.png", tmp_path / "s")
        assert (pixels.min(axis=-1) < 240).mean() > 0.02  # not a blank page
    finally:
        server.shutdown()
        server.server_close()


def test_typing_helpers_name_the_types():
    assert docs_reference._type_name(int | None) == "integer | null"
    assert docs_reference._type_name(tuple[int, ...]) == "list of integer"
    assert docs_reference._type_name(typing.Literal["a", "b"]) == "'a' | 'b'"
