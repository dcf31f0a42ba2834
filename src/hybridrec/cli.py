"""The ``hybridrec`` command line: train, recommend, evaluate, similar, report, datasets."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hybridrec.errors import DataError, HybridrecError, UnknownIdError
from hybridrec.serving.cli import DatabaseOpt, DataDirOpt

if TYPE_CHECKING:
    import polars as pl

__all__ = ["app"]

app = typer.Typer(
    rich_markup_mode=None,
    help="hybridrec: train, evaluate and query hybrid recommenders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(rich_markup_mode=None, help="Built-in datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
export_app = typer.Typer(
    rich_markup_mode=None, help="Export data for trainers outside hybridrec.", no_args_is_help=True
)
app.add_typer(export_app, name="export")
bundle_app = typer.Typer(
    rich_markup_mode=None,
    help="Model bundles and the model store: save, verify, info, list, promote, rollback, "
    "import, prune.",
    no_args_is_help=True,
)
app.add_typer(bundle_app, name="bundle")


def _register_serving() -> None:
    # serve / events export live with the service; their heavy imports wait for the command.
    from hybridrec.serving.cli import register

    register(app)


_register_serving()

# Tables are wide; when piped (no terminal to size them by) keep them whole.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _friendly(fn: F) -> F:
    """Turn a `HybridrecError` into one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HybridrecError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (OSError, MemoryError) as exc:
            msg = escape(f"{type(exc).__name__}: {exc}")
            err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class UnknownPolicy(StrEnum):
    """What ``recommend`` does with users the model does not know."""

    fallback = "fallback"
    skip = "skip"
    error = "error"


class Engine(StrEnum):
    """Where ``recommend`` scores one model's batch."""

    local = "local"
    spark = "spark"


class OutputFormat(StrEnum):
    """How ``evaluate`` prints."""

    table = "table"
    json = "json"


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Pipeline config (TOML).")]
ModelDirOpt = Annotated[
    Path, typer.Option("--model-dir", help="Model store directory.", envvar="HYBRIDREC_MODEL_DIR")
]
VersionOpt = Annotated[
    str | None, typer.Option("--version", help="Version to read (default: current).")
]
CompressOpt = Annotated[
    str | None,
    typer.Option(
        "--compress",
        help="Compress bundle files: zlib, gzip, xz or lz4, optionally with ':LEVEL' "
        "(default: the config's [bundle] compress, normally none = memory-mappable).",
    ),
]
CompressLevelOpt = Annotated[
    int | None, typer.Option("--compress-level", help="Compression level 1-9.")
]
Float32Opt = Annotated[
    bool | None,
    typer.Option("--float32/--no-float32", help="Store float64 arrays as float32 (half size)."),
]
ItemsOpt = Annotated[
    Path | None,
    typer.Option(
        "--items",
        help="Item catalog (CSV/Parquet: item_id, title, categories...; the config's [data] "
        "columns mapping applies) for content, hybrid and router; with --train.",
    ),
]
UsersOpt = Annotated[
    Path | None,
    typer.Option("--users", help="User attributes (CSV/Parquet, user_id, ...); with --train."),
]
PromoteOpt = Annotated[
    bool, typer.Option("--promote/--no-promote", help="Make the new version current.")
]


def _write_table(df: pl.DataFrame, path: Path) -> None:
    """CSV or Parquet by extension, written atomically."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DataError(f"{path}: output must end in .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if suffix == ".csv":
        df.write_csv(tmp)
    else:
        df.write_parquet(tmp)
    tmp.replace(path)


@app.command()
@_friendly
def train(
    config: ConfigOpt = Path("configs/default.toml"),
    train_path: Annotated[
        Path | None,
        typer.Option("--train", help="Training interactions (CSV/Parquet); overrides the config."),
    ] = None,
    valid_path: Annotated[
        Path | None,
        typer.Option("--valid", help="Validation interactions for tuning and the report."),
    ] = None,
    items_path: ItemsOpt = None,
    users_path: UsersOpt = None,
    model_dir: ModelDirOpt = Path("models"),
    promote: PromoteOpt = True,
    evaluate: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="Hold out, tune and report first.")
    ] = True,
    compress: CompressOpt = None,
    compress_level: CompressLevelOpt = None,
    float32: Float32Opt = None,
    data_home: Annotated[Path | None, typer.Option(envvar="HYBRIDREC_DATA_HOME")] = None,
) -> None:
    """Train the configured models and save them as a new version in the model store."""
    from hybridrec.config import load_config
    from hybridrec.evaluation.report import comparison_table, importance_tables, segment_table
    from hybridrec.pipeline.train import train_pipeline
    from hybridrec.tracking import tracked_run

    if valid_path is not None and train_path is None:
        raise DataError("--valid needs --train")
    if train_path is None and (items_path is not None or users_path is not None):
        raise DataError("--items and --users need --train (the configured source has its own)")
    cfg = load_config(config)
    options = _bundle_options(cfg.bundle, compress, compress_level, float32)
    start = time.perf_counter()
    with tracked_run("train", cfg, console=err) as run:
        result = train_pipeline(
            cfg,
            model_dir,
            data_home=data_home,
            train_path=train_path,
            valid_path=valid_path,
            items_path=items_path,
            users_path=users_path,
            promote=promote,
            evaluate=evaluate,
            bundle_options=options,
            console=err,
        )
        run.add_train(result, model_dir, promoted=promote)
    if result.reports:
        ks = cfg.evaluation.k
        out.print(comparison_table(result.reports, ks, target=cfg.evaluation.target))
        out.print(segment_table(result.reports, target=cfg.evaluation.target))
        for table in importance_tables(result.reports):
            out.print(table)
    state = "current" if promote else "not promoted"
    out.print(
        f"saved version [bold]{result.version}[/bold] ({state}) in {model_dir} "
        f"— default model: {result.default_model} — {time.perf_counter() - start:.1f}s"
    )


def _bundle_options(cfg: Any, compress: str | None, level: int | None, float32: bool | None) -> Any:
    """Bundle options from the config's [bundle] section, overridden by CLI flags."""
    from hybridrec.bundle import BundleOptions, Compression

    spec = compress if compress is not None else cfg.compress
    lvl = level if level is not None else (cfg.compress_level if compress is None else None)
    return BundleOptions(Compression.parse(spec, lvl), cfg.float32 if float32 is None else float32)


