"""The offline pipeline: prepare data, tune on valid, evaluate on test, train, save.

Every entry point (CLI ``train`` / ``evaluate``, ``make run``, the benchmark) goes through
these functions, so a number in a report and a model in the store come from the same code.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hybridrec import __version__
from hybridrec.bundle.bundle import BundleOptions, TopN, write_bundle
from hybridrec.bundle.format import Compression
from hybridrec.bundle.store import ModelStore
from hybridrec.config import (
    BundleConfig,
    DataConfig,
    EvaluationConfig,
    ModelSpec,
    PipelineConfig,
    SplitConfig,
    TuningConfig,
)
from hybridrec.data.dataset import InteractionData
from hybridrec.data.datasets import DATASETS
from hybridrec.data.loaders import RawData, load_dataset, load_files
from hybridrec.data.split import (
    Split,
    carve_validation,
    global_temporal_split,
    random_split,
    temporal_split,
)
from hybridrec.data.transform import (
    WARN_DROPPED_USERS,
    Conversion,
    apply_conversion,
    has_repeated_pairs,
    kcore_filter,
    resolve_conversion,
)
from hybridrec.errors import ConfigError
from hybridrec.evaluation.evaluator import Evaluator, ModelReport
from hybridrec.models.base import Recommender
from hybridrec.models.footprint import DataShape, human_bytes, memory_budget
from hybridrec.models.hybrid import ComposedRecommender, Hybrid, tune_weights
from hybridrec.models.registry import create_model, get_model_class
from hybridrec.pipeline.search import search_model
from hybridrec.tracking.record import active as tracking_run

__all__ = [
    "PreparedData",
    "TrainResult",
    "bundle_options_from",
    "data_shape",
    "evaluate_fitted",
    "evaluate_pipeline",
    "fingerprint",
    "fit_model",
    "fit_order",
    "precompute_top_n",
    "prepare_data",
    "preprocess",
    "report_preparation",
    "split_data",
    "stored_conversion",
    "train_pipeline",
    "tune_model",
]

BASELINE = "popularity"


@dataclass(frozen=True)
class PreparedData:
    """Implicit interactions ready for splitting, with the catalog and user table.

    Attributes:
        conversion: The explicit → implicit rule applied (learned from this data when the
            config says ``auto``); held-out files are converted with the same rule.
        dropped: What preprocessing removed: ``rows``/``users`` before and after.
    """

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    conversion: Conversion | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the conversion and how many rows and users it kept."""
        d = self.dropped
        what = self.conversion.describe() if self.conversion else "as configured"
        if not d:
            return f"data: {what}"
        return (
            f"data: {what}; kept {d['rows_out']:,} of {d['rows_in']:,} rows and "
            f"{d['users_out']:,} of {d['users_in']:,} users"
        )

    def dropped_user_share(self) -> float:
        """Share of the input's users that preprocessing removed."""
        d = self.dropped
        return 1.0 - d["users_out"] / d["users_in"] if d.get("users_in") else 0.0


@dataclass
class TrainResult:
    """What ``train`` produced."""

    version: str
    path: Path
    reports: list[ModelReport] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_model: str = ""


