"""What one tracked run collects while it runs, before anything is sent to MLflow.

A run is collected in memory (params, metrics, tags, artifacts, the search trials) and
written when the command ends (`hybridrec.tracking.client`), so that MLflow is imported and
its store opened only once, after the work: a slow or unreachable store neither delays nor
fails training. The run being collected is a context variable: the tuner adds its trials
to it (`record_trials`) without the pipeline functions passing it around.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from hybridrec.config import PipelineConfig, TrackingConfig
    from hybridrec.evaluation.evaluator import ModelReport
    from hybridrec.pipeline.train import TrainResult

__all__ = [
    "RunRecord",
    "Trial",
    "active",
    "attach_report",
    "flatten",
    "metric_key",
    "record_trials",
    "tracked_run",
]

_ACTIVE: ContextVar[RunRecord | None] = ContextVar("hybridrec_tracked_run", default=None)


def metric_key(*parts: str) -> str:
    """An MLflow metric name: parts joined by ``/``, ``@`` (not allowed there) as ``_at_``."""
    return "/".join(parts).replace("@", "_at_")


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted keys; leaves as text (strings as they are, the rest as JSON)."""
    if isinstance(value, Mapping) and value:
        out: dict[str, str] = {}
        for key, sub in value.items():
            out |= flatten(sub, f"{prefix}.{key}" if prefix else str(key))
        return out
    if not prefix:
        return {}
    return {prefix: value if isinstance(value, str) else json.dumps(value, default=str)}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Trial:
    """One search trial: a nested run of the run that searched."""

    model: str
    number: int
    params: dict[str, Any]
    target: str
    score: float
    start: float | None = None
    end: float | None = None

    def metrics(self) -> dict[str, float]:
        """The trial's score under the target's metric name, and its seconds when timed."""
        out = {metric_key(self.target): self.score}
        if self.start is not None and self.end is not None:
            out["seconds"] = self.end - self.start
        return {k: float(v) for k, v in out.items() if _finite(v)}


@dataclass
class RunRecord:
    """A tracked run being collected.

    Attributes:
        kind: ``train``, ``evaluate`` or ``tune`` (the run's name and ``hybridrec.kind`` tag).
        config: The ``[tracking]`` settings of the run's pipeline config.
        versions: Store versions this run wrote: (store root, version, promoted).
        status: ``FINISHED``, or ``FAILED`` when the command raised.
    """

    kind: str
    config: TrackingConfig | None = None
    start: float = field(default_factory=time.time)
    end: float | None = None
    status: str = "FINISHED"
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    versions: list[tuple[Path, str, bool]] = field(default_factory=list)

    def add_config(self, cfg: PipelineConfig) -> None:
        """The whole resolved pipeline config, flattened, as params; its ``[tracking]``."""
        self.config = cfg.tracking
        self.params |= flatten(cfg.model_dump(mode="json"))

    def add_params(self, values: Mapping[str, Any], prefix: str) -> None:
        """More params under ``prefix`` (e.g. the hyperparameters tuning chose)."""
        self.params |= flatten(dict(values), prefix)

    def add_metrics(self, values: Mapping[str, Any], *prefix: str) -> None:
        """Numeric ``values`` as metrics named ``prefix/key`` (NaN and None left out)."""
        for key, value in values.items():
            if _finite(value):
                self.metrics[metric_key(*prefix, key)] = float(value)

    def add_reports(self, reports: Iterable[ModelReport]) -> None:
        """Every metric at every K of each model, overall and by segment, and its seconds."""
        for report in reports:
            self.add_metrics(report.metrics, report.name)
            self.add_metrics(
                {
                    "users": report.n_users,
                    "fit_seconds": report.fit_seconds,
                    "eval_seconds": report.eval_seconds,
                },
                report.name,
            )
            for segment, values in report.segments.items():
                self.add_metrics(values, report.name, segment)
        self.texts["reports.json"] = json.dumps(
            {r.name: r.to_dict() for r in reports}, indent=2, default=str
        )

    def add_cold_start(self, splits: Mapping[str, Iterable[ModelReport]]) -> None:
        """``evaluate``'s cold-item / cold-user evaluations, as metrics and an artifact.

        Metrics are named after the split (``cold_items/als/recall_at_20``); the artifact is
        ``cold_start.json`` (``{split: {model: ModelReport.to_dict()}}``).
        """
        stored: dict[str, dict[str, Any]] = {}
        for split, reports in splits.items():
            stored[split] = {}
            for report in reports:
                self.add_metrics(report.metrics, split, report.name)
                stored[split][report.name] = report.to_dict()
        if stored:
            self.texts["cold_start.json"] = json.dumps(stored, indent=2, default=str)

    def add_data(self, role: str, fp: Mapping[str, Any]) -> None:
        """A data fingerprint (`hybridrec.pipeline.train.fingerprint`) as ``data.*`` tags."""
        prefix = "data" if not role else f"data.{role}"
        self.tags |= {k: v for k, v in flatten(dict(fp), prefix).items() if v != "null"}

    def add_manifest(self, store_root: Path, version: str, *, promoted: bool) -> None:
        """A stored version: its tags (bundle and code version, data), final fit seconds."""
        from hybridrec.bundle.store import ModelStore

        store = ModelStore(store_root)
        manifest = store.manifest(version)
        self.versions.append((store.root.resolve(), version, promoted))
        self.tags["bundle_version"] = version
        self.tags["default_model"] = str(manifest.get("default_model", ""))
        if manifest.get("code_version"):
            self.tags["code_version"] = str(manifest["code_version"])
            self.tags["mlflow.source.git.commit"] = str(manifest["code_version"])
        if manifest.get("config_hash"):
            self.tags["config_hash"] = str(manifest["config_hash"])
        data = dict(manifest.get("data") or {})
        data.pop("conversion", None)
        self.add_data("", data)
        for name, info in (manifest.get("models") or {}).items():
            self.add_metrics({"final_fit_seconds": info.get("fit_seconds")}, name)
        self.artifacts.append((store.path(version) / "manifest.json", "bundle"))

    def add_train(self, result: TrainResult, store_root: Path, *, promoted: bool) -> None:
        """What ``train`` produced: its reports, the chosen hyperparameters, the version."""
        self.add_reports(result.reports)
        self.add_params(result.params, "chosen")
        self.add_manifest(store_root, result.version, promoted=promoted)

    def add_artifact(self, path: Path, folder: str | None = None) -> None:
        """A file to store with the run (a plot, the config a search wrote)."""
        if path.is_file():
            self.artifacts.append((path, folder))