@app.command()
@_friendly
def evaluate(
    config: ConfigOpt = Path("configs/default.toml"),
    train_path: Annotated[
        Path | None, typer.Option("--train", help="Training interactions (with --test).")
    ] = None,
    test_path: Annotated[
        Path | None, typer.Option("--test", help="Held-out interactions (with --train).")
    ] = None,
    items_path: ItemsOpt = None,
    users_path: UsersOpt = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
    plot: Annotated[Path | None, typer.Option(help="Also write a PNG chart here.")] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model-dir",
            help="Score the models of a trained version on --test instead of training.",
        ),
    ] = None,
    version: VersionOpt = None,
    cold_start: Annotated[
        bool,
        typer.Option(
            "--cold-start/--no-cold-start",
            help="Also report the cold-item and cold-user splits (table format, catalog and "
            "a content model needed).",
        ),
    ] = True,
    data_home: Annotated[Path | None, typer.Option(envvar="HYBRIDREC_DATA_HOME")] = None,
) -> None:
    """Evaluate every configured model (and popularity) on held-out data.

    With --model-dir, the stored models of the current version (or --version) are scored
    on --test as they are, without training.
    """
    from hybridrec.evaluation.report import (
        comparison_table,
        importance_tables,
        plot_reports,
        reports_to_json,
        segment_table,
    )
    from hybridrec.tracking import tracked_run

    progress = err if output_format is OutputFormat.table else None
    start = time.perf_counter()
    with tracked_run("evaluate", console=err) as run:
        cfg, reports, prepared = _evaluate_any(
            config,
            train_path,
            test_path,
            items_path,
            users_path,
            model_dir,
            version,
            data_home,
            progress,
        )
        run.add_config(cfg)
        run.add_reports(reports)
        total = time.perf_counter() - start
        if output_format is OutputFormat.json:
            sys.stdout.write(reports_to_json(reports) + "\n")
        else:
            out.print(comparison_table(reports, cfg.evaluation.k, target=cfg.evaluation.target))
            out.print(segment_table(reports, target=cfg.evaluation.target))
            for table in importance_tables(reports):
                out.print(table)
            out.print(f"{len(reports)} models, {reports[0].n_users} test users, {total:.1f}s")
            if cold_start and prepared is not None:
                run.add_cold_start(_print_cold_start(cfg, prepared))
        if plot is not None:
            run.add_artifact(plot_reports(reports, plot, ks=cfg.evaluation.k), "plots")


def _evaluate_any(
    config: Path | None,
    train_path: Path | None,
    test_path: Path | None,
    items_path: Path | None,
    users_path: Path | None,
    model_dir: Path | None,
    version: str | None,
    data_home: Path | None,
    progress: Console | None,
) -> tuple[Any, list[Any], Any]:
    """``evaluate``'s config, reports and prepared data (a stored version's or a config's)."""
    from hybridrec.config import load_config

    if model_dir is not None:
        if test_path is None or train_path is not None:
            raise DataError("--model-dir takes --test (and no --train: the models are trained)")
        cfg, reports = _evaluate_stored(model_dir, version, test_path, config)
        return cfg, reports, None
    if (train_path is None) != (test_path is None):
        raise DataError("--train and --test go together")
    if train_path is None and (items_path is not None or users_path is not None):
        raise DataError("--items and --users go with --train and --test")
    cfg = load_config(config)
    reports, prepared = _evaluate_config(
        cfg, train_path, test_path, data_home, progress, items_path, users_path
    )
    return cfg, reports, prepared


def _print_cold_start(cfg: Any, prepared: Any) -> dict[str, list[Any]]:
    """Cold-item and cold-user tables for the pipeline's single models (content needed).

    Returns the evaluations by split (none without a catalog and a content model).
    """
    from hybridrec.data.coldstart import cold_start_reports
    from hybridrec.evaluation.report import comparison_table
    from hybridrec.models.hybrid import ComposedRecommender
    from hybridrec.models.registry import create_model
    from hybridrec.pipeline.train import BASELINE, runnable_models

    specs = runnable_models(cfg, prepared.items)
    if prepared.items is None or not any(s.model == "content" for s in specs.values()):
        return {}

    def make() -> dict[str, Any]:
        models = {BASELINE: create_model(BASELINE)}
        for name, spec in specs.items():
            model = create_model(spec.model, dict(spec.params))
            if not isinstance(model, ComposedRecommender):
                models[name] = model
        return models

    with err.status("cold-start splits: fitting the models twice more"):
        cold = cold_start_reports(prepared.interactions, prepared.items, make, ks=cfg.evaluation.k)
    target = "recall@20" if 20 in cfg.evaluation.k else cfg.evaluation.target
    titles = {
        "cold_items": "cold items: 10% of items held out entirely (their catalog rows kept)",
        "cold_users": "cold users: 1-3 training interactions",
    }
    for key, reports in cold.items():
        out.print(comparison_table(reports, cfg.evaluation.k, target=target, title=titles[key]))
    return dict(cold)


def _evaluate_config(
    cfg: Any,
    train_path: Path | None,
    test_path: Path | None,
    data_home: Path | None,
    progress: Console | None,
    items_path: Path | None = None,
    users_path: Path | None = None,
) -> tuple[list[Any], Any]:
    """Reports of the configured pipeline, and its prepared data.

    The prepared data is None with --train/--test; the cold-start tables reuse it otherwise.
    """
    from hybridrec.data.split import Split
    from hybridrec.pipeline.train import (
        evaluate_pipeline,
        prepare_data,
        report_preparation,
        split_data,
    )

    if train_path is not None and test_path is not None:
        train = prepare_data(cfg.data, interactions=train_path, items=items_path, users=users_path)
        report_preparation(train, progress)
        test_df = prepare_data(
            cfg.data, interactions=test_path, conversion=train.conversion, training=False
        ).interactions
        split = Split(train=train.interactions, test=test_df)
        items, prepared = train.items, None
    else:
        prepared = prepare_data(cfg.data, data_home=data_home)
        report_preparation(prepared, progress)
        split, items = split_data(prepared.interactions, cfg.split), prepared.items
    reports, _ = evaluate_pipeline(cfg, split, items=items, console=progress)
    return reports, prepared


def _evaluate_stored(
    model_dir: Path, version: str | None, test_path: Path, config: Path | None
) -> tuple[Any, list[Any]]:
    """Score a stored version's models on a test file, preprocessed as at training."""
    from hybridrec.pipeline.artifacts import load_pipeline
    from hybridrec.pipeline.train import evaluate_fitted
    from hybridrec.tracking import active

    bundle = load_pipeline(model_dir, version)
    if (run := active()) is not None:
        run.tags["bundle_version"] = bundle.version
    cfg, test_df = _held_out_for(bundle, test_path, config)
    return cfg, evaluate_fitted(bundle.models(), test_df, cfg.evaluation)


def _held_out_for(bundle: Any, path: Path, config: Path | None) -> tuple[Any, pl.DataFrame]:
    """A stored version's config, and a held-out file converted as its training data was."""
    from hybridrec.config import PipelineConfig, load_config
    from hybridrec.pipeline.train import prepare_data, stored_conversion

    stored = bundle.manifest.get("config")
    cfg = PipelineConfig.model_validate(stored) if stored else load_config(config)
    held_out = prepare_data(
        cfg.data,
        interactions=path,
        conversion=stored_conversion(bundle.manifest),
        training=False,
    ).interactions
    return cfg, held_out


