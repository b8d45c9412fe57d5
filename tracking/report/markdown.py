"""The report as Markdown: the sections of :mod:`tracking.report.content`, images as
PNG files beside the page."""

from __future__ import annotations

from collections.abc import Sequence

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

__all__ = ["render_markdown"]


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def table_lines(t: Table) -> list[str]:
    lines = [
        "| " + " | ".join(t.header) + " |",
        "| " + " | ".join("---" for _ in t.header) + " |",
    ]
    for row in t.rows:
        # Ranges ("[min, max]") follow the value; other details are HTML-only.
        cells = [_escape(main + (f" {sub}" if sub.startswith("[") else "")) for main, sub in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _block(block: object) -> list[str]:
    if isinstance(block, Text):
        return [f"_{block.text}_" if block.style else block.text, ""]
    if isinstance(block, Bullets):
        return [*(f"- {item}" for item in block.items), ""]
    if isinstance(block, TableBlock):
        return [*table_lines(block.table), ""] if block.table.rows else [block.empty, ""]
    if isinstance(block, Figure):
        if block.path is None:
            return [f"No data for this figure ({block.alt}).", ""]
        return [f"![{block.alt}]({block.name})", ""]
    if isinstance(block, Findings):
        lines = []
        for f in block.findings:
            holm = (
                ""
                if f.family_verdict is None
                else f" (Holm across {f.family_size}: {f.family_verdict.value})"
            )
            lines.append(f"- **{f.verdict.value.upper()}**{holm} — `{f.key}`: {f.claim}  ")
            lines.append(f"  {f.detail}  ")
            lines.append(f"  _Rule: {f.rule}_")
        return [*lines, ""]
    raise TypeError(f"unknown block {type(block).__name__}")


def render_markdown(r: ReportInput, sections: Sequence[Section]) -> str:
    lines = [f"# Study `{r.study_name}`: RoPE / NoPE ablation report", ""]
    lines += [f"_Generated {r.created}._ {overview(r)}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for block in s.blocks:
            lines += _block(block)
    return "\n".join(lines).rstrip("\n") + "\n"
