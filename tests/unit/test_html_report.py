"""The HTML report page: self-contained, the numbers in it, optional sections only with data."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from hybridrec.bundle import ModelStore
from hybridrec.errors import DataError
from hybridrec.evaluation import ModelReport
from hybridrec.evaluation.html_report import (
    ReportData,
    model_reports,
    render_html,
    report_from_manifest,
    report_from_metrics,
    version_report,
    write_report,
)
from hybridrec.tracking.record import RunRecord, attach_report
from hybridrec.tracking.report import report_from_run

KS = (10, 20)
#: A reference to anything outside the page: a URL in an attribute, CSS, or a script.
EXTERNAL = re.compile(
    r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:|//|file:|ftp:)"""
    r"""|url\(|@import|<script|<link|<iframe|<object|<embed""",
    re.IGNORECASE,
)


def _report(name: str, ndcg10: float, *, users: int = 50) -> ModelReport:
    """A report with every metric at both cutoffs; ndcg@10 as given, the rest derived."""
    metrics: dict[str, float] = {}
    for k in KS:
        scale = 1.0 if k == 10 else 1.1
        for i, metric in enumerate(
            ("precision", "recall", "map", "ndcg", "hit_rate", "mrr", "coverage", "diversity")
        ):
            metrics[f"{metric}@{k}"] = round(ndcg10 * scale * (1 - 0.05 * (i - 3)), 6)
        metrics[f"novelty@{k}"] = 2.5
    segments = {
        "cold": {"users": 0, **{key: float("nan") for key in metrics}},
        "warm": {"users": 20, **{key: v * 0.8 for key, v in metrics.items()}},
        "hot": {"users": 30, **{key: v * 1.2 for key, v in metrics.items()}},
    }
    return ModelReport(name, metrics, segments, users, fit_seconds=1.25, eval_seconds=0.5)


def _metrics(**scores: float) -> dict[str, Any]:
    """A manifest's ``metrics``: ``{model: ModelReport.to_dict()}`` (strict JSON)."""
    payload = {name: _report(name, score).to_dict() for name, score in scores.items()}
    parsed: dict[str, Any] = json.loads(json.dumps(payload, allow_nan=False))
    return parsed


def _manifest(version: str = "v1", **extra: Any) -> dict[str, Any]:
    return {
        "version": version,
        "created_at": "2026-01-02T03:04:05+00:00",
        "default_model": "als",
        "models": {"popularity": {}, "als": {}, "itemknn": {}},
        "data": {"source": "ratings.csv", "rows": 1234, "users": 90, "items": 77},
        "code_version": "0123456789abcdef",
        "config": {"evaluation": {"k": list(KS), "target": "ndcg@10"}},
        "metrics": _metrics(popularity=0.0294, als=0.5213, itemknn=0.4918),
        "evaluation": {"target": "ndcg@10", "split": {"method": "random", "test": 0.1}},
        **extra,
    }


def _images(page: str) -> list[bytes]:
    sources = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)
    prefix = "data:image/png;base64,"
    assert all(s.startswith(prefix) for s in sources), [s[:40] for s in sources]
    return [base64.b64decode(s[len(prefix) :], validate=True) for s in sources]


def _assert_self_contained(page: str) -> None:
    found = EXTERNAL.findall(page)
    assert not found, found
    # Every tag attribute that names a resource is a data URI.
    for attr in re.findall(r"\b(?:src|href)\s*=\s*\"([^\"]*)\"", page):
        assert attr.startswith("data:"), attr[:60]


def test_the_page_is_self_contained_with_every_chart_embedded_as_png() -> None:
    page = render_html(report_from_manifest(_manifest()))
    assert page.startswith("<!DOCTYPE html>")
    _assert_self_contained(page)
    images = _images(page)
    # Segment bars and metric-vs-K curves; no history chart for a single version.
    assert len(images) == 2
    for png in images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_the_metric_values_the_version_and_the_data_appear() -> None:
    page = render_html(report_from_manifest(_manifest()))
    for text in (
        "version v1",
        "0.5213",  # als ndcg@10
        "0.4918",  # itemknn ndcg@10
        "0.0294",  # the baseline
        "ndcg@20",
        "novelty@10",
        "+1673%",  # als over popularity on the target
        "ratings.csv (1,234 rows, 90 users, 77 items)",
        "0123456789ab",
        "hot (30 users)",
        "fit s",
    ):
        assert text in page, text
    # The default model is marked; the best value of a column is bold.
    assert re.search(r"<td>als<span class=\"badge\">default</span></td>", page)
    assert '<td class="best">0.5213</td>' in page
    # Sections that need data the evaluation does not have are absent.
    assert "Cold start" not in page
    assert "feature importance" not in page.lower()