#: Columns of a users file that are not attributes.
_USERS_FILE_EVENT_COLUMNS = ("user_id", "item_id", "weight", "rating", "timestamp", "event_type")


def _read_users(
    users_file: Path,
) -> tuple[list[Any], dict[Any, list[Any]], dict[Any, dict[str, Any]]]:
    """Users to answer, their extra history and their attributes from a users file.

    The file has a ``user_id`` column; rows that also carry an ``item_id`` are history
    (for users the model has not seen: fold-in); any other column is an attribute (each
    user's first non-empty value), for a two-tower model with user features.
    """
    import polars as pl

    from hybridrec.data.loaders import read_table

    df = read_table(users_file)
    if "user_id" not in df.columns:
        raise DataError(f"{users_file}: missing column 'user_id' (found: {', '.join(df.columns)})")
    users = df["user_id"].unique(maintain_order=True).to_list()
    history: dict[Any, list[Any]] = {}
    if "item_id" in df.columns:
        for row in df.select("user_id", "item_id").drop_nulls().iter_rows():
            history.setdefault(row[0], []).append(row[1])
    columns = [c for c in df.columns if c not in _USERS_FILE_EVENT_COLUMNS]
    attributes: dict[Any, dict[str, Any]] = {}
    if columns:
        firsts = df.group_by("user_id", maintain_order=True).agg(
            pl.col(c).drop_nulls().first() for c in columns
        )
        for first in firsts.iter_rows(named=True):
            values = {c: first[c] for c in columns if first[c] is not None}
            if values:
                attributes[first["user_id"]] = values
    return users, history, attributes


@app.command()
@_friendly
def recommend(
    model_dir: ModelDirOpt = Path("models"),
    user: Annotated[
        list[str] | None, typer.Option("--user", help="A user id (repeatable).")
    ] = None,
    users_file: Annotated[
        Path | None,
        typer.Option(
            "--users-file",
            help="CSV/Parquet with user_id (item_id rows as history, other columns as "
            "attributes for a two-tower with user features).",
        ),
    ] = None,
    all_users: Annotated[bool, typer.Option("--all-users", help="Every known user.")] = False,
    k: Annotated[int, typer.Option("-k", "--k", help="Items per user.")] = 10,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name (default: the best one).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write CSV or Parquet instead.")
    ] = None,
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="Allow items the user already has.")
    ] = False,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            help="auto (router), hybrid, als, content, two_tower, ranked, popular or mixed, "
            "with the fallback chain behind it (instead of one --model).",
        ),
    ] = None,
    alpha: Annotated[float, typer.Option(help="ALS weight of the mixed strategy.")] = 0.8,
    category: Annotated[
        list[str] | None, typer.Option("--category", help="Only items in this category.")
    ] = None,
    exclude_category: Annotated[
        list[str] | None, typer.Option("--exclude-category", help="No items in this category.")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help="Only these item ids (repeatable; the API's allow list)."),
    ] = None,
    deny: Annotated[
        list[str] | None,
        typer.Option("--deny", help="Never these item ids (repeatable; the API's deny list)."),
    ] = None,
    min_popularity: Annotated[
        int | None, typer.Option(help="Only items with at least this many interactions.")
    ] = None,
    mmr: Annotated[
        float | None, typer.Option(help="Diversity re-ranking lambda (1 = relevance only).")
    ] = None,
    unknown: Annotated[
        UnknownPolicy,
        typer.Option(
            "--unknown",
            help="Users the model does not know (and without history): answer them through "
            "the fallback chain (the method column says which model did), skip them (counted "
            "on stderr), or stop with an error.",
        ),
    ] = UnknownPolicy.fallback,
    reasons: Annotated[
        bool,
        typer.Option(
            "--reasons/--no-reasons",
            help="Fill the reason column (with --no-reasons it is empty; batches are faster).",
        ),
    ] = True,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="Score the batch in this process (local, in blocks) or on Spark (an ALS "
            "model: its configured master, else SPARK_MASTER, else local[*]; needs the spark "
            "extra). Same columns and rows either way.",
        ),
    ] = Engine.local,
    version: VersionOpt = None,
) -> None:
    """Recommend top-k items: ``user_id,item_id,rank,score,method,reason``.

    With --model, that model alone answers; with --strategy, the strategy's model and then
    the fallback chain (hybrid, als, two_tower, content, popular) fill every list to k.
    Every item says which model produced it and why it is recommended.
    """
    from hybridrec.models.explain import (
        CHAIN,
        STRATEGIES,
        Rules,
        answer,
        answer_batch,
        answers_frame,
    )
    from hybridrec.pipeline.artifacts import load_pipeline

    chosen = sum([bool(user), users_file is not None, all_users])
    if chosen != 1:
        raise DataError("give exactly one of --user, --users-file or --all-users")
    if k <= 0:
        raise DataError(f"-k must be a positive integer (got {k})")
    if strategy is not None and model is not None:
        raise DataError("give --strategy or --model, not both")
    if strategy is not None and strategy not in STRATEGIES:
        raise DataError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if engine is Engine.spark and (strategy is not None or mmr is not None):
        raise DataError("--engine spark scores one --model's batch (no --strategy or --mmr)")
    pipeline = load_pipeline(model_dir, version)
    rec = pipeline.model(model)
    k = _clamp_k(k, rec, pipeline.items)
    history: dict[Any, list[Any]] = {}
    attributes: dict[Any, dict[str, Any]] = {}
    if user:
        import numpy as np

        ids: list[Any] = list(rec._fitted()[0].coerce(np.asarray(user)).tolist())
    elif users_file is not None:
        ids, history, attributes = _read_users(users_file)
    else:
        assert rec.users_ is not None
        ids = rec.users_.to_list()
    rules = Rules(
        exclude_seen=not include_seen,
        include_categories=category or None,
        exclude_categories=exclude_category or None,
        allow=allow or None,
        deny=deny or None,
        min_popularity=min_popularity,
        mmr_lambda=mmr,
    )
    if strategy is None and mmr is None:
        # One model for the whole batch (blocked, threaded, vectorized reasons); users it
        # does not know go to the fallback chain, are skipped, or stop it (--unknown).
        batch = answer_batch(
            pipeline.get,
            ids,
            k,
            model=model or pipeline.default_model,
            rules=rules,
            history=history or None,
            items_table=pipeline.items,
            unknown=unknown.value,
            reasons=reasons,
            attributes=attributes or None,
            engine=engine.value,
        )
        if batch.fallback:
            err.print(f"{batch.fallback} unknown user(s) answered through the fallback chain")
        if batch.skipped:
            err.print(f"skipped {batch.skipped} unknown user(s)")
        _emit(batch.frame, output, len(ids) - batch.skipped, pipeline.items)
        return
    users = rec._fitted()[0]
    lost = [u for u in ids if u not in users and u not in history and u not in attributes]
    if lost and unknown is UnknownPolicy.error:
        raise UnknownIdError(
            "user",
            lost,
            hint="not in the model's training data; --unknown fallback answers them "
            "through the fallback chain",
        )
    if lost and unknown is UnknownPolicy.skip:
        gone = set(lost)
        ids = [u for u in ids if u not in gone]
        err.print(f"skipped {len(lost)} unknown user(s)")
    answers = answer(
        pipeline.get,
        ids,
        k,
        strategy=strategy or "auto",
        alpha=alpha,
        rules=rules,
        history=history or None,
        items_table=pipeline.items,
        first=None if strategy else (model or pipeline.default_model),
        chain=CHAIN if strategy else (),
        explain=reasons,
        attributes=attributes or None,
    )
    if strategy is None and lost and unknown is UnknownPolicy.fallback:
        # --model with --mmr: the model alone answers known users, the chain the others.
        gone = set(lost)
        again = answer(
            pipeline.get,
            lost,
            k,
            rules=rules,
            items_table=pipeline.items,
            first=model or pipeline.default_model,
            chain=CHAIN,
            explain=reasons,
        )
        by_user = dict(zip(lost, again, strict=True))
        answers = [by_user.get(a.user_id, a) if a.user_id in gone else a for a in answers]
        err.print(f"{len(lost)} unknown user(s) answered through the fallback chain")
    _emit(answers_frame(answers), output, len(answers), pipeline.items)


