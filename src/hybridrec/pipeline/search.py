"""Hyperparameter search: Optuna's TPE over the spaces of ``[models.<name>.search]``.

A space maps a hyperparameter to a range (`SearchRange`: ``low``/``high``, optionally ``log``,
``type`` and ``step``) or to a list (categorical). Two keys are special: a hybrid's
``components = {low, high}`` samples each component weight in the range (weights are
renormalized by the hybrid), and a router's ``cold`` / ``warm`` / ``hot`` lists name pipeline
models. A search is bounded by a number of trials and a time budget in seconds (the trial
running at the deadline finishes), and seeded: the same seed, space and data give the same
trials.

What does not depend on a trial is computed once: the training matrix and the validation
evaluator are built by the caller; a composed model (hybrid, router) is fitted once on its
components and each trial only changes its config, with each component's raw scores cached;
a parameter set seen before is not refit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from hybridrec.config import ModelSpec, PipelineConfig, SearchRange
from hybridrec.data.dataset import InteractionData
from hybridrec.errors import ConfigError
from hybridrec.evaluation.evaluator import Evaluator
from hybridrec.models.base import Recommender
from hybridrec.models.hybrid import ComposedRecommender, running_exclude_seen
from hybridrec.models.registry import create_model, get_model_class
from hybridrec.tracking.record import record_trials

if TYPE_CHECKING:
    from hybridrec.evaluation.evaluator import ModelReport

__all__ = ["SearchResult", "check_space", "search_model", "tune_config"]

Space = Mapping[str, SearchRange | list[Any]]
#: Keys a router's space may hold (each a list of pipeline model names).
ROUTE_KEYS = ("cold", "warm", "hot")


@dataclass
class SearchResult:
    """The best parameters found, their score, and every trial (params, score)."""

    best: dict[str, Any]
    score: float
    trials: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    seconds: float = 0.0
    #: The best trial's model, fitted on the search's training data (with ``keep_best``;
    #: never for a composed model, whose trials share one instance).
    model: Recommender | None = None


def _is_int(klass: Any, key: str, rng: SearchRange) -> bool:
    if rng.type is not None:
        return rng.type == "int"
    annotation = klass.Config.model_fields[key].annotation
    return annotation is int or (
        getattr(annotation, "__args__", None) is not None and int in annotation.__args__
    )


def check_space(spec: ModelSpec, pipeline_models: list[str]) -> None:
    """Validate a model's search space against its config.

    Raises:
        ConfigError: An unknown key, a range the model's config rejects, or a route naming
            no pipeline model; the message names the key.
    """
    if not spec.search:
        return
    from pydantic import ValidationError

    klass = get_model_class(spec.model)
    fields = klass.Config.model_fields
    for key, values in spec.search.items():
        if key == "components" and spec.model == "hybrid":
            if not isinstance(values, SearchRange) or values.low < 0:
                raise ConfigError(
                    "components: a weight range {low, high} with low >= 0 (each component's "
                    "weight is sampled in it)"
                )
            continue
        if key not in fields:
            raise ConfigError(f"unknown hyperparameter {key!r}; valid: {', '.join(fields)}")
        if spec.model == "router" and key in ROUTE_KEYS:
            if not isinstance(values, list):
                raise ConfigError(f"{key}: a list of pipeline model names")
            unknown = [v for v in values if v not in pipeline_models]
            if unknown:
                raise ConfigError(
                    f"{key}: {', '.join(map(str, unknown))} not a pipeline model; "
                    f"valid: {', '.join(pipeline_models)}"
                )
            continue
        if isinstance(values, list):
            if not values:
                raise ConfigError(f"{key}: an empty list")
            probes = list(values)
        else:
            as_int = _is_int(klass, key, values)
            probes = [int(values.low), int(values.high)] if as_int else [values.low, values.high]
        for value in probes:
            try:
                klass.Config(**(spec.params | {key: value}))
            except ValidationError as exc:
                raise ConfigError(f"{key} = {value!r}: {exc.errors()[0]['msg']}") from None


def _suggest(trial: Any, klass: Any, space: Space, components: list[str]) -> dict[str, Any]:
    """One point of ``space`` from an Optuna trial (hybrid weights as ``components``)."""
    params: dict[str, Any] = {}
    for key, values in space.items():
        if isinstance(values, list):
            choice = trial.suggest_categorical(key, list(range(len(values))))
            params[key] = values[choice]
        elif key == "components":
            params["components"] = {
                name: trial.suggest_float(
                    f"weight.{name}", values.low, values.high, step=values.step
                )
                for name in components
            }
        elif _is_int(klass, key, values):
            step = int(values.step) if values.step else 1
            params[key] = trial.suggest_int(
                key, int(values.low), int(values.high), log=values.log, step=step
            )
        else:
            params[key] = trial.suggest_float(
                key, values.low, values.high, log=values.log, step=values.step
            )
    return params


def _in_range(value: Any, values: SearchRange) -> bool:
    """Whether ``value`` is a point of a numeric search range (on its step grid)."""
    if value is None or isinstance(value, bool) or not values.low <= value <= values.high:
        return False
    if values.step is None:
        return True
    steps = (value - values.low) / values.step
    return math.isclose(steps, round(steps))


def _configured_point(
    klass: Any, params: Mapping[str, Any], space: Space, components: list[str]
) -> dict[str, Any] | None:
    """The configured values as an Optuna trial of ``space`` (None when one lies outside).

    Trial 1 of every search is the configuration as written (its values, else the model's
    defaults), so the search can only improve on it on the validation split.
    """
    try:
        defaults = klass.Config()
    except ValueError:  # a config without defaults for every key: only what is given
        defaults = None
    point: dict[str, Any] = {}
    for key, values in space.items():
        value = params.get(key, getattr(defaults, key, None))
        if isinstance(values, list):
            matches = [i for i, v in enumerate(values) if v == value]
            if not matches:
                return None
            point[key] = matches[0]
        elif key == "components":
            weights = dict(value or {})
            for name in components:
                w = weights.get(name)
                if w is None or not values.low <= float(w) <= values.high:
                    return None
                point[f"weight.{name}"] = float(w)
        elif _in_range(value, values):
            point[key] = int(value) if _is_int(klass, key, values) else float(value)
        else:
            return None
    return point


def _cache_component_scores(model: ComposedRecommender) -> Callable[[], None]:
    """Cache a composed model's component answers (they do not change between trials).

    Dense scores, proposals and top-k lists alike, keyed by the block and the call's
    settings; the returned function removes the cache.
    """
    cache: dict[tuple[Any, ...], Any] = {}
    names = ("_component_scores", "_component_proposal", "_component_topk")

    def wrap(method: Callable[..., Any], label: str) -> Callable[..., Any]:
        def cached(name: str, users: Any, history: Any, fold_in: Any, *args: Any, **kw: Any) -> Any:
            values = [*args, *(v for _, v in sorted(kw.items()))]
            # A call that leaves exclude_seen unset follows the running recommend call's.
            settings = (
                running_exclude_seen(),
                *(v.tobytes() if isinstance(v, np.ndarray) else v for v in values),
            )
            key = (label, name, np.asarray(users).tobytes(), history.indptr.tobytes(), settings)
            if key not in cache:
                cache[key] = method(name, users, history, fold_in, *args, **kw)
            return cache[key]

        return cached

    for label in names:
        setattr(model, label, wrap(getattr(model, label), label))

    def restore() -> None:
        for label in names:
            delattr(model, label)

    return restore


def search_model(
    model: str,
    params: dict[str, Any],
    space: Space,
    train: InteractionData,
    evaluator: Evaluator,
    *,
    target: str,
    trials: int,
    budget_s: float | None = None,
    seed: int = 42,
    components: Mapping[str, Recommender] | None = None,
    progress: Progress | None = None,
    console: Console | None = None,
    label: str | None = None,
    keep_best: bool = False,
) -> SearchResult:
    """Search ``space`` with TPE on the validation split; return the best params.

    Args:
        model: Registered model name.
        params: The configured hyperparameters (the search overrides the searched keys).
        space: Parameter → `SearchRange` or list of values.
        train: Data the trial models are fit on.
        evaluator: Scores a fitted model on the validation split.
        target: Metric maximized, e.g. ``ndcg@10``.
        trials: At most this many trials.
        budget_s: At most this many seconds (the trial running at the deadline finishes).
        seed: Seed of the TPE sampler.
        components: Fitted pipeline models a composed model (hybrid, router) is built on.
        progress: A rich progress display to add this search's bar to.
        console: Where the best trial is printed.
        label: Name shown in the progress bar and the summary (default: ``model``).
        keep_best: Keep the best trial's fitted model (`SearchResult.model`), so that a
            caller needing that model on the same data does not fit it again; two models are
            then alive at once while searching.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    klass = get_model_class(model)
    label = label or model
    composed: ComposedRecommender | None = None
    restore: Callable[[], None] | None = None
    if issubclass(klass, ComposedRecommender):
        built = create_model(model, params)
        assert isinstance(built, ComposedRecommender)
        if components:
            built.attach(dict(components))
        built.fit(train)
        composed = built
        restore = _cache_component_scores(built)
    weights_of = list(params.get("components", {})) if "components" in space else []
    seen: dict[str, float] = {}
    history: list[tuple[dict[str, Any], float]] = []
    kept: list[tuple[float, Recommender]] = []
    task = progress.add_task(f"search {label}", total=trials) if progress else None
    start = time.perf_counter()

    def objective(trial: Any) -> float:
        candidate = params | _suggest(trial, klass, space, weights_of)
        key = repr(sorted(candidate.items()))
        if key in seen:
            score = seen[key]
        else:
            if "components" in space and sum(candidate["components"].values()) <= 0:
                score = float("-inf")
            elif composed is not None:
                composed.config = klass.Config(**candidate)
                score = evaluator.evaluate(composed).metrics[target]
            else:
                fitted = create_model(model, candidate)
                fitted.fit(train)
                score = evaluator.evaluate(fitted).metrics[target]
                if keep_best and (not kept or score > kept[0][0]):
                    kept[:] = [(score, fitted)]
                del fitted
            seen[key] = score
        history.append((candidate, score))
        if progress is not None and task is not None:
            best = max(s for _, s in history)
            progress.update(task, advance=1, description=f"search {label} best {best:.4f}")
        return score if math.isfinite(score) else -1.0

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(trials // 3, 1)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    configured = _configured_point(klass, params, space, weights_of)
    if configured is not None:
        study.enqueue_trial(configured)
    try:
        study.optimize(objective, n_trials=trials, timeout=budget_s, catch=())
    finally:
        if restore is not None:
            restore()
    if progress is not None and task is not None:
        progress.remove_task(task)
    best_params, best_score = max(history, key=lambda t: t[1])
    seconds = time.perf_counter() - start
    times = [(t.datetime_start, t.datetime_complete) for t in study.trials]
    record_trials(label, target, history, times)  # nested runs of a tracked run
    best_model = kept[0][1] if kept and kept[0][0] == best_score else None
    if console is not None:
        shown = {k: v for k, v in best_params.items() if k in space}
        console.print(
            escape(
                f"search {label}: best {target} {best_score:.4f} of {len(history)} trials "
                f"({seconds:.1f}s): " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
            ),
            highlight=False,
            soft_wrap=True,
        )
    return SearchResult(best_params, best_score, history, seconds, best_model)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def tune_config(
    cfg: PipelineConfig,
    *,
    trials: int | None = None,
    budget_s: float | None = None,
    train_path: str | Path | None = None,
    valid_path: str | Path | None = None,
    items_path: str | Path | None = None,
    data_home: str | Path | None = None,
    console: Console | None = None,
) -> tuple[PipelineConfig, list[ModelReport]]:
    """Search a pipeline config's spaces and return the config with the chosen values.

    The validation split is ``valid_path`` (with ``train_path``), else the config's split
    (its ``valid`` part; the test part is not touched), else a carve-out of the training
    data (`hybridrec.data.split.carve_validation`).

    Args:
        cfg: The pipeline config.
        trials: Trials per searched model, overriding ``[tuning] trials`` and every
            model's ``search_trials``.
        budget_s: Seconds per model's search, overriding ``[tuning] budget_s``.
        train_path: Training interactions replacing the configured source.
        valid_path: Validation interactions (with ``train_path``).
        items_path: The item catalog that goes with ``train_path``.
        data_home: Where registered datasets live.
        console: Progress bars and each search's best trial.

    Returns:
        The tuned config (searched models hold the chosen values and no search space, grid
        or weight/route tuning) and the validation reports.
    """
    from hybridrec.data.split import Split
    from hybridrec.pipeline.train import _carve, evaluate_pipeline, prepare_data, split_data

    updates: dict[str, Any] = {}
    if trials is not None:
        updates["trials"] = trials
    if budget_s is not None:
        updates["budget_s"] = budget_s
    models = {
        name: spec.model_copy(update={"search_trials": None}) if trials is not None else spec
        for name, spec in cfg.models.items()
    }
    run = cfg.model_copy(
        update={
            "tuning": cfg.tuning.model_copy(update=updates),
            "models": models,
            "refit_on_valid": False,
        }
    )
    prepared = prepare_data(
        cfg.data, data_home=data_home, interactions=train_path, items=items_path
    )
    if valid_path is not None:
        valid = prepare_data(
            cfg.data, interactions=valid_path, conversion=prepared.conversion, training=False
        ).interactions
        split = Split(train=prepared.interactions, test=valid, valid=valid)
    else:
        df = prepared.interactions
        if train_path is None:
            configured = split_data(df, cfg.split)
            if configured.valid is not None and configured.valid.height:
                df = configured.train
                split = Split(configured.train, configured.valid, configured.valid)
        if train_path is not None or df is prepared.interactions:
            split = _carve(df, cfg.split)
    reports, chosen = evaluate_pipeline(run, split, items=prepared.items, console=console)
    tuned = {
        name: spec.model_copy(
            update={
                "params": chosen[name],
                "tune": {},
                "search": {},
                "search_trials": None,
                "tune_weights": None,
                "tune_routes": False,
            }
        )
        if name in chosen
        else spec
        for name, spec in cfg.models.items()
    }
    return cfg.model_copy(update={"models": tuned}), reports