def preprocess(
    df: pl.DataFrame,
    cfg: DataConfig,
    *,
    conversion: Conversion | None = None,
    training: bool = True,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[pl.DataFrame, Conversion]:
    """Explicit → implicit, deduplicate, then k-core filter, as the data config says.

    Args:
        df: Canonical interactions.
        cfg: The data config.
        conversion: A rule already learned (on the training data); None: learn it here.
        training: Training data (users may be kept by their own mean; k-core applies).
        defaults: The dataset's own ``[data]`` defaults for what the config leaves unset.

    Returns:
        The implicit interactions and the conversion applied.
    """
    if conversion is None:
        min_rating = cfg.min_rating
        if min_rating is None and defaults:
            min_rating = defaults.get("min_rating")
        conversion = resolve_conversion(
            df, implicit=cfg.implicit, min_rating=min_rating, dedup=cfg.dedup
        )
    out = apply_conversion(df, conversion, training=training)
    if training and (cfg.min_user_interactions > 1 or cfg.min_item_interactions > 1):
        out = kcore_filter(
            out, min_user=cfg.min_user_interactions, min_item=cfg.min_item_interactions
        )
    return out, conversion


def load_raw(
    cfg: DataConfig,
    *,
    data_home: str | Path | None = None,
    interactions: str | Path | None = None,
    items: str | Path | None = None,
    users: str | Path | None = None,
) -> RawData:
    """Load the configured source, or the given files (which replace the config's)."""
    if interactions is not None:
        return load_files(
            interactions, items, users, columns=cfg.columns or None, name=Path(interactions).name
        )
    if items is not None or users is not None:
        raise ConfigError("--items and --users need --train (the interactions they go with)")
    if cfg.source == "files":
        assert cfg.interactions is not None  # checked when the config was loaded
        return load_files(cfg.interactions, cfg.items, cfg.users, columns=cfg.columns or None)
    if cfg.source == "sources":
        from hybridrec.data.sources import Source, merge_sources

        return merge_sources(
            [
                Source(s.name, s.interactions, s.items, s.users, {**cfg.columns, **s.columns})
                for s in cfg.sources
            ],
            shared_users=cfg.shared_users,
        )
    return load_dataset(cfg.source, data_home=data_home)


def prepare_data(
    cfg: DataConfig,
    *,
    data_home: str | Path | None = None,
    interactions: str | Path | None = None,
    items: str | Path | None = None,
    users: str | Path | None = None,
    conversion: Conversion | None = None,
    training: bool = True,
) -> PreparedData:
    """Load and preprocess; ``interactions`` (a file) overrides the configured source.

    Args:
        cfg: The data config.
        data_home: Where registered datasets live.
        interactions: An interactions file replacing the configured source.
        items: An item catalog file (with ``interactions``).
        users: A user attributes file (with ``interactions``).
        conversion: The rule learned on the training data, for held-out files.
        training: False for held-out files (no rescue by user mean, no k-core).
    """
    raw = load_raw(cfg, data_home=data_home, interactions=interactions, items=items, users=users)
    defaults = None
    if interactions is None and cfg.source in DATASETS:
        defaults = dict(DATASETS[cfg.source].data_defaults)
    df, used = preprocess(
        raw.interactions, cfg, conversion=conversion, training=training, defaults=defaults
    )
    users_in = raw.interactions["user_id"].n_unique()
    dropped = {
        "rows_in": raw.interactions.height,
        "rows_out": df.height,
        "users_in": users_in,
        # Every step only drops or merges rows: as many rows out as in means every user stays.
        "users_out": users_in if df.height == raw.interactions.height else df["user_id"].n_unique(),
    }
    return PreparedData(raw.name, df, raw.items, raw.users, used, dropped)


def stored_conversion(manifest: Mapping[str, Any]) -> Conversion | None:
    """The conversion a stored version was trained with (None for older versions)."""
    raw = (manifest.get("data") or {}).get("conversion")
    return Conversion(**raw) if raw else None


def report_preparation(prepared: PreparedData, console: Console | None) -> None:
    """Print what preprocessing did, and warn when it dropped many users."""
    if console is None:
        return
    console.print(escape(prepared.summary()), highlight=False, soft_wrap=True)
    share = prepared.dropped_user_share()
    if share > WARN_DROPPED_USERS:
        console.print(
            f"[yellow]warning: {share:.0%} of the users have no interaction left after "
            "implicit conversion; they get non-personalized answers (set [data] implicit = "
            '"binary" or lower min_rating to keep them)[/yellow]'
        )


def split_data(df: pl.DataFrame, cfg: SplitConfig) -> Split:
    """Split interactions as the split config says."""
    if cfg.method == "random":
        return random_split(df, valid=cfg.valid, test=cfg.test, seed=cfg.seed)
    if cfg.method == "temporal":
        return temporal_split(df, test=cfg.test, valid=cfg.valid, leave_last_n=cfg.leave_last_n)
    return global_temporal_split(df, cutoff=cfg.cutoff, test=cfg.test, valid=cfg.valid)


def fingerprint(df: pl.DataFrame) -> dict[str, Any]:
    """Row/user/item counts, time range and a content hash of an interactions table."""
    ts = df["timestamp"].drop_nulls()
    digest = df.select("user_id", "item_id", "weight", "timestamp").hash_rows(seed=0).sum()
    return {
        "rows": df.height,
        "users": df["user_id"].n_unique(),
        "items": df["item_id"].n_unique(),
        "time_min": int(ts.min()) if ts.len() else None,  # type: ignore[arg-type]
        "time_max": int(ts.max()) if ts.len() else None,  # type: ignore[arg-type]
        "hash": f"{int(digest or 0) & (2**64 - 1):016x}",
    }


def fit_model(
    name: str,
    params: dict[str, Any],
    data: InteractionData,
    fitted: dict[str, Recommender] | None = None,
) -> tuple[Recommender, float]:
    """Create and fit model ``name``; returns it and the seconds ``fit`` took.

    A model built from others (a hybrid) gets the already ``fitted`` pipeline models it
    names as its components, so they are neither refit nor stored twice.
    """
    model: Recommender = create_model(name, params)
    if isinstance(model, ComposedRecommender) and fitted:
        model.attach(fitted)
    start = time.perf_counter()
    model.fit(data)
    return model, time.perf_counter() - start


def fit_order(cfg: PipelineConfig, names: list[str]) -> list[str]:
    """``names`` with every hybrid after the pipeline models it is built from."""
    deps: dict[str, list[str]] = {}
    for name in names:
        spec = cfg.models.get(name)
        model = create_model(spec.model, spec.params) if spec else None
        deps[name] = (
            [c for c in model.component_names() if c in names and c != name]
            if isinstance(model, ComposedRecommender)
            else []
        )
    order: list[str] = []
    pending = list(names)
    while pending:
        ready = [n for n in pending if all(d in order for d in deps[n])]
        if not ready:
            raise ConfigError(f"hybrids refer to each other in a cycle: {', '.join(pending)}")
        order.extend(ready)
        pending = [n for n in pending if n not in ready]
    return order


def _grid(tune: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(tune)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*tune.values())]