def _emit(frame: pl.DataFrame, output: Path | None, n_users: int, items: Any) -> None:
    """``recommend``'s table to a file (CSV/Parquet) or stdout."""
    if output is not None:
        _write_table(frame, output)
        err.print(f"wrote {frame.height} rows for {n_users} users to {output}")
        return
    _print_ranked(frame, items, "user_id")


def _clamp_k(k: int, model: Any, items: pl.DataFrame | None) -> int:
    """``k`` capped at the number of items there are (with a note on stderr when it was)."""
    n_items = max(len(model._fitted()[1]), items.height if items is not None else 0, 1)
    if k > n_items:
        err.print(f"note: -k {k} is more than the {n_items} items; using -k {n_items}")
        return n_items
    return k


def _print_ranked(frame: pl.DataFrame, items: pl.DataFrame | None, key: str) -> None:
    if items is not None and "title" in items.columns:
        import polars as pl

        titles = items.select(pl.col("item_id").cast(frame["item_id"].dtype), "title")
        frame = frame.join(titles, on="item_id", how="left", maintain_order="left")
    if sys.stdout.isatty():
        table = Table(*frame.columns)
        for row in frame.iter_rows():
            table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
        out.print(table)
    else:
        sys.stdout.write(frame.write_csv())


@app.command()
@_friendly
def similar(
    item: Annotated[list[str], typer.Option("--item", help="An item id (repeatable).")],
    model_dir: ModelDirOpt = Path("models"),
    k: Annotated[int, typer.Option("-k", "--k", help="Similar items per query item.")] = 10,
    model: Annotated[str | None, typer.Option("--model", help="Model name.")] = None,
    version: VersionOpt = None,
) -> None:
    """Items most similar to the given ones: ``item_id,similar_item_id,rank,score``."""
    from hybridrec.pipeline.artifacts import load_pipeline

    if k <= 0:
        raise DataError(f"-k must be a positive integer (got {k})")
    pipeline = load_pipeline(model_dir, version)
    rec = pipeline.model(model)
    k = _clamp_k(k, rec, pipeline.items)
    result = rec.similar_items(item, k)
    frame = result.to_frame("query_item_id")
    _print_ranked(frame, pipeline.items, "query_item_id")


@datasets_app.command("list")
@_friendly
def datasets_list(
    data_home: Annotated[Path | None, typer.Option(envvar="HYBRIDREC_DATA_HOME")] = None,
) -> None:
    """List the built-in datasets and whether each is in the data home."""
    from hybridrec.data.datasets import dataset_status, list_datasets

    table = Table("name", "present", "description")
    for info in list_datasets():
        status = dataset_status(info.name, data_home)
        table.add_row(info.name, "yes" if status["present"] else "no", info.description)
    out.print(table)


@datasets_app.command("info")
@_friendly
def datasets_info(
    name: Annotated[str, typer.Argument(help="Dataset name (see 'datasets list').")],
    data_home: Annotated[Path | None, typer.Option(envvar="HYBRIDREC_DATA_HOME")] = None,
) -> None:
    """Where a dataset lives, whether it is present, its license; row counts when present."""
    from hybridrec.data.datasets import dataset_status
    from hybridrec.data.loaders import load_dataset

    status = dataset_status(name, data_home)
    info: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in status.items()}
    if status["present"]:
        raw = load_dataset(name, data_home=data_home, download=False)
        df = raw.interactions
        info["interactions"] = df.height
        info["users"] = df["user_id"].n_unique()
        info["items"] = raw.items.height if raw.items is not None else df["item_id"].n_unique()
    out.print_json(json.dumps(info, default=str))


class DataFormat(StrEnum):
    """File format of written data."""

    parquet = "parquet"
    csv = "csv"


