"""The HTML report of an MLflow run (``hybridrec report --run ID``), and of a run being written.

A tracked train or evaluate run holds what the page needs: its evaluation as the artifact
``reports.json`` (``{model: ModelReport.to_dict()}``), the resolved config as params
(``evaluation.k``, ``evaluation.target``), and for a train run the stored version's
manifest (``bundle/manifest.json``), with the cold-start and feature-importance sections
when the evaluation recorded them. The history is the experiment's train runs, one per
stored version, with the target metric of each one's default model. The page itself is
`hybridrec.evaluation.html_report`'s.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybridrec.config import TrackingConfig
from hybridrec.errors import DataError
from hybridrec.evaluation.html_report import (
    ReportData,
    VersionRow,
    manifest_facts,
    report_from_metrics,
)
from hybridrec.tracking.record import metric_key

__all__ = ["REPORT_ARTIFACT", "report_from_run", "run_report", "store_tracking"]

#: The artifact name of the page a train or evaluate run stores.
REPORT_ARTIFACT = "report.html"
_REPORTS = "reports.json"
_MANIFEST = "bundle/manifest.json"
#: ``evaluate``'s cold-item and cold-user evaluations (`RunRecord.add_cold_start`).
COLD_START_ARTIFACT = "cold_start.json"


def store_tracking(model_dir: str | Path) -> TrackingConfig:
    """The ``[tracking]`` settings the store's current version was trained with (or defaults)."""
    from hybridrec.bundle.store import ModelStore

    try:
        raw = (ModelStore(model_dir).manifest().get("config") or {}).get("tracking") or {}
        return TrackingConfig.model_validate(raw)
    except Exception:
        return TrackingConfig()


def _params_evaluation(params: Mapping[str, str]) -> tuple[list[int] | None, str | None]:
    """The cutoffs and the target from a run's flattened config."""
    ks: list[int] | None = None
    try:
        raw = json.loads(params.get("evaluation.k", "null"))
        if isinstance(raw, list) and raw:
            ks = [int(k) for k in raw]
    except (ValueError, TypeError):
        ks = None
    return ks, params.get("evaluation.target") or None


def report_from_run(
    params: Mapping[str, str],
    tags: Mapping[str, str],
    metrics: Mapping[str, Any],
    *,
    manifest: Mapping[str, Any] | None = None,
    history: list[VersionRow] | None = None,
    run_id: str | None = None,
    cold_start: Mapping[str, Any] | None = None,
) -> ReportData:
    """The page of a run from its params, tags, evaluation and (train runs) manifest.

    ``cold_start`` (``{"cold_items" | "cold_users": {model: ModelReport.to_dict()}}``, as
    ``evaluate`` records it) adds the cold-start tables.

    Raises:
        DataError: The run holds no evaluation.
    """
    kind = tags.get("hybridrec.kind", "run")
    version = tags.get("bundle_version")
    ks, target = _params_evaluation(params)
    facts = {}
    if run_id:
        facts["MLflow run"] = run_id
    facts["kind"] = kind
    facts |= manifest_facts(manifest or {})
    if version and "version" not in facts:
        facts["version"] = version
    for role in ("train", "test"):
        shape = ", ".join(
            f"{tags[key]} {what}"
            for what in ("rows", "users", "items")
            if (key := f"data.{role}.{what}") in tags
        )
        if shape:
            source = tags.get(f"data.{role}.source")
            facts[f"{role} data"] = f"{source} ({shape})" if source else shape
    title = f"hybridrec report: {kind} run" + (f" of version {version}" if version else "")
    if not metrics:
        raise DataError(
            f"MLflow run {run_id or ''} ({kind}) has no evaluation (nothing was evaluated)"
        )
    if cold_start:
        evaluation = {**((manifest or {}).get("evaluation") or {}), "cold_start": cold_start}
        manifest = {**(manifest or {}), "evaluation": evaluation}
    return report_from_metrics(
        metrics,
        ks=ks,
        target=target,
        title=title,
        default_model=tags.get("default_model") or None,
        facts=facts,
        manifest=manifest,
        history=history or [],
    )


def _client(uri: str) -> Any:
    """A client of an existing store (a missing SQLite file is not created)."""
    from hybridrec.tracking.client import _open_client

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise DataError(f"no MLflow store at {uri} (no tracked run yet; MLFLOW_TRACKING_URI?)")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # Two small JSON files: no progress bars around the one line the command prints.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return _open_client(uri)


def _artifact(client: Any, run_id: str, path: str) -> Any:
    """A JSON artifact of the run, or None when it has none by that name."""
    folder = path.rpartition("/")[0] or None
    if path not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory(prefix="hybridrec-report-") as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return json.loads(Path(local).read_text(encoding="utf-8"))


def _history(client: Any, experiment_id: str, target: str, reported: str | None) -> list[Any]:
    """The experiment's train runs, oldest first: one row per stored version."""
    runs = client.search_runs(
        [experiment_id],
        filter_string="tags.`hybridrec.kind` = 'train'",
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        version = tags.get("bundle_version")
        if not version:
            continue
        default = tags.get("default_model", "")
        value = metrics.get(metric_key(default, target))
        models = sorted({key.split("/")[0] for key in metrics if key.endswith("fit_seconds")})
        rows.append(
            VersionRow(
                version=version,
                created_at=_iso(run.info.start_time),
                default_model=default,
                value=value if value is not None and math.isfinite(value) else None,
                models=models,
                reported=version == reported,
            )
        )
    return rows


def _iso(ms: int | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else ""


def run_report(run_id: str, config: TrackingConfig | None = None) -> ReportData:
    """The page of the MLflow run ``run_id`` in the store of ``config`` (see `resolve_uri`).

    Raises:
        DataError: mlflow is not installed, the store or the run does not exist, or the
            run holds no evaluation.
    """
    from hybridrec.tracking.client import _quiet, _shown, _summary, resolve_uri

    try:
        import mlflow  # noqa: F401 - only whether it imports
    except ImportError:
        raise DataError(
            "--run reads MLflow, which is not installed: pip install 'hybridrec[track]'"
        ) from None
    from mlflow.exceptions import MlflowException

    uri = resolve_uri(config or TrackingConfig())
    with _quiet():
        try:
            client = _client(uri)
            run = client.get_run(run_id)
        except DataError:
            raise
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc):
                raise DataError(f"no MLflow run {run_id!r} in {_shown(uri)}") from None
            raise DataError(f"MLflow run {run_id!r}: {_summary(exc)}") from None
        except Exception as exc:
            raise DataError(f"MLflow store {_shown(uri)}: {_summary(exc)}") from None
        try:
            metrics = _artifact(client, run_id, _REPORTS)
            manifest = _artifact(client, run_id, _MANIFEST)
            cold_start = _artifact(client, run_id, COLD_START_ARTIFACT)
        except Exception as exc:
            raise DataError(f"MLflow run {run_id}: its artifacts: {_summary(exc)}") from None
        tags, params = run.data.tags, run.data.params
        kind = tags.get("hybridrec.kind", "run")
        if not metrics:
            raise DataError(
                f"MLflow run {run_id} ({kind}) has no evaluation (no {_REPORTS} artifact "
                "with a model in it); report a train or evaluate run that evaluated"
            )
        _, target = _params_evaluation(params)
        history = _history(
            client, run.info.experiment_id, target or "ndcg@10", tags.get("bundle_version")
        )
    return report_from_run(
        params,
        tags,
        metrics,
        manifest=manifest,
        history=history,
        run_id=run_id,
        cold_start=cold_start,
    )
