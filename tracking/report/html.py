"""The report as one self-contained HTML page: the sections of
:mod:`tracking.report.content`, images embedded as base64 PNG, no scripts, nothing
fetched. The page's only style sheet is :data:`CSS`."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from tracking.report.content import (
    Bullets,
    Figure,
    Findings,
    ReportInput,
    Section,
    TableBlock,
    Text,
    overview,
)
from tracking.report.tables import Table
from tracking.stats import Verdict

__all__ = ["CSS", "render_html"]

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em;
       color: #1f2328; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f6f8fa; }
td.text { text-align: left; }
td small { color: #6e7781; display: block; }
code { background: #f6f8fa; padding: 0 3px; }
.badge { color: white; border-radius: 4px; padding: 1px 6px; font-size: 12px;
         font-variant: small-caps; }
.badge.supported { background: #1a7f37; }
.badge.contradicted { background: #cf222e; }
.badge.undecided { background: #6e7781; }
.badge.invalid { background: #9a6700; }
.holm { font-size: 12px; color: #57606a; }
.findings li { margin-bottom: 0.8em; }
.detail { color: #424a53; font-size: 13px; display: block; }
.rule, .meta { color: #57606a; font-size: 13px; }
span.rule { display: block; font-style: italic; }
figure { margin: 0.5em 0 1.5em; }
figure img { max-width: 100%; }
"""


def inline(text: str) -> str:
    """``**bold**``, ``*italic*`` and ```code``` spans to HTML, everything else escaped."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![\w*])\*(\S.*?)\*(?![\w*])", r"<i>\1</i>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def table_html(t: Table) -> str:
    e = html.escape
    out = ["<table><thead><tr>", *[f"<th>{e(h)}</th>" for h in t.header], "</tr></thead><tbody>"]
    for row in t.rows:
        out.append("<tr>")
        for k, (main, sub) in enumerate(row):
            text = k < t.text_columns or not any(ch.isdigit() for ch in main)
            small = f"<small>{e(sub)}</small>" if sub else ""
            out.append(f"<td{' class=text' if text else ''}>{e(main)}{small}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _figure(block: Figure) -> str:
    alt = html.escape(block.alt)
    if block.path is None:
        return f"<p>No data for this figure ({alt}).</p>"
    data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"></figure>'


def _findings(block: Findings) -> str:
    e = html.escape
    items = ['<ul class="findings">']
    for f in block.findings:
        v = Verdict(f.verdict).value
        holm = (
            ""
            if f.family_verdict is None
            else f" <span class='holm'>Holm across {f.family_size}: {f.family_verdict.value}</span>"
        )
        items.append(
            f'<li><span class="badge {v}">{v}</span>{holm} <code>{e(f.key)}</code> '
            f"<b>{e(f.claim)}</b><span class='detail'>{e(f.detail)}</span>"
            f"<span class='rule'>Rule: {e(f.rule)}</span></li>"
        )
    items.append("</ul>")
    return "\n".join(items)


def _block(block: object) -> str:
    if isinstance(block, Text):
        cls = f" class='{block.style}'" if block.style else ""
        return f"<p{cls}>{inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, TableBlock):
        return table_html(block.table) if block.table.rows else f"<p>{html.escape(block.empty)}</p>"
    if isinstance(block, Figure):
        return _figure(block)
    if isinstance(block, Findings):
        return _findings(block)
    raise TypeError(f"unknown block {type(block).__name__}")


def render_html(r: ReportInput, sections: Sequence[Section]) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(r.study_name)} — ropenope report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Study <code>{e(r.study_name)}</code>: RoPE / NoPE ablation report</h1>",
        f"<p class='meta'>Generated {e(r.created)}. {inline(overview(r))}</p>",
    ]
    for s in sections:
        parts.append(f'<h2 id="{s.id}">{e(s.title)}</h2>')
        parts += [_block(b) for b in s.blocks]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