@datasets_app.command("synthesize")
@_friendly
def datasets_synthesize(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")] = Path(
        "data/synthetic"
    ),
    users: Annotated[int, typer.Option("--users", help="Number of user ids.")] = 10_000,
    items: Annotated[int, typer.Option("--items", help="Number of item ids.")] = 1_000,
    interactions: Annotated[
        int, typer.Option("--interactions", help="Rows of the event log.")
    ] = 100_000,
    fmt: Annotated[DataFormat, typer.Option("--format", help="parquet or csv.")] = (
        DataFormat.parquet
    ),
    item_skew: Annotated[
        float, typer.Option("--item-skew", help="Popularity exponent (rank ** -skew).")
    ] = 1.0,
    user_skew: Annotated[float, typer.Option("--user-skew", help="Activity exponent.")] = 0.8,
    ratings: Annotated[
        bool, typer.Option("--ratings/--no-ratings", help="Add a 1-5 rating column.")
    ] = False,
    string_ids: Annotated[
        bool, typer.Option("--string-ids/--int-ids", help="Text ids (u1, i1) instead of integers.")
    ] = False,
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", help="Rows drawn and written at a time (memory).")
    ] = 2_000_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Write a synthetic event log (power-law popularity and activity, timestamps) and catalog.

    Memory is bounded by --chunk-rows, not by --interactions, so logs of hundreds of millions
    of rows can be written for benchmarks.
    """
    from hybridrec.data.synthesize import synthesize_log

    result = synthesize_log(
        output,
        users=users,
        items=items,
        interactions=interactions,
        item_skew=item_skew,
        user_skew=user_skew,
        ratings=ratings,
        string_ids=string_ids,
        fmt=fmt.value,
        chunk_rows=chunk_rows,
        seed=seed,
        console=err,
    )
    out.print(escape(result.describe()), highlight=False, soft_wrap=True)


@export_app.command("interactions")
@_friendly
def export_interactions(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")],
    config: ConfigOpt = Path("configs/default.toml"),
    fmt: Annotated[DataFormat, typer.Option("--format", help="parquet or csv.")] = (
        DataFormat.parquet
    ),
    train_path: Annotated[
        Path | None,
        typer.Option("--train", help="Interactions file (CSV/Parquet); overrides the config."),
    ] = None,
    items_path: ItemsOpt = None,
    data_home: Annotated[Path | None, typer.Option(envvar="HYBRIDREC_DATA_HOME")] = None,
) -> None:
    """Write the prepared interactions (with user_index/item_index) and the id mappings.

    The data is loaded and prepared as 'train' does. Factors trained elsewhere, written as
    user_factors.npy / item_factors.npy in index order (or Spark's id, features tables) into
    the same directory, come back with 'hybridrec bundle import DIR'.
    """
    from hybridrec.config import load_config
    from hybridrec.pipeline.export import export_training_data

    if train_path is None and items_path is not None:
        raise DataError("--items needs --train (the configured source has its own)")
    cfg = load_config(config)
    result = export_training_data(
        cfg.data,
        output,
        fmt=fmt.value,
        data_home=data_home,
        interactions=train_path,
        items=items_path,
        console=err,
    )
    out.print(escape(result.describe()), highlight=False, soft_wrap=True)


@app.command()
@_friendly
def tune(
    valid_path: Annotated[
        Path | None,
        typer.Option(
            "--valid",
            help="Validation interactions (CSV/Parquet). Without --config: required, the "
            "stored hybrid's weights are tuned on it.",
        ),
    ] = None,
    model_dir: ModelDirOpt = Path("models"),
    model: Annotated[str, typer.Option("--model", help="The hybrid to tune.")] = "hybrid",
    step: Annotated[float, typer.Option(help="Grid step on the weight simplex.")] = 0.1,
    version: VersionOpt = None,
    promote: PromoteOpt = True,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Search this pipeline config's spaces on its own (no model store) and write "
            "the best config to --output.",
        ),
    ] = None,
    train_path: Annotated[
        Path | None,
        typer.Option("--train", help="With --config: training interactions (CSV/Parquet)."),
    ] = None,
    items_path: ItemsOpt = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", help="With --config: trials per searched model.", min=1),
    ] = None,
    budget_s: Annotated[
        float | None,
        typer.Option("--budget-s", help="With --config: seconds per model's search."),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="With --config: the best config (TOML).")
    ] = Path("best.toml"),
    data_home: Annotated[Path | None, typer.Option(envvar="HYBRIDREC_DATA_HOME")] = None,
) -> None:
    """Tune: a stored hybrid's weights on --valid, or (--config) a config's search spaces.

    With --config, the spaces of ``[models.<name>.search]`` (and grids) are searched on the
    validation split (--valid, the config's split, or a carve-out of the training data),
    and the config with the chosen values is written to --output.
    """
    if config is not None:
        _tune_config(
            config, train_path, valid_path, trials, budget_s, output, data_home, items_path
        )
        return
    if valid_path is None:
        raise DataError("tune needs --valid (a stored hybrid's weights) or --config (a search)")
    from hybridrec.bundle import ModelStore, save_derived
    from hybridrec.data.dataset import InteractionData
    from hybridrec.evaluation.evaluator import Evaluator
    from hybridrec.models.hybrid import Hybrid, tune_weights
    from hybridrec.pipeline.artifacts import load_pipeline

    if not 0 < step <= 0.5:
        raise DataError(f"--step must be in (0, 0.5] (got {step})")
    bundle = load_pipeline(model_dir, version)
    hybrid = bundle.model(model)
    if not isinstance(hybrid, Hybrid):
        raise DataError(f"model {model!r} of version {bundle.version} is not a hybrid")
    cfg, valid = _held_out_for(bundle, valid_path, None)
    users, items, user_items = hybrid._fitted()
    evaluator = Evaluator(
        InteractionData(user_items.tocsr(), users, items), valid, ks=cfg.evaluation.k
    )
    target = cfg.evaluation.target
    before = evaluator.evaluate(hybrid).metrics[target]
    with err.status(f"searching the weight simplex (step {step})"):
        best, weight_trials = tune_weights(
            hybrid, lambda h: evaluator.evaluate(h).metrics[target], step=step
        )
    table = Table("weights", target)
    for weights, score in sorted(weight_trials, key=lambda t: -t[1])[:5]:
        table.add_row(", ".join(f"{k} {v:.2f}" for k, v in weights.items()), f"{score:.4f}")
    out.print(table)
    new = save_derived(
        bundle,
        ModelStore(model_dir),
        params={model: hybrid.config.model_dump()},
        extra={"tuned": {"model": model, "on": str(valid_path), "target": target, "weights": best}},
        promote=promote,
    )
    _sync_registry(model_dir)
    state = "current" if promote else "not promoted"
    out.print(
        f"{model}: {target} {before:.4f} -> {max(t[1] for t in weight_trials):.4f} with "
        f"{', '.join(f'{k} {v:.2f}' for k, v in best.items())}; saved version "
        f"[bold]{new}[/bold] ({state})"
    )


def _tune_config(
    config: Path,
    train_path: Path | None,
    valid_path: Path | None,
    trials: int | None,
    budget_s: float | None,
    output: Path,
    data_home: Path | None,
    items_path: Path | None = None,
) -> None:
    """``tune --config``: search the config's spaces, write the config with the best values."""
    from hybridrec.config import config_to_toml, load_config
    from hybridrec.evaluation.report import comparison_table
    from hybridrec.pipeline.search import tune_config
    from hybridrec.tracking import tracked_run

    if valid_path is not None and train_path is None:
        raise DataError("--valid needs --train")
    if budget_s is not None and budget_s <= 0:
        raise DataError(f"--budget-s must be positive (got {budget_s})")
    if output.suffix.lower() != ".toml":
        raise DataError(f"{output}: output must end in .toml")
    cfg = load_config(config)
    start = time.perf_counter()
    with tracked_run("tune", cfg, console=err) as run:
        best, reports = tune_config(
            cfg,
            trials=trials,
            budget_s=budget_s,
            train_path=train_path,
            valid_path=valid_path,
            items_path=items_path,
            data_home=data_home,
            console=err,
        )
        run.add_reports(reports)
        run.add_params({name: spec.params for name, spec in best.models.items()}, "chosen")
        out.print(comparison_table(reports, cfg.evaluation.k, target=cfg.evaluation.target))
        header = (
            f"hybridrec tune --config {config}: the chosen values of every searched model\n"
            f"(on the validation split, {cfg.evaluation.target}); load it with --config."
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text(config_to_toml(best, header), encoding="utf-8")
        tmp.replace(output)
        run.add_artifact(output)
    out.print(f"wrote {output} — {time.perf_counter() - start:.1f}s")


@app.command()
@_friendly
def report(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The HTML page to write (atomically).")
    ] = Path("report.html"),
    model_dir: ModelDirOpt = Path("models"),
    version: VersionOpt = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run",
            help="An MLflow train or evaluate run id instead of a stored version (its store: "
            "MLFLOW_TRACKING_URI, else the tracking uri of the current version's config, else the "
            "local store).",
        ),
    ] = None,
) -> None:
    """Write the offline report of a version (or an MLflow run) as one self-contained page.

    Metrics at every K, per-segment bars, metric-vs-K curves, cold-start tables and the
    ranker's feature importance when the evaluation has them, and the store's versions with
    their target metric. Charts are embedded and nothing is loaded: the page opens offline.
    """
    from hybridrec.evaluation.html_report import version_report, write_report

    if version is not None and run_id is not None:
        raise DataError("give --version or --run, not both")
    if output.suffix.lower() not in (".html", ".htm"):
        raise DataError(f"{output}: the report is an HTML page; give --output ending in .html")
    start = time.perf_counter()
    if run_id is not None:
        from hybridrec.tracking.report import run_report, store_tracking

        data = run_report(run_id, store_tracking(model_dir))
    else:
        data = version_report(model_dir, version)
    path = write_report(data, output)
    out.print(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): {data.title}, "
        f"{len(data.reports)} models — {time.perf_counter() - start:.1f}s",
        highlight=False,
        soft_wrap=True,
    )