def tune_model(
    model: str,
    params: dict[str, Any],
    grid: dict[str, list[Any]],
    train: InteractionData,
    evaluator: Evaluator,
    *,
    target: str,
    progress: Progress | None = None,
    search: dict[str, Any] | None = None,
    tuning: TuningConfig | None = None,
    trials: int | None = None,
    components: dict[str, Recommender] | None = None,
    console: Console | None = None,
    label: str | None = None,
    best_models: dict[str, Recommender] | None = None,
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], float]]]:
    """Tune on the validation split; returns the best params and every trial.

    With a ``search`` space: Optuna TPE (`hybridrec.pipeline.search`), the ``grid`` lists
    joining the space as categorical choices, bounded by ``trials`` (default: the tuning
    config's) and the tuning budget. Without one: every point of the ``grid``. Given
    ``best_models``, the best trial's model (fitted on ``train``; not for a composed model)
    is put there under ``label or model``, for a caller that needs it on ``train`` again.
    """
    keep = best_models is not None and not issubclass(get_model_class(model), ComposedRecommender)
    if search:
        tuning = tuning or TuningConfig()
        space = {key: list(values) for key, values in grid.items()} | search
        result = search_model(
            model,
            params,
            space,
            train,
            evaluator,
            target=target,
            trials=trials or tuning.trials,
            budget_s=tuning.budget_s,
            seed=tuning.seed,
            components=components,
            progress=progress,
            console=console,
            label=label,
            keep_best=keep,
        )
        if best_models is not None and result.model is not None:
            best_models[label or model] = result.model
        return result.best, result.trials
    history: list[tuple[dict[str, Any], float]] = []
    best_score = float("-inf")
    candidates = _grid(grid)
    task = progress.add_task(f"tune {model}", total=len(candidates)) if progress else None
    for candidate in candidates:
        trial = params | candidate
        fitted, _ = fit_model(model, trial, train, components)
        score = evaluator.evaluate(fitted).metrics[target]
        history.append((trial, score))
        if keep and best_models is not None and score > best_score:
            best_score, best_models[label or model] = score, fitted
        del fitted
        if progress is not None and task is not None:
            progress.advance(task)
    best = max(history, key=lambda t: t[1])[0]
    return best, history


