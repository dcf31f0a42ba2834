"""Offline evaluation: pure metric functions, an evaluator, and reports."""

from hybridrec.evaluation.evaluator import SEGMENTS, Evaluator, ModelReport
from hybridrec.evaluation.report import (
    comparison_table,
    plot_reports,
    reports_to_json,
    segment_table,
)

__all__ = [
    "SEGMENTS",
    "Evaluator",
    "ModelReport",
    "comparison_table",
    "plot_reports",
    "reports_to_json",
    "segment_table",
]