# ---- bundle ---------------------------------------------------------------------------------


def _store(model_dir: Path) -> Any:
    from hybridrec.bundle import ModelStore

    return ModelStore(model_dir)


def _sync_registry(model_dir: Path) -> None:
    """Mirror the store in the MLflow registry (new versions, ``champion``); never fails."""
    from hybridrec.tracking import sync_store

    sync_store(model_dir, err)


@bundle_app.command("list")
@_friendly
def bundle_list(model_dir: ModelDirOpt = Path("models")) -> None:
    """Versions in the store, oldest first; the current one is marked."""
    from hybridrec.models.footprint import human_bytes

    store = _store(model_dir)
    versions = store.versions()
    if not versions:
        raise DataError(f"{model_dir}: no versions (run 'hybridrec train --model-dir {model_dir}')")
    current = store.current()
    table = Table("", "version", "created", "models", "default", "size", "compression")
    for name in versions:
        m = store.manifest(name)
        bundle = m.get("bundle", {})
        table.add_row(
            "*" if name == current else "",
            name,
            str(m.get("created_at", ""))[:19],
            ", ".join(m.get("models", {})),
            str(m.get("default_model", "")),
            human_bytes(store.size(name)),
            f"{bundle.get('compression', '?')}{' f32' if bundle.get('float32') else ''}",
        )
    out.print(table)


@bundle_app.command("info")
@_friendly
def bundle_info(model_dir: ModelDirOpt = Path("models"), version: VersionOpt = None) -> None:
    """The manifest of a version (reads only manifest.json): JSON on stdout."""
    from hybridrec.bundle.bundle import read_manifest

    manifest = read_manifest(_store(model_dir).path(version))
    files = {
        name: {"size": entry["size"], "sha256": entry["sha256"]}
        for name, entry in manifest.get("files", {}).items()
    }
    sys.stdout.write(json.dumps({**manifest, "files": files}, indent=2, default=str) + "\n")


@bundle_app.command("verify")
@_friendly
def bundle_verify(model_dir: ModelDirOpt = Path("models"), version: VersionOpt = None) -> None:
    """Check every file's SHA-256 and that every part loads; print what is inside."""
    from hybridrec.bundle import Bundle
    from hybridrec.bundle.bundle import MANIFEST, read_manifest
    from hybridrec.bundle.format import verify_files
    from hybridrec.bundle.safety import check_signature

    path = _store(model_dir).path(version)
    manifest = read_manifest(path)
    signature = check_signature(path, (path / MANIFEST).read_bytes())
    start = time.perf_counter()
    verify_files(path, manifest["files"], whole=True)
    bundle = Bundle.open(path, verify=False, eager=list(manifest["parts"]))
    summary = bundle.summary()
    table = Table("model", "kind", "part", "users", "items", "factors", "interactions")
    for name, info in summary["models"].items():
        table.add_row(
            name,
            info["model"],
            manifest["models"][name]["part"],
            str(info["users"]),
            str(info["items"]),
            str(info.get("factors", "")),
            str(info["nnz"]),
        )
    out.print(table)
    top = summary["top_n_rows"]
    out.print(
        f"OK {bundle.version} created {bundle.created_at}: {len(manifest['files'])} files, "
        f"hashes match, {signature}, {len(manifest['parts'])} parts load"
        + (f", {top} precomputed rows" if top else "")
        + f" ({time.perf_counter() - start:.2f}s)"
    )


@bundle_app.command("promote")
@_friendly
def bundle_promote(
    version: Annotated[str, typer.Argument(help="The version to make current.")],
    model_dir: ModelDirOpt = Path("models"),
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check its hashes first.")
    ] = True,
) -> None:
    """Make a version current (after checking it)."""
    from hybridrec.bundle import Bundle

    store = _store(model_dir)
    if verify:
        Bundle.open(store.path(version))
    store.promote(version)
    _sync_registry(model_dir)
    out.print(f"current: {version}")


@bundle_app.command("rollback")
@_friendly
def bundle_rollback(model_dir: ModelDirOpt = Path("models")) -> None:
    """Make the previously current version current again."""
    store = _store(model_dir)
    before = store.current()
    now = store.rollback()
    _sync_registry(model_dir)
    out.print(f"rolled back {before} -> current: {now}")


@bundle_app.command("prune")
@_friendly
def bundle_prune(
    keep: Annotated[int, typer.Option("--keep", help="Versions to keep.")],
    model_dir: ModelDirOpt = Path("models"),
) -> None:
    """Delete all but the newest --keep versions (current and its rollback target stay)."""
    removed = _store(model_dir).prune(keep)
    out.print(f"removed {len(removed)} version(s)" + (f": {', '.join(removed)}" if removed else ""))
    if removed:
        _sync_registry(model_dir)


