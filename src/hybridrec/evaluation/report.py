"""Comparison tables and plots of `ModelReport`s."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hybridrec.evaluation.evaluator import SEGMENTS, ModelReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "comparison_table",
    "importance_tables",
    "plot_reports",
    "reports_figure",
    "reports_to_json",
    "segment_table",
]

_SHOWN = ("precision", "recall", "map", "ndcg", "hit_rate", "mrr", "coverage")


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def comparison_table(
    reports: Sequence[ModelReport],
    ks: Sequence[int],
    *,
    target: str = "ndcg@10",
    title: str = "Offline evaluation",
    baseline: str = "popularity",
) -> Table:
    """One row per model: accuracy metrics at each k, timings, and lift over the baseline."""
    table = Table(title=title, header_style="bold")
    table.add_column("model", style="cyan")
    # Every metric at the first cutoff; the headline ones at the others, to stay readable.
    columns = [f"{m}@{ks[0]}" for m in _SHOWN] + [
        f"{m}@{k}" for k in ks[1:] for m in ("recall", "ndcg", "coverage")
    ]
    for column in columns:
        table.add_column(column.replace("hit_rate", "hr"), justify="right")
    table.add_column(f"{target} vs {baseline}", justify="right")
    table.add_column("fit s", justify="right")
    table.add_column("eval s", justify="right")
    base = next((r.metrics.get(target) for r in reports if r.name == baseline), None)
    best = max((r.metrics.get(target, -1.0) for r in reports), default=None)
    for r in reports:
        value = r.metrics.get(target)
        lift = f"{(value / base - 1) * 100:+.0f}%" if base and value is not None else "-"
        cells = [_fmt(r.metrics.get(column)) for column in columns]
        style = "bold green" if value is not None and value == best else None
        table.add_row(
            r.name,
            *cells,
            lift,
            _fmt(r.fit_seconds, 2),
            _fmt(r.eval_seconds, 2),
            style=style,
        )
    return table


def segment_table(reports: Sequence[ModelReport], *, target: str = "ndcg@10") -> Table:
    """``target`` per user segment (cold / warm / hot), one row per model."""
    table = Table(title=f"{target} by user segment (training-history length)")
    table.add_column("model", style="cyan")
    first = reports[0].segments if reports else {}
    for seg in SEGMENTS:
        users = first.get(seg, {}).get("users", 0)
        table.add_column(f"{seg} ({int(users)} users)", justify="right")
    for r in reports:
        table.add_row(r.name, *[_fmt(r.segments.get(seg, {}).get(target)) for seg in SEGMENTS])
    return table


def importance_tables(reports: Sequence[ModelReport], top: int = 15) -> list[Table]:
    """The ``top`` features of each model that has a feature importance (the ranker)."""
    tables = []
    for r in reports:
        if not r.feature_importance:
            continue
        table = Table(title=f"{r.name}: top {top} features (share of LightGBM gain)")
        table.add_column("#", justify="right")
        table.add_column("feature", style="cyan")
        table.add_column("gain share", justify="right")
        ranked = sorted(r.feature_importance.items(), key=lambda kv: (-kv[1], kv[0]))
        for i, (feature, share) in enumerate(ranked[:top], 1):
            table.add_row(str(i), feature, f"{share:.3f}")
        tables.append(table)
    return tables


def reports_to_json(reports: Sequence[ModelReport], **extra: Any) -> str:
    """``{"<model>": {"ndcg@10": ..., "recall@10": ..., "fit_seconds": ...}, ...}``."""
    payload: dict[str, Any] = {r.name: r.to_dict() for r in reports}
    payload.update(extra)
    return json.dumps(payload, indent=2, default=_json_default, allow_nan=False)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def reports_figure(
    reports: Sequence[ModelReport],
    *,
    metric: str = "ndcg",
    ks: Sequence[int],
    segment_k: int | None = None,
) -> Figure:
    """Bar charts of ``metric`` at each k per model, and per user segment at ``segment_k``.

    ``segment_k`` defaults to the first k. The caller saves and closes the figure (see
    `plot_reports`; the HTML report embeds it).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r.name for r in reports]
    width = 0.8 / max(len(ks), 1)
    for j, k in enumerate(ks):
        vals = [r.metrics.get(f"{metric}@{k}", 0.0) for r in reports]
        axes[0].bar([i + j * width for i in range(len(names))], vals, width, label=f"@{k}")
    axes[0].set_xticks([i + width * (len(ks) - 1) / 2 for i in range(len(names))], names)
    axes[0].set_title(f"{metric} overall")
    axes[0].legend()
    k0 = ks[0] if segment_k is None else segment_k
    width = 0.8 / len(SEGMENTS)
    for j, seg in enumerate(SEGMENTS):
        vals = [r.segments.get(seg, {}).get(f"{metric}@{k0}", 0.0) for r in reports]
        vals = [0.0 if v is None or math.isnan(v) else v for v in vals]
        # Small segments are noisy: the legend says how many users stand behind each bar.
        users = int(reports[0].segments.get(seg, {}).get("users", 0)) if reports else 0
        label = f"{seg} ({users} users)"
        axes[1].bar([i + j * width for i in range(len(names))], vals, width, label=label)
    axes[1].set_xticks([i + width for i in range(len(names))], names)
    axes[1].set_title(f"{metric}@{k0} by user segment")
    axes[1].legend()
    fig.tight_layout()
    figure: Figure = fig
    return figure


def plot_reports(
    reports: Sequence[ModelReport], path: str | Path, *, metric: str = "ndcg", ks: Sequence[int]
) -> Path:
    """Bar chart of ``metric`` at each k, per model and per segment; writes a PNG."""
    path = Path(path)
    fig = reports_figure(reports, metric=metric, ks=ks)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