@contextmanager
def _progress(console: Console | None) -> Iterator[Progress]:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=True,
        disable=console is None,
    )
    with progress:
        yield progress


def evaluate_pipeline(
    cfg: PipelineConfig,
    split: Split,
    *,
    items: pl.DataFrame | None = None,
    console: Console | None = None,
) -> tuple[list[ModelReport], dict[str, dict[str, Any]]]:
    """Tune every model on valid (where it has a grid), refit, and evaluate on test.

    Popularity is always evaluated, as the baseline every table includes.

    Returns:
        The test reports (config order, popularity first when added) and the chosen params.
    """
    specs = runnable_models(cfg, items, console, data_shape(split.train_valid(), items))
    names = list(specs)
    if not any(spec.model == BASELINE for spec in specs.values()):
        names.insert(0, BASELINE)
    ev = cfg.evaluation
    eval_kw: dict[str, Any] = {"ks": ev.k, "cold_below": ev.cold_below, "hot_from": ev.hot_from}
    tune_split = split
    if (split.valid is None or not split.valid.height) and _tunes(specs):
        # No validation data: tune on a carve-out of train, then refit on all of train.
        tune_split = _carve(split.train, cfg.split)
    train = InteractionData.from_frame(tune_split.train, items_table=items)
    valid_eval = (
        Evaluator(train, tune_split.valid, **eval_kw)
        if tune_split.valid is not None and tune_split.valid.height
        else None
    )
    fit_df = split.train_valid() if cfg.refit_on_valid else split.train
    if (run := tracking_run()) is not None:
        run.add_data("train", fingerprint(fit_df))
        run.add_data("test", fingerprint(split.test))
    fit_data = InteractionData.from_frame(fit_df, items_table=items)
    test_eval = Evaluator(fit_data, split.test, **eval_kw)
    reports: dict[str, ModelReport] = {}
    chosen: dict[str, dict[str, Any]] = {}
    fitted: dict[str, Recommender] = {}
    on_train: dict[str, Recommender] = {}

    # The models composed ones are tuned on, fit on train: a search's best trial is that
    # model already (kept instead of fit again) when the test table refits on train + valid.
    reused: dict[str, Recommender] = {}
    keep_for = set() if fit_df is tune_split.train else _tuned_on(specs)

    def train_model(name: str) -> Recommender:
        """Model ``name`` with its chosen params fit on train only (for tuning hybrids)."""
        if name not in on_train:
            if fit_df is tune_split.train:
                on_train[name] = fitted[name]
            elif name in reused:
                on_train[name] = reused.pop(name)
            else:
                spec = specs.get(name)
                kind = spec.model if spec else BASELINE
                for dep in _components(kind, chosen[name]):
                    if dep in chosen:
                        train_model(dep)
                on_train[name], _ = fit_model(kind, chosen[name], train, on_train)
        return on_train[name]

    with _progress(console) as progress:
        task = progress.add_task("evaluate", total=len(names))
        for name in fit_order(cfg, names):
            spec = specs.get(name)
            model_name = spec.model if spec else BASELINE
            params = dict(spec.params) if spec else {}
            if spec and (spec.tune or spec.search) and valid_eval is not None:
                deps = _components(model_name, params)
                if spec.search and any(k in spec.search for k in ("cold", "warm", "hot")):
                    deps = list(fitted)  # routes may pick any model fitted before
                params, _ = tune_model(
                    model_name,
                    params,
                    spec.tune,
                    train,
                    valid_eval,
                    target=ev.target,
                    progress=progress,
                    search=dict(spec.search),
                    tuning=cfg.tuning,
                    trials=spec.search_trials,
                    components={d: train_model(d) for d in deps if d in chosen} or None,
                    console=console,
                    label=name,
                    best_models=reused if name in keep_for else None,
                )
            if spec and spec.tune_weights and valid_eval is not None:
                parts = {d: train_model(d) for d in _components(model_name, params) if d in chosen}
                hybrid, _ = fit_model(model_name, params, train, parts)
                assert isinstance(hybrid, Hybrid)
                best, _ = tune_weights(
                    hybrid,
                    lambda h: valid_eval.evaluate(h).metrics[ev.target],
                    step=spec.tune_weights,
                )
                params = params | {"components": best}
            if spec and spec.tune_routes and valid_eval is not None:
                hybrids = [n for n in fitted if (s := specs.get(n)) and s.model == "hybrid"]
                params = params | _best_routes(
                    {n: valid_eval.evaluate(train_model(n), n) for n in fitted},
                    ev.target,
                    fallback=hybrids[0] if hybrids else None,
                )
            model, seconds = fit_model(model_name, params, fit_data, fitted)
            reports[name] = test_eval.evaluate(model, name, fit_seconds=seconds)
            chosen[name] = params
            fitted[name] = model
            progress.advance(task)
    return [reports[n] for n in names], {n: chosen[n] for n in names}