@bundle_app.command("save")
@_friendly
def bundle_save(
    model_dir: ModelDirOpt = Path("models"),
    version: VersionOpt = None,
    to: Annotated[
        Path | None, typer.Option("--to", help="Target store (default: the same store).")
    ] = None,
    compress: CompressOpt = None,
    compress_level: CompressLevelOpt = None,
    float32: Float32Opt = None,
    top_n: Annotated[
        int | None,
        typer.Option("--top-n", help="Precompute each user's top-N of the default model."),
    ] = None,
    promote: PromoteOpt = True,
) -> None:
    """Re-save a version as a new one: compressed, as float32, or with precomputed top-N."""
    from hybridrec.bundle import Bundle, BundleOptions, Compression, ModelStore, save_derived
    from hybridrec.bundle.open import bundle_options
    from hybridrec.models.footprint import human_bytes
    from hybridrec.pipeline.train import precompute_top_n

    src = _store(model_dir)
    bundle = Bundle.open(src.path(version), eager=())
    options = BundleOptions(
        Compression.parse(compress if compress is not None else "none", compress_level),
        bundle_options(bundle).float32 if float32 is None else float32,
    )
    top = None
    if top_n:
        default = bundle.model()
        top = precompute_top_n(default, bundle.default_model, top_n)
    start = time.perf_counter()
    target = ModelStore(to) if to is not None else src
    new = save_derived(bundle, target, options=options, top_n=top, promote=promote)
    _sync_registry(target.root)
    state = "current" if promote else "not promoted"
    out.print(
        f"saved version [bold]{new}[/bold] ({state}) in {target.root} from {bundle.version}: "
        f"{options.compression}{', float32' if options.float32 else ''}, "
        f"{human_bytes(target.size(new))}, {time.perf_counter() - start:.1f}s"
    )


@bundle_app.command("import")
@_friendly
def bundle_import(
    source: Annotated[Path, typer.Argument(help="Directory of loose artifacts.")],
    model_dir: ModelDirOpt = Path("models"),
    allow_pickle: Annotated[
        bool,
        typer.Option("--allow-pickle", help="Read pickled id mappings (only if you trust them)."),
    ] = False,
    compress: CompressOpt = None,
    compress_level: CompressLevelOpt = None,
    float32: Float32Opt = None,
    promote: PromoteOpt = True,
) -> None:
    """Build a bundle from loose files (factors, ids, similarity, recommendations...).

    Factors as .npy with id files, implicit's saved .npz models, or Spark ALS exports;
    similarity .npy/.npz; precomputed recommendations, interactions and the catalog as
    CSV/Parquet. See hybridrec.bundle.importer for the file names.
    """
    from hybridrec.bundle import BundleOptions, Compression, ModelStore, write_bundle
    from hybridrec.bundle.importer import import_loose

    result = import_loose(source, allow_pickle=allow_pickle)
    options = BundleOptions(Compression.parse(compress, compress_level), bool(float32))

    def write(path: Path) -> dict[str, Any]:
        written = write_bundle(
            path, result.models, items=result.items, top_n=result.top_n, options=options
        )
        return {
            **written,
            "default_model": result.default_model,
            "source": {"imported_from": str(source.resolve()), **result.sources},
        }

    store = ModelStore(model_dir)
    new = store.write_version(write, promote=promote)
    _sync_registry(model_dir)
    for role, what in result.sources.items():
        err.print(f"  {role}: {escape(what)}")
    state = "current" if promote else "not promoted"
    out.print(
        f"imported version [bold]{new}[/bold] ({state}) in {model_dir}: {', '.join(result.models)}"
    )


# ---- retrain --------------------------------------------------------------------------------


@app.command()
@_friendly
def retrain(
    model_dir: ModelDirOpt = Path("models"),
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Pipeline config (TOML; its retrain section sets the gate). Default: the "
            "config the current version was trained with.",
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            help="A round every DURATION (30m, 6h, 1d), the first one DURATION from now, "
            "until stopped. Default: HYBRIDREC_RETRAIN_EVERY.",
        ),
    ] = None,
    min_improve: Annotated[
        float | None,
        typer.Option(
            "--min-improve",
            help="Relative gain of the target metric needed to deploy (0.01 = 1%). Default: "
            "HYBRIDREC_MIN_IMPROVE, else the config's retrain.min_improve.",
        ),
    ] = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    reload_url: Annotated[
        str | None,
        typer.Option(
            "--reload-url",
            help="After a deployment, POST URL/admin/reload-model with HYBRIDREC_ADMIN_TOKEN "
            "(a server on the store follows its current version anyway).",
        ),
    ] = None,
    beside_server: Annotated[
        int | None,
        typer.Option(
            "--beside-server", hidden=True, help="Run beside this server process (serve)."
        ),
    ] = None,
    data_home: Annotated[Path | None, typer.Option(envvar="HYBRIDREC_DATA_HOME")] = None,
) -> None:
    """Retrain on the data plus the service's events and feedback; deploy only if better.

    The candidate and the serving version are scored on the newest interactions the
    serving version was not trained on; the candidate becomes current only when its target
    metric is at least min_improve better and a paired bootstrap over those users puts the
    interval of the difference above zero. Every decision, with both figures and the
    interval, goes to the store's history.json (and the MLflow run).
    """
    import os

    from hybridrec.config import Settings
    from hybridrec.errors import ConfigError
    from hybridrec.pipeline.retrain import (
        exit_with_parent,
        parse_duration,
        retrain_once,
        run_every,
    )

    if once and every is not None:
        raise ConfigError("give --once or --every, not both")
    every = every if every is not None or once else (Settings().retrain_every or None)
    if not once and every is None:
        raise ConfigError("give --once, or --every DURATION (or set HYBRIDREC_RETRAIN_EVERY)")
    seconds = parse_duration(every, what="--every") if every is not None else None

    def one_round() -> None:
        result = retrain_once(
            model_dir,
            config=config,
            data_home=data_home,
            database_url=database_url,
            data_dir=data_dir,
            min_improve=min_improve,
            reload_url=reload_url,
            # A schedule trains nothing when nothing changed since its last decision.
            skip_unchanged=seconds is not None,
            console=err,
        )
        _print_decision(result)

    if seconds is None:
        one_round()
        return
    if beside_server is not None:
        # Beside a server: its requests come first, and the schedule ends with it.
        exit_with_parent(beside_server)
        os.nice(10)
    try:
        run_every(seconds, one_round, console=err)
    except KeyboardInterrupt:
        err.print("retrain: stopped")


def _print_decision(result: Any) -> None:
    """The decision of a retraining round as a table and one line, on stdout."""
    d = result.decision
    table = Table(title=f"retrain: {d.target} on {result.holdout_users} held-out users")
    for column in ("", "version", d.target):
        table.add_column(column)
    for role, version, value in (
        ("candidate", result.candidate, d.candidate),
        ("serving", result.compared_with, d.current),
    ):
        table.add_row(role, version or "-", "-" if value is None else f"{value:.4f}")
    if d.candidate is not None and d.current is not None:
        out.print(table)
    verdict = "deployed" if d.deploy else "kept"
    version = result.candidate if d.deploy else result.compared_with
    out.print(f"{verdict} {version or 'nothing'}: {escape(d.reason)}", soft_wrap=True)


# ---- ui -------------------------------------------------------------------------------------