def active() -> RunRecord | None:
    """The run being collected in this context, if any."""
    return _ACTIVE.get()


def record_trials(
    model: str,
    target: str,
    history: Sequence[tuple[dict[str, Any], float]],
    times: Sequence[tuple[datetime | None, datetime | None]] | None = None,
) -> None:
    """Add a search's trials (params, score; start and end times) to the active run."""
    run = _ACTIVE.get()
    if run is None:
        return
    for number, (params, score) in enumerate(history):
        start, end = times[number] if times and number < len(times) else (None, None)
        run.trials.append(
            Trial(
                model,
                number,
                dict(params),
                target,
                score,
                start.timestamp() if start else None,
                end.timestamp() if end else None,
            )
        )


@contextmanager
def tracked_run(
    kind: str, cfg: PipelineConfig | None = None, *, console: Console | None = None
) -> Iterator[RunRecord]:
    """Collect a run while the block runs; write it to MLflow when the block ends.

    The run is written whether the block succeeds or raises (status ``FAILED``), unless
    tracking is off (`hybridrec.tracking.client.tracking_enabled`) or no config was given
    (here or with `RunRecord.add_config` in the block). Writing never raises: a store that
    cannot be reached costs one warning line on ``console``.
    """
    from hybridrec.tracking.client import flush, tracking_enabled

    record = RunRecord(kind)
    if cfg is not None:
        record.add_config(cfg)
    token = _ACTIVE.set(record)
    try:
        yield record
    except Exception:
        record.status = "FAILED"
        raise
    finally:
        _ACTIVE.reset(token)
        record.end = time.time()
        if record.config is not None and tracking_enabled(record.config):
            attach_report(record, console)
            flush(record, console)


def attach_report(record: RunRecord, console: Console | None = None) -> None:
    """The HTML report of a finished train or evaluate run, as its ``report.html`` artifact.

    A train run's page is that of the version it stored (as ``hybridrec report --version``
    writes it, with the store's history); an evaluate run's is built from its reports. Only
    for runs that evaluated; a page that cannot be drawn costs one warning line, never the run.
    """
    if record.kind not in ("train", "evaluate") or record.status != "FINISHED":
        return
    metrics = json.loads(record.texts.get("reports.json") or "{}")
    if not metrics:
        return
    try:
        from hybridrec.evaluation.html_report import render_html, version_report
        from hybridrec.tracking.report import REPORT_ARTIFACT, report_from_run

        if record.kind == "train" and record.versions:
            root, version, _ = record.versions[-1]
            data = version_report(root, version)
        else:
            tags = {"hybridrec.kind": record.kind, **record.tags}
            cold = json.loads(record.texts.get("cold_start.json") or "{}")
            data = report_from_run(record.params, tags, metrics, cold_start=cold or None)
        record.texts[REPORT_ARTIFACT] = render_html(data)
    except Exception as exc:
        if console is not None:
            console.print(
                f"warning: no report.html with this run: {type(exc).__name__}: {exc}",
                style="yellow",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