def test_cold_start_tables_appear_when_the_evaluation_has_them() -> None:
    cold = {
        "cold_items": _metrics(popularity=0.0, content=0.1234),
        "cold_users": _metrics(popularity=0.0456, als=0.0789),
    }
    manifest = _manifest(evaluation={"target": "ndcg@10", "cold_start": cold})
    data = report_from_manifest(manifest)
    assert set(data.cold_start) == {"cold_items", "cold_users"}
    page = render_html(data)
    assert "<h2>Cold start</h2>" in page
    assert "Cold items: 10% of the items held out entirely" in page
    assert "Cold users: 1-3 training interactions" in page
    assert "0.1234" in page and "0.0789" in page
    _assert_self_contained(page)


def test_the_rankers_feature_importance_is_read_from_the_manifest_when_present() -> None:
    importance = {"als_score": 120.0, "item_popularity": 45.5, "user_history_len": 7.25}
    models = {"popularity": {}, "als": {}, "ranked": {"feature_importance": importance}}
    data = report_from_manifest(_manifest(models=models))
    assert data.feature_importance == {"ranked": importance}
    page = render_html(data)
    assert "Ranker feature importance" in page
    for feature in importance:
        assert feature in page
    assert "<td>45.5</td>" in page and "<td>7.25</td>" in page
    assert len(_images(page)) == 3  # the importance chart joins the two
    # The evaluation's own record (pairs, as a list) works too; the model's entry wins.
    listed = {"feature_importance": {"ranked": [["a", 1.0], ["b", 2.0]], "other": {"c": 3.0}}}
    data = report_from_manifest(_manifest(models=models, evaluation=listed))
    assert data.feature_importance == {"ranked": importance, "other": {"c": 3.0}}


def test_names_are_escaped() -> None:
    metrics = _metrics(als=0.5)
    metrics["<script>alert(1)</script>"] = metrics.pop("als")
    page = render_html(report_from_metrics(metrics, title="a & <b>"))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<h1>a &amp; &lt;b&gt;</h1>" in page


def test_metric_dicts_round_trip_to_reports() -> None:
    original = _report("als", 0.5)
    (back,) = model_reports({"als": original.to_dict()})
    assert back.metrics == original.metrics
    assert back.n_users == original.n_users and back.fit_seconds == 1.25
    assert back.segments["hot"]["ndcg@10"] == original.segments["hot"]["ndcg@10"]
    assert back.segments["cold"]["ndcg@10"] != back.segments["cold"]["ndcg@10"]  # NaN


def test_cutoffs_and_target_default_to_what_the_metrics_hold() -> None:
    data = report_from_metrics(_metrics(als=0.5))
    assert data.ks == [10, 20] and data.target == "ndcg@10"


def test_a_version_without_evaluation_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"version v9 has no evaluation \(trained with --no-ev"):
        report_from_manifest({**_manifest("v9"), "metrics": {}})


def _store(root: Path, scores: list[float | None]) -> tuple[ModelStore, list[str]]:
    store = ModelStore(root)
    versions = []
    for score in scores:
        manifest = _manifest()
        manifest.pop("version")
        manifest.pop("created_at")
        if score is None:
            manifest["metrics"] = {}
        else:
            manifest["metrics"] = _metrics(popularity=0.03, als=score)
        versions.append(store.write_version(lambda _path, m=manifest: m))
    return store, versions


