"""The study report: what each variant is, the per-candidate table over seeds, the
hypotheses judged on the data, rank stability, curves, NIAH heatmaps, attention-mass
profiles and the Pareto front of candidate means.

One module per job: :mod:`~tracking.report.build` (reading, judging, writing the files),
:mod:`~tracking.report.content` (what the report says, as sections of blocks),
:mod:`~tracking.report.tables`, :mod:`~tracking.report.figures`,
:mod:`~tracking.report.markdown` and :mod:`~tracking.report.html` (rendering, the CSS),
:mod:`~tracking.report.summary` (the JSON), :mod:`~tracking.report.upload` (MLflow).
"""

from tracking.report.build import (
    HTML_NAME,
    MD_NAME,
    SUMMARY_NAME,
    build_report,
    judge,
    render_report,
)
from tracking.report.upload import log_study_artifacts

__all__ = [
    "HTML_NAME",
    "MD_NAME",
    "SUMMARY_NAME",
    "build_report",
    "judge",
    "log_study_artifacts",
    "render_report",
]