def _tunes(specs: dict[str, ModelSpec]) -> bool:
    return any(s.tune or s.search or s.tune_weights or s.tune_routes for s in specs.values())


def _carve(df: pl.DataFrame, cfg: SplitConfig) -> Split:
    """A validation split carved from ``df`` (see `carve_validation` for the rule)."""
    return carve_validation(df, method=cfg.method, share=cfg.valid, seed=cfg.seed)


#: A router picks a segment's model on validation only from at least this many users of it.
MIN_ROUTE_USERS = 50


def _best_routes(
    valid: dict[str, ModelReport], target: str, fallback: str | None = None
) -> dict[str, str]:
    """Per segment, the model with the best ``target`` on the validation split.

    A segment with fewer than `MIN_ROUTE_USERS` validation users says too little to choose
    by: it gets ``fallback`` (the pipeline's hybrid, a personalized model), or keeps its
    configured route when there is none.
    """
    routes: dict[str, str] = {}
    for segment in ("cold", "warm", "hot"):
        scored = {
            name: r.segments.get(segment, {}).get(target, float("nan"))
            for name, r in valid.items()
            if r.segments.get(segment, {}).get("users", 0) >= MIN_ROUTE_USERS
        }
        scored = {n: v for n, v in scored.items() if not math.isnan(v)}
        if scored:
            routes[segment] = max(scored, key=lambda n: scored[n])
        elif fallback is not None:
            routes[segment] = fallback
    return routes