@app.command("ui")
@_friendly
def ui(
    api_url: Annotated[
        str,
        typer.Option("--api-url", help="Where the API listens.", envvar="HYBRIDREC_API_URL"),
    ] = "http://127.0.0.1:8000",
    host: Annotated[
        str, typer.Option("--host", help="Address the UI listens on.", envvar="HYBRIDREC_UI_HOST")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port the UI listens on.", envvar="HYBRIDREC_UI_PORT")
    ] = 8501,
) -> None:
    """Start the web UI (Streamlit) over a running API ('hybridrec serve')."""
    import importlib.util
    import os

    from hybridrec.errors import ConfigError
    from hybridrec.ui import APP

    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"--api-url {api_url!r}: give the API's http:// or https:// URL")
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be 1-65535 (got {port})")
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("the UI needs Streamlit: pip install 'hybridrec[ui]'")
    args = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        # Nothing leaves the machine, and a served app's source does not change under it.
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
    ]
    err.print(
        f"UI on http://{host}:{port} over the API at {api_url}; Ctrl-C stops it",
        highlight=False,
        soft_wrap=True,
    )
    # Streamlit takes this process over, so a signal to it (Ctrl-C, make's trap) stops the UI.
    os.execve(sys.executable, args, {**os.environ, "HYBRIDREC_API_URL": api_url.rstrip("/")})


# ---- A/B tests -------------------------------------------------------------------------------

ab_app = typer.Typer(
    rich_markup_mode=None,
    help="A/B tests of two versions of the model store: start, report, stop.",
    no_args_is_help=True,
)
app.add_typer(ab_app, name="ab")


class Arm(StrEnum):
    """An A/B arm: A serves ``current``, B the tested version."""

    A = "A"
    B = "B"


@ab_app.command("start")
@_friendly
def ab_start(
    b: Annotated[str | None, typer.Option("--b", help="The stored version arm B serves.")] = None,
    model_dir: ModelDirOpt = Path("models"),
    share_b: Annotated[
        float | None,
        typer.Option("--share-b", help="Share of users in arm B (0-1, exclusive; default 0.5)."),
    ] = None,
    salt: Annotated[
        str | None, typer.Option("--salt", help="Hash salt (default: a random one).")
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A TOML file with an [ab] table: arms = {A = 'current', B = 'VERSION'}, "
            "shares = {A = 0.5, B = 0.5}, salt (the options above override it).",
        ),
    ] = None,
) -> None:
    """Serve version B to a share of users, the current version to the others.

    Servers on the store pick it up at start and within HYBRIDREC_SYNC_SECONDS.
    """
    from hybridrec.bundle import Bundle
    from hybridrec.errors import ConfigError
    from hybridrec.serving import ab

    if config_file is not None:
        file_b, file_share, file_salt = ab.from_toml(config_file)
        b = b or file_b
        share_b = file_share if share_b is None else share_b
        salt = salt or file_salt
    if b is None:
        raise ConfigError("ab start: give arm B's version (--b VERSION or --config FILE)")
    share_b = 0.5 if share_b is None else share_b
    store = _store(model_dir)
    running = ab.read_config(model_dir)
    if running is not None:
        raise HybridrecError(
            f"{model_dir}: an A/B test already runs (B = {running.b_version}); end it first "
            "with 'hybridrec ab stop --keep A|B'"
        )
    # Checked now, as `bundle promote` does, so a broken B fails here, not on every server.
    Bundle.open(store.path(b))
    config = ab.write_config(model_dir, b, share_b=share_b, salt=salt)
    same = " (the current version too: an A/A test)" if b == store.current() else ""
    out.print(
        f"A/B test started: B = {b}{same} for {share_b:.0%} of users, A = current "
        f"({store.current()}); salt {config.salt}"
    )


@ab_app.command("report")
@_friendly
def ab_report(
    model_dir: ModelDirOpt = Path("models"),
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = (
        OutputFormat.table
    ),
) -> None:
    """Compare the arms' online rates (the running test, else the one ended last)."""
    from hybridrec.config import Settings
    from hybridrec.serving import ab
    from hybridrec.serving.events import EventStore
    from hybridrec.serving.events import database_url as resolve_url

    if ab.read_config(model_dir) is None and ab.read_config(model_dir, last=True) is None:
        raise HybridrecError(
            f"{model_dir}: no A/B test to report on (start one with 'hybridrec ab start')"
        )
    settings = Settings()
    store = EventStore(
        resolve_url(database_url or settings.database_url, data_dir or settings.data_dir)
    )
    try:
        result = ab.summary(model_dir, store.ab_rows)
    finally:
        store.dispose()
    assert result is not None
    if fmt is OutputFormat.json:
        out.print_json(json.dumps(result))
    else:
        _print_ab(result)
    if result["srm"]["mismatch"]:
        err.print(
            f"[yellow]warning:[/yellow] sample ratio mismatch: users per arm "
            f"{result['srm']['users']} against shares "
            f"{ {a: row['share'] for a, row in result['arms'].items()} } "
            f"(p = {result['srm']['p_value']:.2g}); the rates are not comparable",
            highlight=False,
        )


_AB_RATES = {
    "positive_feedback_rate": "positive feedback / impression",
    "recommended_event_rate": "events on recommended / impression",
}


def _print_ab(result: dict[str, Any]) -> None:
    table = Table(title="A/B test (95% Wilson intervals; B − A normal approximation)")
    for col in ("arm", "serves", "share", "users", "impressions", *_AB_RATES.values()):
        table.add_column(col)
    for arm, row in result["arms"].items():
        rates = [
            f"{row[k]['rate']:.4f} [{row[k]['low']:.4f}, {row[k]['high']:.4f}]" for k in _AB_RATES
        ]
        table.add_row(
            arm, row["serves"], f"{row['share']:.0%}", str(row["users"]),
            str(row["impressions"]), *rates,
        )  # fmt: skip
    out.print(table)
    for key, label in _AB_RATES.items():
        d = result["b_minus_a"][key]
        verdict = f"{d['better']} is better" if d["better"] else "no significant difference"
        out.print(
            f"{label}: B − A = {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]: {verdict}",
            highlight=False,
        )
    srm = result["srm"]
    p = "n/a" if srm["p_value"] is None else f"{srm['p_value']:.3g}"
    out.print(f"sample ratio check: users {srm['users']}, p = {p}", highlight=False)


@ab_app.command("stop")
@_friendly
def ab_stop(
    keep: Annotated[Arm, typer.Option("--keep", help="A: keep current; B: promote B.")],
    model_dir: ModelDirOpt = Path("models"),
) -> None:
    """End the test, keeping arm A (current) or B (promoted, as `bundle promote` does)."""
    from hybridrec.serving import ab

    config = ab.read_config(model_dir)
    if config is None:
        raise HybridrecError(f"{model_dir}: no A/B test runs")
    store = _store(model_dir)
    if keep is Arm.B:
        # Promoted before the test ends, so B's users never see A's version in between.
        bundle_promote(config.b_version, model_dir, verify=True)
    ab.remove_config(model_dir)
    out.print(f"A/B test ended; kept {keep.value}: current {store.current()}")


def main() -> None:  # pragma: no cover - console entry point
    """Run the CLI."""
    app()
