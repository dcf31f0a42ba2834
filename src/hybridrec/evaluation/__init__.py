"""Offline evaluation: pure metric functions, an evaluator, reports and the HTML page."""

from hybridrec.evaluation.evaluator import SEGMENTS, Evaluator, ModelReport
from hybridrec.evaluation.html_report import (
    ReportData,
    render_html,
    report_from_manifest,
    version_report,
    write_report,
)
from hybridrec.evaluation.report import (
    comparison_table,
    plot_reports,
    reports_figure,
    reports_to_json,
    segment_table,
)

__all__ = [
    "SEGMENTS",
    "Evaluator",
    "ModelReport",
    "ReportData",
    "comparison_table",
    "plot_reports",
    "render_html",
    "report_from_manifest",
    "reports_figure",
    "reports_to_json",
    "segment_table",
    "version_report",
    "write_report",
]