def runnable_models(
    cfg: PipelineConfig,
    items: pl.DataFrame | None,
    console: Console | None = None,
    shape: DataShape | None = None,
) -> dict[str, ModelSpec]:
    """The enabled models, less those that cannot run on this data or this machine.

    Models that need an item catalog are left out when there is none; with ``shape``, so
    is every model whose estimated peak memory exceeds the budget (``[resources]``); and
    so are hybrids built on a model left out. Each one left out is reported on ``console``
    with the reason and what setting would change it, before anything is fit.
    """
    specs = dict(cfg.enabled_models())
    reasons: dict[str, str] = {}
    if items is None:
        for name, spec in list(specs.items()):
            if get_model_class(spec.model).needs_catalog:
                reasons[name] = "no item catalog in this data (give one with --items)"
                del specs[name]
    if shape is not None:
        budget = memory_budget(cfg.resources.memory_fraction, cfg.resources.memory_limit_gb)
        for name, spec in list(specs.items()):
            klass = get_model_class(spec.model)
            if issubclass(klass, ComposedRecommender):
                continue
            cost = klass.footprint(klass.Config(**spec.params), shape)
            if cost.bytes > budget:
                reasons[name] = (
                    f"needs {cost.describe()} for {shape.users:,} users x {shape.items:,} "
                    f"items, over the memory budget of {human_bytes(budget)}"
                    f"{_fit_hint(spec.model, shape, budget)}"
                )
                del specs[name]
    # A hybrid on a model the config turns off is left out too, rather than fitting that
    # model itself with default settings.
    disabled = {name for name, spec in cfg.models.items() if not spec.enabled}
    changed = True
    while changed:
        changed = False
        for name, spec in list(specs.items()):
            parts = _components(spec.model, dict(spec.params))
            needs = [d for d in parts if d in reasons]
            off = [d for d in parts if d in disabled and d not in specs]
            absent = [d for d in parts if d not in specs and d not in cfg.models]
            klass = get_model_class(spec.model)
            reduced = (
                klass.without_components(dict(spec.params), [*needs, *off, *absent])
                if issubclass(klass, ComposedRecommender) and (needs or off or absent)
                else None
            )
            if reduced:
                # Optional components (a ranker's retrievers): go on without those missing.
                specs[name] = spec.model_copy(update={"params": reduced})
                if console is not None:
                    console.print(
                        f"{name}: without {', '.join([*needs, *off, *absent])} "
                        "(off, skipped or absent in this pipeline)",
                        highlight=False,
                    )
                changed = True
                continue
            if needs or off:
                causes = [f"built on {', '.join(needs)}"] if needs else []
                causes += [
                    f"built on {d}, which is disabled ([models.{d}] enabled = false)" for d in off
                ]
                reasons[name] = "; ".join(causes)
                del specs[name]
                changed = True
    for name, spec in specs.items():
        # Models that learn from a label window of their own follow the pipeline's split.
        adapt = getattr(get_model_class(spec.model), "params_for_split", None)
        if adapt is not None:
            specs[name] = spec.model_copy(
                update={"params": adapt(dict(spec.params), cfg.split.method)}
            )
    if reasons and console is not None:
        for name, why in reasons.items():
            console.print(f"[yellow]skipped {name}: {escape(why)}[/yellow]", highlight=False)
    return specs


def _fit_hint(model: str, shape: DataShape, budget: int) -> str:
    """What setting would make ``model`` fit ``budget``."""
    if model == "ease":
        fits = int(math.sqrt(max(budget - shape.nnz * 24, 0) / (3 * 4)))
        return f"; set [models.ease] max_items = {max(fits, 1)} or raise [resources]"
    return "; raise [resources] memory_fraction or memory_limit_gb, or disable the model"


def data_shape(df: pl.DataFrame, items: pl.DataFrame | None) -> DataShape:
    """The sizes model costs depend on, from an interactions table and the catalog."""
    pairs = (
        df.select(pl.struct("user_id", "item_id").n_unique()).item()
        if has_repeated_pairs(df)
        else df.height
    )
    n_items = df["item_id"].n_unique()
    return DataShape(
        users=df["user_id"].n_unique(),
        items=n_items,
        nnz=int(pairs),
        catalog=max(n_items, items.height if items is not None else 0),
    )


def _tuned_on(specs: dict[str, ModelSpec]) -> set[str]:
    """Models a composed model is tuned on: its components; every model for route tuning."""
    needed: set[str] = set()
    for spec in specs.values():
        if spec.tune_routes or (
            spec.search and any(k in spec.search for k in ("cold", "warm", "hot"))
        ):
            return set(specs)
        if spec.tune_weights or spec.search or spec.tune:
            needed.update(_components(spec.model, dict(spec.params)))
    return needed


def _components(kind: str, params: dict[str, Any]) -> list[str]:
    model = create_model(kind, params)
    return model.component_names() if isinstance(model, ComposedRecommender) else []


