"""The offline report as one self-contained HTML page (``hybridrec report``).

The page holds the metrics table, per-segment bars, metric-vs-K curves, the cold-item and
cold-user tables, the ranker's feature importance and the history of the store's versions
with their target metric. Every chart is a PNG embedded as base64 and the styles are
inline: the page loads nothing, so it opens offline, as a mail attachment or as an MLflow
artifact, and renders the same everywhere.

What it shows is a `ReportData`, built from a stored version (`version_report`, which
reads only the manifest: no model is loaded), from an MLflow run
(`hybridrec.tracking.report.run_report`) or from evaluation results in memory
(`report_from_metrics`). Two sections appear only when the evaluation holds their data:

- cold start: ``evaluation.cold_start`` of the manifest, ``{"cold_items" | "cold_users":
  {model: ModelReport.to_dict()}}`` (the tables ``hybridrec evaluate`` prints);
- feature importance: ``models.<name>.feature_importance`` or
  ``evaluation.feature_importance.<name>``, each ``{feature: importance}``, as a trained
  ranker records it. Without one the page says nothing about it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridrec.errors import DataError
from hybridrec.evaluation.evaluator import SEGMENTS, ModelReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hybridrec.bundle.store import ModelStore

__all__ = [
    "COLD_START_TITLES",
    "ReportData",
    "VersionRow",
    "config_evaluation",
    "manifest_facts",
    "model_reports",
    "render_html",
    "report_from_manifest",
    "report_from_metrics",
    "store_history",
    "version_report",
    "write_report",
]

#: Metrics in the order the tables show them (others follow, by name).
_ORDER = (
    "precision",
    "recall",
    "map",
    "ndcg",
    "hit_rate",
    "mrr",
    "coverage",
    "diversity",
    "novelty",
)
#: The ranking metrics drawn against K (coverage, diversity, novelty have the table).
_CURVES = ("precision", "recall", "map", "ndcg", "hit_rate", "mrr")
#: Headings of the cold-start tables, by their key in ``evaluation.cold_start``.
COLD_START_TITLES = {
    "cold_items": "Cold items: 10% of the items held out entirely (their catalog rows kept)",
    "cold_users": "Cold users: 1-3 training interactions",
}
#: Features shown per model in the importance chart.
_TOP_FEATURES = 25
_BASELINE = "popularity"


@dataclass
class VersionRow:
    """One version of the store in the history table.

    Attributes:
        version: The version's name.
        created_at: When it was written (ISO 8601).
        default_model: The model it serves by default.
        value: The default model's target metric, when the version was evaluated.
        models: The models it holds.
        current: Whether it is the store's current version.
        reported: Whether it is the version this page reports.
    """

    version: str
    created_at: str
    default_model: str
    value: float | None
    models: list[str] = field(default_factory=list)
    current: bool = False
    reported: bool = False


@dataclass
class ReportData:
    """Everything the page shows.

    Attributes:
        title: The page's heading.
        reports: One evaluation per model.
        ks: The cutoffs evaluated.
        target: The metric models are compared on (``"ndcg@10"``).
        default_model: The model the version serves by default (marked in the tables).
        facts: Label → value lines under the heading (version, data, code...).
        cold_start: ``"cold_items"`` / ``"cold_users"`` → the evaluations of that split.
        feature_importance: Model → feature → importance (the ranker's), when recorded.
        history: The store's versions, oldest first.
    """

    title: str
    reports: list[ModelReport]
    ks: list[int]
    target: str
    default_model: str | None = None
    facts: dict[str, str] = field(default_factory=dict)
    cold_start: dict[str, list[ModelReport]] = field(default_factory=dict)
    feature_importance: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[VersionRow] = field(default_factory=list)


# ---- building ReportData ----------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def model_reports(metrics: Mapping[str, Any]) -> list[ModelReport]:
    """`ModelReport`s back from their ``to_dict`` form (a manifest's ``metrics``)."""
    out = []
    for name, values in metrics.items():
        if not isinstance(values, Mapping):
            continue
        overall = {
            k: v if (v := _number(raw)) is not None else math.nan
            for k, raw in values.items()
            if "@" in k
        }
        segments = {
            seg: {k: v if (v := _number(raw)) is not None else math.nan for k, raw in vals.items()}
            for seg, vals in (values.get("segments") or {}).items()
            if isinstance(vals, Mapping)
        }
        out.append(
            ModelReport(
                name=str(name),
                metrics=overall,
                segments=segments,
                n_users=int(_number(values.get("users")) or 0),
                fit_seconds=_number(values.get("fit_seconds")),
                eval_seconds=_number(values.get("eval_seconds")) or 0.0,
            )
        )
    return out


def _ks_of(reports: Sequence[ModelReport]) -> list[int]:
    found = {int(k) for r in reports for key in r.metrics if (k := key.partition("@")[2]).isdigit()}
    return sorted(found)


def _importance(manifest: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The feature importance a ranker recorded in the manifest (empty without one)."""
    found: dict[str, Any] = {}
    for name, info in (manifest.get("models") or {}).items():
        if isinstance(info, Mapping) and info.get("feature_importance"):
            found[str(name)] = info["feature_importance"]
    evaluation = manifest.get("evaluation") or {}
    for name, values in (evaluation.get("feature_importance") or {}).items():
        found.setdefault(str(name), values)
    out: dict[str, dict[str, float]] = {}
    for name, values in found.items():
        pairs = values.items() if isinstance(values, Mapping) else values
        clean = {
            str(feature): v
            for feature, raw in pairs
            if (v := _number(raw)) is not None and math.isfinite(v)
        }
        if clean:
            out[name] = clean
    return out


def _cold_start(evaluation: Mapping[str, Any]) -> dict[str, list[ModelReport]]:
    raw = evaluation.get("cold_start") or {}
    out = {}
    for key, metrics in raw.items():
        if isinstance(metrics, Mapping) and (reports := model_reports(metrics)):
            out[str(key)] = reports
    return out


def report_from_metrics(
    metrics: Mapping[str, Any],
    *,
    ks: Sequence[int] | None = None,
    target: str | None = None,
    title: str = "hybridrec evaluation",
    default_model: str | None = None,
    facts: Mapping[str, str] | None = None,
    manifest: Mapping[str, Any] | None = None,
    history: Sequence[VersionRow] = (),
) -> ReportData:
    """A page from evaluation results: ``{model: ModelReport.to_dict()}``.

    Args:
        metrics: The evaluation, one entry per model.
        ks: The cutoffs (default: those in the metric names).
        target: The compared metric (default: ``ndcg`` at the first cutoff).
        title: The page's heading.
        default_model: The model to mark as served by default.
        facts: Lines under the heading.
        manifest: A version's manifest, for the cold-start and feature-importance sections.
        history: The store's versions.

    Raises:
        DataError: ``metrics`` holds no evaluated model.
    """
    reports = model_reports(metrics)
    if not reports:
        raise DataError(f"{title}: no evaluation to report (no model was evaluated)")
    cutoffs = sorted({int(k) for k in ks}) if ks else _ks_of(reports)
    if not cutoffs:
        raise DataError(f"{title}: the evaluation has no metric at any cutoff")
    manifest = manifest or {}
    return ReportData(
        title=title,
        reports=reports,
        ks=cutoffs,
        target=target or f"ndcg@{cutoffs[0]}",
        default_model=default_model,
        facts=dict(facts or {}),
        cold_start=_cold_start(manifest.get("evaluation") or {}),
        feature_importance=_importance(manifest),
        history=list(history),
    )


def config_evaluation(manifest: Mapping[str, Any]) -> tuple[list[int] | None, str | None]:
    """The cutoffs and target a version was evaluated with."""
    config = (manifest.get("config") or {}).get("evaluation") or {}
    ks = config.get("k")
    target = (manifest.get("evaluation") or {}).get("target") or config.get("target")
    return ([int(k) for k in ks] if ks else None), (str(target) if target else None)


def manifest_facts(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The lines under the heading: when, on what data, with which code, how split."""
    facts: dict[str, str] = {}
    if manifest.get("version"):
        facts["version"] = str(manifest["version"])
    if manifest.get("created_at"):
        facts["created"] = str(manifest["created_at"])[:19].replace("T", " ") + " UTC"
    data = manifest.get("data") or {}
    if data:
        shape = ", ".join(
            f"{data[key]:,} {key}" for key in ("rows", "users", "items") if _number(data.get(key))
        )
        facts["data"] = f"{data.get('source', '?')}" + (f" ({shape})" if shape else "")
    if manifest.get("default_model"):
        facts["default model"] = str(manifest["default_model"])
    split = (manifest.get("evaluation") or {}).get("split") or {}
    if split:
        facts["split"] = ", ".join(f"{k} {v}" for k, v in split.items() if v is not None)
    if manifest.get("code_version"):
        facts["code"] = str(manifest["code_version"])[:12]
    return facts


def report_from_manifest(
    manifest: Mapping[str, Any], *, history: Sequence[VersionRow] = ()
) -> ReportData:
    """The page of a stored version, from its manifest alone.

    Raises:
        DataError: The version was trained without evaluation.
    """
    version = str(manifest.get("version", "?"))
    metrics = manifest.get("metrics") or {}
    if not metrics:
        raise DataError(
            f"version {version} has no evaluation (trained with --no-evaluate?); "
            "train it with evaluation to report it"
        )
    ks, target = config_evaluation(manifest)
    return report_from_metrics(
        metrics,
        ks=ks,
        target=target,
        title=f"hybridrec report: version {version}",
        default_model=str(manifest.get("default_model") or "") or None,
        facts=manifest_facts(manifest),
        manifest=manifest,
        history=history,
    )


def store_history(store: ModelStore, target: str, reported: str | None = None) -> list[VersionRow]:
    """Every version of ``store``, oldest first, with its default model's ``target``."""
    current = store.current()
    rows = []
    for name in store.versions():
        try:
            manifest = store.manifest(name)
        except (OSError, ValueError):
            continue  # unreadable: the other versions still make a history
        default = str(manifest.get("default_model") or "")
        values = (manifest.get("metrics") or {}).get(default) or {}
        value = _number(values.get(target))
        rows.append(
            VersionRow(
                version=name,
                created_at=str(manifest.get("created_at", "")),
                default_model=default,
                value=value if value is not None and math.isfinite(value) else None,
                models=[str(m) for m in manifest.get("models") or {}],
                current=name == current,
                reported=name == reported,
            )
        )
    return rows


def version_report(model_dir: str | Path, version: str | None = None) -> ReportData:
    """The page of ``version`` (default: current) of the store at ``model_dir``.

    Raises:
        DataError: There is no such version, or it was trained without evaluation.
    """
    from hybridrec.bundle.store import ModelStore

    store = ModelStore(model_dir)
    manifest = store.manifest(version)
    data = report_from_manifest(manifest)
    data.history = store_history(store, data.target, str(manifest.get("version", "")))
    return data


# ---- charts -----------------------------------------------------------------------------------


def _png(fig: Figure) -> str:
    """The figure as a base64 PNG (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=96, metadata={"Software": None})
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise DataError(
            "the HTML report needs matplotlib for its charts: pip install 'hybridrec[report]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _metric_k(target: str) -> tuple[str, int | None]:
    name, _, k = target.partition("@")
    return name, int(k) if k.isdigit() else None


def _segments_chart(data: ReportData) -> str:
    from hybridrec.evaluation.report import reports_figure

    _pyplot()
    metric, k = _metric_k(data.target)
    return _png(reports_figure(data.reports, metric=metric, ks=data.ks, segment_k=k))


def _curves_chart(data: ReportData) -> str | None:
    """One panel per ranking metric: its value against K, a line per model."""
    keys = {key for r in data.reports for key in r.metrics}
    metrics = [m for m in _CURVES if any(f"{m}@{k}" in keys for k in data.ks)]
    if not metrics:
        return None
    plt = _pyplot()
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for r in data.reports:
            ys = [r.metrics.get(f"{metric}@{k}", math.nan) for k in data.ks]
            ax.plot(data.ks, ys, marker="o", label=r.name)
        ax.set_title(f"{metric}@K")
        ax.set_xlabel("K")
        ax.set_xticks(data.ks)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    ncol = min(len(labels), 8)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    # Room under the panels for the legend's rows (about 0.3 inch each).
    legend_rows = math.ceil(len(labels) / ncol)
    fig.tight_layout(rect=(0, min(0.4, 0.35 * legend_rows / (3.2 * rows) + 0.02), 1, 1))
    return _png(fig)


def _importance_chart(name: str, values: Mapping[str, float]) -> str:
    plt = _pyplot()
    top = sorted(values.items(), key=lambda kv: -abs(kv[1]))[:_TOP_FEATURES][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(top) + 1.2))
    ax.barh([f for f, _ in top], [v for _, v in top], color="#4c72b0")
    ax.set_title(f"{name}: feature importance")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _history_chart(data: ReportData) -> str | None:
    points = [(i, row) for i, row in enumerate(data.history) if row.value is not None]
    if len(points) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot([i for i, _ in points], [row.value for _, row in points], marker="o", color="#4c72b0")
    for i, row in points:
        if row.reported or row.current:
            ax.plot([i], [row.value], marker="o", markersize=11, fillstyle="none", color="#c44e52")
    ax.set_xticks(
        [i for i, _ in points], [row.version[:15] for _, row in points], rotation=30, ha="right"
    )
    ax.set_title(f"{data.target} of each version's default model")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


# ---- HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  margin: 24px auto; max-width: 1240px; padding: 0 16px; color: #1f2328; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 4px; }
h2 { font-size: 1.25em; margin-top: 32px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin-bottom: 6px; }
p.note { color: #59636e; margin-top: 2px; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dl.facts dt { color: #59636e; } dl.facts dd { margin: 0; }
table { border-collapse: collapse; font-size: 0.86em; margin: 8px 0 16px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
tr.default td { background: #eef6ee; } td.best { font-weight: 700; color: #1a7f37; }
tr.reported td { background: #fff8c5; }
.badge { font-size: 0.75em; background: #1a7f37; color: #fff; border-radius: 8px;
  padding: 1px 6px; margin-left: 4px; }
.wide { overflow-x: auto; }
img.chart { max-width: 100%; height: auto; display: block; margin: 8px 0; }
footer { margin-top: 40px; color: #59636e; font-size: 0.8em; }
"""


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.{digits}f}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _img(png: str, alt: str) -> str:
    return f'<img class="chart" alt="{_e(alt)}" src="data:image/png;base64,{png}">'


def _metric_names(reports: Iterable[ModelReport], k: int) -> list[str]:
    names = {key.partition("@")[0] for r in reports for key in r.metrics if key.endswith(f"@{k}")}
    ordered = [m for m in _ORDER if m in names]
    return ordered + sorted(names - set(ordered))


def _model_cell(name: str, default: str | None) -> str:
    badge = '<span class="badge">default</span>' if name == default else ""
    return f"<td>{_e(name)}{badge}</td>"


def _summary_table(
    reports: Sequence[ModelReport], target: str, default: str | None, *, timings: bool = True
) -> str:
    """Per model: ``target``, its lift over the popularity baseline, users, seconds."""
    base = next((r.metrics.get(target) for r in reports if r.name == _BASELINE), None)
    if base is not None and not (math.isfinite(base) and base > 0):
        base = None
    head = ["model", target]
    if base:
        head.append(f"vs {_BASELINE}")
    head.append("users")
    if timings:
        head += ["fit s", "eval s"]
    best = max(
        (v for r in reports if not math.isnan(v := r.metrics.get(target, math.nan))),
        default=None,
    )
    rows = []
    for r in reports:
        value = r.metrics.get(target)
        known = value is not None and not math.isnan(value)
        cls = ' class="best"' if known and value == best else ""
        cells = [_model_cell(r.name, default), f"<td{cls}>{_fmt(value)}</td>"]
        if base:
            lift = f"{(value / base - 1) * 100:+.0f}%" if known and value is not None else "-"
            cells.append(f"<td>{lift}</td>")
        cells.append(f"<td>{r.n_users:,}</td>")
        if timings:
            cells.append(f"<td>{_fmt(r.fit_seconds, 2)}</td><td>{_fmt(r.eval_seconds, 2)}</td>")
        row_cls = ' class="default"' if r.name == default else ""
        rows.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _metrics_tables(reports: Sequence[ModelReport], ks: Sequence[int], default: str | None) -> str:
    """A table per K: one row per model, every metric, the best value of each column bold."""
    return "".join(_metrics_table(reports, k, default) for k in ks)


def _metrics_table(reports: Sequence[ModelReport], k: int, default: str | None) -> str:
    columns = [f"{m}@{k}" for m in _metric_names(reports, k)]
    best = {}
    for c in columns:
        values = [v for r in reports if not math.isnan(v := r.metrics.get(c, math.nan))]
        best[c] = max(values, default=None)
    rows = []
    for r in reports:
        cells = [_model_cell(r.name, default)]
        for c in columns:
            value = r.metrics.get(c)
            cls = ' class="best"' if value is not None and value == best[c] else ""
            cells.append(f"<td{cls}>{_fmt(value)}</td>")
        row_cls = ' class="default"' if r.name == default else ""
        rows.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in ["model", *columns])
    return f'<h3>@{k}</h3><div class="wide"><table><tr>{header}</tr>{"".join(rows)}</table></div>'


def _segment_table(reports: Sequence[ModelReport], target: str, default: str | None) -> str:
    first = reports[0].segments if reports else {}
    head = "".join(
        f"<th>{_e(seg)} ({int(first.get(seg, {}).get('users', 0) or 0):,} users)</th>"
        for seg in SEGMENTS
    )
    rows = []
    for r in reports:
        cells = "".join(f"<td>{_fmt(r.segments.get(seg, {}).get(target))}</td>" for seg in SEGMENTS)
        rows.append(f"<tr>{_model_cell(r.name, default)}{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def _importance_table(values: Mapping[str, float]) -> str:
    top = sorted(values.items(), key=lambda kv: -abs(kv[1]))[:_TOP_FEATURES]
    # Gains or split counts, whatever the ranker recorded: four significant digits.
    rows = "".join(f"<tr><td>{_e(f)}</td><td>{v:.4g}</td></tr>" for f, v in top)
    return f"<table><tr><th>feature</th><th>importance</th></tr>{rows}</table>"


def _history_table(data: ReportData) -> str:
    rows = []
    for row in data.history:
        marks = []
        if row.current:
            marks.append('<span class="badge">current</span>')
        cls = ' class="reported"' if row.reported else ""
        rows.append(
            f"<tr{cls}><td>{_e(row.version)}{''.join(marks)}</td>"
            f"<td>{_e(row.created_at[:19].replace('T', ' '))}</td>"
            f"<td>{_e(row.default_model)}</td><td>{_fmt(row.value)}</td>"
            f"<td>{_e(', '.join(row.models))}</td></tr>"
        )
    head = (
        f"<tr><th>version</th><th>created (UTC)</th><th>default model</th>"
        f"<th>{_e(data.target)}</th><th>models</th></tr>"
    )
    return f'<div class="wide"><table>{head}{"".join(rows)}</table></div>'


def render_html(data: ReportData) -> str:
    """The page: one HTML document with its styles inline and its charts as data URIs."""
    target, default = data.target, data.default_model
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(data.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
    ]
    facts = {**data.facts, "target": target, "cutoffs": ", ".join(f"@{k}" for k in data.ks)}
    parts.append(
        '<dl class="facts">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts.items())
        + "</dl>"
    )
    n_users = max((r.n_users for r in data.reports), default=0)
    parts += [
        "<h2>Metrics</h2>",
        f'<p class="note">Mean over {n_users:,} held-out users, ranked over the whole '
        "training catalog with each user's training items excluded; the best value of each "
        "column in bold.</p>",
        _summary_table(data.reports, target, default),
        _metrics_tables(data.reports, data.ks, default),
        "<h2>By user segment</h2>",
        f'<p class="note">{_e(target)} by training-history length (cold, warm, hot users).</p>',
        _segment_table(data.reports, target, default),
        _img(_segments_chart(data), f"{target} overall and by user segment"),
    ]
    curves = _curves_chart(data)
    if curves is not None:
        parts += ["<h2>Metrics against K</h2>", _img(curves, "metric against K, per model")]
    if data.cold_start:
        parts.append("<h2>Cold start</h2>")
        for key, reports in data.cold_start.items():
            parts.append(f"<h3>{_e(COLD_START_TITLES.get(key, key))}</h3>")
            parts.append(_summary_table(reports, target, None, timings=False))
            parts.append(_metrics_tables(reports, data.ks, None))
    if data.feature_importance:
        parts.append("<h2>Ranker feature importance</h2>")
        for name, values in data.feature_importance.items():
            parts.append(_img(_importance_chart(name, values), f"{name} feature importance"))
            parts.append(_importance_table(values))
    if data.history:
        parts.append("<h2>Versions</h2>")
        parts.append(
            f'<p class="note">The store\'s versions, oldest first, with the {_e(target)} of '
            "each one's default model on its own held-out data.</p>"
        )
        chart = _history_chart(data)
        if chart is not None:
            parts.append(_img(chart, f"{target} of each version"))
        parts.append(_history_table(data))
    from hybridrec import __version__

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<footer>hybridrec {_e(__version__)} · written {now}</footer></body></html>")
    return "\n".join(parts) + "\n"


def write_report(data: ReportData, path: str | Path) -> Path:
    """Render ``data`` and write it to ``path`` atomically (a reader never sees half a page).

    Raises:
        DataError: ``path`` does not end in ``.html``.
    """
    from hybridrec.bundle.store import _atomic_write_text

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise DataError(f"{path}: the report is an HTML page; give a path ending in .html")
    text = render_html(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path, text)
    return path