def test_a_stored_versions_page_has_the_history_of_the_store(tmp_path: Path) -> None:
    store, versions = _store(tmp_path / "models", [0.41, None, 0.4567, 0.52])
    store.promote(versions[2])
    data = version_report(store.root, versions[3])
    assert [row.version for row in data.history] == versions
    assert [row.value for row in data.history] == [0.41, None, 0.4567, 0.52]
    assert [row.current for row in data.history] == [False, False, True, False]
    assert [row.reported for row in data.history] == [False, False, False, True]
    page = render_html(data)
    assert "<h2>Versions</h2>" in page
    for version in versions:
        assert version in page
    assert "0.4567" in page
    assert len(_images(page)) == 3  # segment bars, curves, the history line
    _assert_self_contained(page)
    # The current version by default; the no-evaluation one and unknown ones are errors.
    assert version_report(store.root).facts["version"] == versions[2]
    with pytest.raises(DataError, match="has no evaluation"):
        version_report(store.root, versions[1])
    with pytest.raises(DataError, match="no version 'nope'"):
        version_report(store.root, "nope")
    with pytest.raises(DataError, match="no trained model here"):
        version_report(tmp_path / "empty")


def test_the_page_is_written_atomically_and_only_as_html(tmp_path: Path) -> None:
    data = report_from_manifest(_manifest())
    path = write_report(data, tmp_path / "out" / "report.html")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    with pytest.raises(DataError, match=r"report\.txt: the report is an HTML page"):
        write_report(data, tmp_path / "report.txt")


def test_a_run_page_reads_the_cutoffs_and_target_from_the_flattened_config() -> None:
    params = {"evaluation.k": "[5, 10]", "evaluation.target": "recall@5"}
    tags = {
        "hybridrec.kind": "evaluate",
        "data.test.rows": "306",
        "data.test.users": "90",
        "default_model": "als",
    }
    metrics = _metrics(popularity=0.03, als=0.5)
    data = report_from_run(params, tags, metrics, run_id="abc123")
    assert data.ks == [5, 10] and data.target == "recall@5"
    assert data.facts["MLflow run"] == "abc123"
    assert data.facts["test data"] == "306 rows, 90 users"
    assert data.title == "hybridrec report: evaluate run"
    with pytest.raises(DataError, match="has no evaluation"):
        report_from_run(params, tags, {}, run_id="abc123")


def test_a_finished_evaluate_run_carries_its_page_as_an_artifact() -> None:
    record = RunRecord("evaluate")
    record.params = {"evaluation.k": "[10, 20]", "evaluation.target": "ndcg@10"}
    record.add_reports([_report("popularity", 0.03), _report("als", 0.5)])
    attach_report(record)
    page = record.texts["report.html"]
    assert "0.5000" in page and "evaluate run" in page
    _assert_self_contained(page)
    # Failed runs, tune runs and runs that evaluated nothing carry none.
    for kind, status, reports in (
        ("evaluate", "FAILED", True),
        ("tune", "FINISHED", True),
        ("train", "FINISHED", False),
    ):
        other = RunRecord(kind, status=status)
        other.add_reports([_report("als", 0.5)] if reports else [])
        attach_report(other)
        assert "report.html" not in other.texts, (kind, status)


def test_an_evaluate_runs_cold_start_splits_are_recorded_and_on_its_page() -> None:
    record = RunRecord("evaluate")
    record.params = {"evaluation.k": "[10, 20]", "evaluation.target": "ndcg@10"}
    record.add_reports([_report("popularity", 0.03), _report("als", 0.5)])
    record.add_cold_start(
        {
            "cold_items": [_report("popularity", 0.0), _report("content", 0.1234)],
            "cold_users": [_report("als", 0.0789)],
        }
    )
    assert record.metrics["cold_items/content/ndcg_at_10"] == pytest.approx(0.1234)
    assert record.metrics["cold_users/als/ndcg_at_10"] == pytest.approx(0.0789)
    stored = json.loads(record.texts["cold_start.json"])
    assert set(stored) == {"cold_items", "cold_users"} and set(stored["cold_items"]) == {
        "popularity",
        "content",
    }
    attach_report(record)
    page = record.texts["report.html"]
    assert "<h2>Cold start</h2>" in page and "0.1234" in page and "0.0789" in page
    _assert_self_contained(page)


def test_reports_data_holds_what_the_page_shows() -> None:
    data = ReportData("t", [_report("als", 0.5)], [10], "ndcg@10")
    page = render_html(data)
    assert "Versions" not in page  # no history given
    assert "@10" in page and "@20" not in page