def evaluate_fitted(
    models: dict[str, Recommender],
    test: pl.DataFrame,
    cfg: EvaluationConfig,
    *,
    per_user: bool = False,
) -> list[ModelReport]:
    """Score already-fitted models on ``test``; each against the data it was fit on.

    With ``per_user``, each report keeps every test user's values (`ModelReport.per_user`).
    """
    kw: dict[str, Any] = {"ks": cfg.k, "cold_below": cfg.cold_below, "hot_from": cfg.hot_from}
    evaluators: list[tuple[Recommender, Evaluator]] = []
    reports = []
    for name, model in models.items():
        users, items, user_items = model._fitted()
        ev = next(
            (e for m, e in evaluators if m.users_ is users and m.items_ is items),
            None,
        )
        if ev is None:
            ev = Evaluator(InteractionData(user_items.tocsr(), users, items), test, **kw)
            evaluators.append((model, ev))
        reports.append(ev.evaluate(model, name, keep_per_user=per_user))
    return reports


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "hybridrec": __version__}
    for pkg in ("numpy", "scipy", "polars", "pyarrow", "implicit", "joblib", "faiss-cpu", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def bundle_options_from(cfg: BundleConfig) -> BundleOptions:
    """Bundle writing options from the ``[bundle]`` config section."""
    return BundleOptions(Compression.parse(cfg.compress, cfg.compress_level), cfg.float32)


def precompute_candidates(
    models: Mapping[str, Recommender], budget_mb: int, info: dict[str, dict[str, Any]]
) -> None:
    """Store known users' component candidates in each hybrid (`Hybrid.precompute_candidates`)."""
    if budget_mb <= 0:
        return
    for name, model in models.items():
        if isinstance(model, Hybrid):
            start = time.perf_counter()
            stored = model.precompute_candidates(budget_mb * 2**20)
            info[name]["precomputed_candidates"] = {
                "stored": stored,
                "seconds": round(time.perf_counter() - start, 3),
            }


def precompute_ranking(
    models: Mapping[str, Recommender], n: int, budget_mb: int, info: dict[str, dict[str, Any]]
) -> None:
    """Store known users' top-``n`` in each model that ranks the whole catalog per request."""
    if n <= 0 or budget_mb <= 0:
        return
    for name, model in models.items():
        if type(model).ranks_whole_catalog:
            start = time.perf_counter()
            stored = model.precompute_ranking(n, budget_mb * 2**20)
            info[name]["precomputed_ranking"] = {
                "n": n,
                "stored": stored,
                "seconds": round(time.perf_counter() - start, 3),
            }


def precompute_top_n(model: Recommender, name: str, n: int) -> TopN:
    """Every known user's top-``n`` of ``model`` (seen items excluded), for the bundle."""
    users = model._fitted()[0]
    recs = model.recommend(users.ids, n)
    return TopN.from_recommendations(name, recs, users)


def train_pipeline(
    cfg: PipelineConfig,
    model_dir: str | Path,
    *,
    data_home: str | Path | None = None,
    train_path: str | Path | None = None,
    valid_path: str | Path | None = None,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    promote: bool = True,
    evaluate: bool = True,
    bundle_options: BundleOptions | None = None,
    console: Console | None = None,
    prepared: PreparedData | None = None,
) -> TrainResult:
    """Train the configured models and write them as a new version of the model store.

    With the configured data source: split, tune on valid, evaluate on test (the report
    stored in the manifest), then fit the final models on *all* the data. With
    ``train_path`` (and optionally ``valid_path``): tune and evaluate on the valid file,
    then fit on train + valid. ``items_path`` / ``users_path`` give the catalog and user
    attributes that go with ``train_path`` (content, hybrid and router need the catalog);
    without ``valid_path``, tune and report on a validation split carved from the training
    file (`carve_validation`), then fit on all of it. ``prepared`` gives the data already
    loaded and preprocessed instead (retraining's merge of the data with the feedback),
    split as the configured source would be.

    A failure anywhere leaves the store as it was: the new version is written aside and
    ``current`` moves only when it is complete.
    """
    reports: list[ModelReport] = []
    if prepared is None:
        prepared = prepare_data(
            cfg.data,
            data_home=data_home,
            interactions=train_path,
            items=items_path,
            users=users_path,
        )
    report_preparation(prepared, console)
    items = prepared.items
    final_df = prepared.interactions
    chosen = {name: dict(spec.params) for name, spec in cfg.enabled_models().items()}
    if train_path is not None:
        if valid_path is not None:
            valid = prepare_data(
                cfg.data,
                interactions=valid_path,
                conversion=prepared.conversion,
                training=False,
            ).interactions
            split = Split(train=prepared.interactions, test=valid, valid=valid)
            if evaluate:
                reports, chosen = evaluate_pipeline(
                    cfg.model_copy(update={"refit_on_valid": False}),
                    split,
                    items=items,
                    console=console,
                )
            final_df = pl.concat([prepared.interactions, valid])
        elif evaluate:
            # No validation file: tune (and report) on a carve-out; the final fit uses all.
            split = _carve(prepared.interactions, cfg.split)
            reports, chosen = evaluate_pipeline(
                cfg.model_copy(update={"refit_on_valid": False}),
                split,
                items=items,
                console=console,
            )
    elif evaluate:
        split = split_data(prepared.interactions, cfg.split)
        reports, chosen = evaluate_pipeline(cfg, split, items=items, console=console)

    target = cfg.evaluation.target
    runnable = runnable_models(
        cfg, items, console if not reports else None, data_shape(final_df, items)
    )
    if not reports:
        # Nothing tuned: the params as runnable_models adapted them (retrievers, labels).
        chosen = {name: dict(spec.params) for name, spec in runnable.items()} or chosen
    names = [n for n in chosen if n in runnable] or [n for n in runnable] or list(chosen)
    scored = {r.name: r.metrics.get(target, float("-inf")) for r in reports}
    if scored:
        default_model = max(names, key=lambda n: scored.get(n, float("-inf")))
    else:
        # Nothing was evaluated: the first personalized model, not the baseline.
        default_model = next((n for n in names if n != BASELINE), names[0])
    final = InteractionData.from_frame(final_df, items_table=items, users_table=prepared.users)

    options = bundle_options or bundle_options_from(cfg.bundle)

    def write(path: Path) -> dict[str, Any]:
        info: dict[str, dict[str, Any]] = {}
        top_n = None
        fitted: dict[str, Recommender] = {}
        with _progress(console) as progress:
            task = progress.add_task("train", total=len(names))
            for name in fit_order(cfg, names):
                spec = cfg.models.get(name)
                model_name = spec.model if spec else name
                model, seconds = fit_model(model_name, chosen[name], final, fitted)
                fitted[name] = model
                info[name] = {"params": model.config.model_dump(), "fit_seconds": round(seconds, 3)}
                importance = getattr(model, "feature_importance", None)
                if callable(importance):
                    info[name]["feature_importance"] = importance()
                    info[name]["training"] = dict(getattr(model, "info_", {}))
                progress.advance(task)
            models = {name: fitted[name] for name in names}
            precompute_ranking(
                models, cfg.bundle.precompute_ranking, cfg.bundle.precompute_ranking_mb, info
            )
            precompute_candidates(models, cfg.bundle.precompute_candidates_mb, info)
            if cfg.bundle.precompute_top_n:
                top_n = precompute_top_n(
                    models[default_model], default_model, cfg.bundle.precompute_top_n
                )
        manifest = write_bundle(
            path, models, items=items, top_n=top_n, options=options, model_info=info
        )
        config = cfg.model_dump(mode="json")
        return {
            **manifest,
            "code_version": _git_sha(),
            "libraries": _library_versions(),
            "config": config,
            "config_hash": hashlib.sha256(
                json.dumps(config, sort_keys=True).encode("utf-8")
            ).hexdigest(),
            "data": {
                "source": prepared.name,
                **fingerprint(final_df),
                "conversion": asdict(prepared.conversion) if prepared.conversion else None,
            },
            "default_model": default_model,
            "metrics": {r.name: r.to_dict() for r in reports},
            "evaluation": {"target": target, "split": cfg.split.model_dump(mode="json")},
        }

    store = ModelStore(model_dir)
    version = store.write_version(write, promote=promote)
    if cfg.bundle.keep_versions:
        store.prune(cfg.bundle.keep_versions)
    return TrainResult(version, store.root / version, reports, chosen, default_model)
