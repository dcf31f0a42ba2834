"""Typed settings: environment (``HYBRIDREC_*``) and pipeline configs (TOML).

`Settings` holds where things live (data home, model directory); `PipelineConfig` holds what
a training run does. Both reject unknown keys, so a typo in a config is an error that names
the key, not a silently ignored setting.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hybridrec.errors import ConfigError

__all__ = [
    "BundleConfig",
    "DataConfig",
    "EvaluationConfig",
    "ModelSpec",
    "PipelineConfig",
    "ResourcesConfig",
    "RetrainConfig",
    "SearchRange",
    "Settings",
    "SplitConfig",
    "TrackingConfig",
    "TuningConfig",
    "config_to_toml",
    "load_config",
]


class Settings(BaseSettings):
    """Process-wide settings from ``HYBRIDREC_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="HYBRIDREC_", extra="ignore")

    #: Where datasets are looked for (and downloaded to when missing).
    data_home: Path = Path.home() / ".hybridrec" / "data"
    #: Default model directory for train / recommend.
    model_dir: Path = Path("models")

    # ---- serving (``hybridrec serve``) -------------------------------------------------------
    #: Where the service keeps its state: the default SQLite event store ``events.db``.
    data_dir: Path = Path.home() / ".hybridrec"
    #: SQLAlchemy URL of the event store, e.g. ``postgresql+psycopg://user@host/db``
    #: (``postgresql://`` is taken as psycopg 3); unset: SQLite (WAL) in ``data_dir``.
    database_url: str | None = None
    #: Bearer token of the ``/admin`` and ``/debug`` routes; unset: those routes are off.
    admin_token: SecretStr | None = None
    #: Address and port ``hybridrec serve`` listens on.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: Server processes (each holds its own copy of the model and the online history).
    workers: int = Field(default=1, ge=1, le=64)
    #: Serve this version instead of the store's ``current`` (unset: current).
    model_version: str | None = None
    #: Seconds between a worker's catch-ups with the event store and the ``current`` pointer
    #: (events and promotions made through other workers or processes); 0: never.
    sync_seconds: float = Field(default=1.0, ge=0)
    #: How long online events stay in a user's in-memory history (they are in the store for
    #: retraining anyway), and at most how many items per user are kept.
    online_history_seconds: float = Field(default=7 * 86_400.0, gt=0)
    online_history_items: int = Field(default=500, ge=1)
    #: Largest request body accepted, in bytes (streamed bodies are counted as they come);
    #: a larger one is answered 413.
    max_body_bytes: int = Field(default=1_000_000, ge=1)

    # ---- tracking (``hybridrec.tracking``) -----------------------------------------------------
    #: False turns MLflow tracking off for this process, whatever a config's ``[tracking]``
    #: says (``HYBRIDREC_TRACKING=false``: test suites, CI, timing benchmarks).
    tracking: bool = True

    # ---- retraining (``hybridrec retrain``, ``hybridrec serve --retrain-every``) -------------
    #: How often to retrain ("30m", "6h", "1d"): ``serve`` retrains beside the server when set,
    #: ``retrain`` without ``--once`` / ``--every`` loops at this interval; unset: never.
    retrain_every: str | None = None
    #: Relative gain of the target metric a candidate needs to be deployed (0.01: 1%);
    #: overrides the config's ``[retrain] min_improve`` when set.
    min_improve: float | None = Field(default=None, ge=0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """One of several sources (``[[data.sources]]``): its name prefixes its item ids."""

    #: The source's name (``films``): its item ids become ``films:<id>``.
    name: str = Field(min_length=1)
    #: Interactions file (CSV or Parquet).
    interactions: Path
    #: Optional item catalog file.
    items: Path | None = None
    #: Optional user attributes file.
    users: Path | None = None
    #: Canonical column → column in this source's files.
    columns: dict[str, str] = Field(default_factory=dict)


class DataConfig(_Strict):
    """Where interactions come from and how they become implicit feedback."""

    #: A registered dataset name (``hybridrec datasets list``), ``files`` or ``sources``.
    source: str = "movielens-latest-small"
    #: With ``source = "sources"``: several sources (catalogs) merged, item ids namespaced
    #: by source name so they never collide (see `hybridrec.data.sources`).
    sources: list[SourceConfig] = Field(default_factory=list)
    #: With ``sources``: a user id names the same person in every source (False: user ids
    #: are namespaced too).
    shared_users: bool = True
    #: With ``source = "files"``: interactions file (CSV or Parquet).
    interactions: Path | None = None
    #: Optional item catalog file.
    items: Path | None = None
    #: Optional user attributes file.
    users: Path | None = None
    #: Canonical column → column in the files, e.g. ``{user_id = "customer"}``.
    columns: dict[str, str] = Field(default_factory=dict)
    #: Explicit → implicit: auto | threshold | confidence | binary | keep. ``auto`` learns it
    #: from the data (see `hybridrec.data.transform`): ratings -> a threshold on their own
    #: scale, events -> binary (repeats: counts as confidence), weights -> confidence.
    implicit: Literal["auto", "threshold", "confidence", "binary", "keep"] = "auto"
    #: Positive threshold for ``threshold`` (a floor for ``confidence``); None: learned from
    #: the rating scale (``auto``) or the dataset's own default (MovieLens: 4.0).
    min_rating: float | None = None
    #: How repeated (user, item) rows combine: auto | last | first | sum | max (``auto``:
    #: ``last`` for ratings, ``sum``, i.e. counts, for events).
    dedup: Literal["auto", "last", "first", "sum", "max"] = "auto"
    #: k-core: drop users with fewer interactions (repeated with the item rule until stable).
    min_user_interactions: int = Field(default=1, ge=1)
    #: k-core: drop items with fewer interactions.
    min_item_interactions: int = Field(default=1, ge=1)


class SplitConfig(_Strict):
    """How interactions are split for tuning and evaluation."""

    #: random (per user) | temporal (per user) | global_temporal.
    method: Literal["random", "temporal", "global_temporal"] = "random"
    #: Share held out for validation (tuning); 0 for none.
    valid: float = Field(default=0.1, ge=0, lt=1)
    #: Share held out for test.
    test: float = Field(default=0.1, gt=0, lt=1)
    #: Seed of the random split.
    seed: int = 42
    #: temporal: hold out exactly each user's last n interactions instead of a share.
    leave_last_n: int | None = Field(default=None, ge=1)
    #: global_temporal: test starts at this timestamp (default: by the ``test`` share).
    cutoff: int | None = None


class EvaluationConfig(_Strict):
    """Offline evaluation settings."""

    #: Cutoffs reported.
    k: list[int] = Field(default_factory=lambda: [10, 20])
    #: Metric used to choose hyperparameters and compare models.
    target: str = "ndcg@10"
    #: Users with fewer training interactions are "cold".
    cold_below: int = Field(default=5, ge=1)
    #: Users with at least this many training interactions are "hot" (between: "warm").
    hot_from: int = Field(default=20, ge=2)

    @model_validator(mode="after")
    def _check(self) -> EvaluationConfig:
        if not self.k or min(self.k) <= 0:
            raise ValueError("k must be a non-empty list of positive integers")
        if self.hot_from <= self.cold_below:
            raise ValueError("hot_from must be greater than cold_below")
        return self


class ResourcesConfig(_Strict):
    """What one training run may use of this machine."""

    #: Share of the memory available at the start of a run that one model may take.
    memory_fraction: float = Field(default=0.6, gt=0, le=1)
    #: A fixed budget in GiB instead (unset: the share above).
    memory_limit_gb: float | None = Field(default=None, gt=0)


class BundleConfig(_Strict):
    """How a trained pipeline is written to the model store."""

    #: none (memory-mappable, fastest to load) | zlib | gzip | xz | lz4, optionally ":level".
    compress: str = "none"
    #: Compression level 1-9 (default: the codec's, 3).
    compress_level: int | None = Field(default=None, ge=1, le=9)
    #: Store float64 arrays (factors, similarities) as float32: half the size.
    float32: bool = False
    #: Precompute each known user's top-N of the default model (0: none).
    precompute_top_n: int = Field(default=0, ge=0, le=1000)
    #: Store each known user's candidate union and normalized component scores in every
    #: hybrid (serving blends them instead of scoring the catalog), up to this many MiB
    #: per hybrid; 0: none.
    precompute_candidates_mb: int = Field(default=256, ge=0)
    #: Store each known user's top-N of every model that scores the whole catalog per
    #: request (ALS, EASE) in the model (serving reads it instead; same answers)...
    precompute_ranking: int = Field(default=100, ge=0, le=1000)
    #: ...up to this many MiB per model (users x N x 8 bytes); 0: none.
    precompute_ranking_mb: int = Field(default=256, ge=0)
    #: Versions kept in the store after a training run (current and its rollback target
    #: always stay); 0 keeps all.
    keep_versions: int = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _check(self) -> BundleConfig:
        from hybridrec.bundle.format import Compression

        Compression.parse(self.compress, self.compress_level)
        return self


class TrackingConfig(_Strict):
    """MLflow experiment tracking and model registry (`hybridrec.tracking`)."""

    #: Record every train / evaluate / tune run in MLflow and register every stored version
    #: (needs the ``track`` extra; without mlflow, runs say once that tracking is off).
    enabled: bool = True
    #: Tracking (and registry) URI; ``MLFLOW_TRACKING_URI`` overrides it. Unset: SQLite
    #: ``mlflow/mlflow.db`` in the data directory (``HYBRIDREC_DATA_DIR``, ``~/.hybridrec``).
    uri: str | None = None
    #: Where a new experiment keeps its artifacts. Unset: the server's choice for an
    #: ``http(s)://`` URI, else ``mlflow/artifacts`` in the data directory.
    artifacts: str | None = None
    #: Experiment the runs are recorded in.
    experiment: str = Field(default="hybridrec", min_length=1)
    #: Registered model whose versions mirror the store's versions ("": no registry).
    registered_model: str = "hybridrec"


class RetrainConfig(_Strict):
    """Retraining from feedback, deployed only when better (`hybridrec.pipeline.retrain`)."""

    #: Weight a thumbs up (a ``like`` event) adds to its user-item pair.
    thumbs_up: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    #: What a thumbs down (a ``dislike``) does to its pair: ``remove`` it from the training
    #: data (what came before it; later events count again), or ``ignore`` it.
    thumbs_down: Literal["remove", "ignore"] = "remove"
    #: Relative gain of the target metric over the serving version a candidate needs
    #: (0.01: 1%); the paired bootstrap's lower bound must also be above zero.
    min_improve: float = Field(default=0.01, ge=0, allow_inf_nan=False)
    #: Share of the interactions the serving version was not trained on held out for the
    #: comparison, newest first.
    holdout_share: float = Field(default=0.2, gt=0, le=1)
    #: Hold out this many interactions instead of a share (0: by ``holdout_share``).
    holdout_size: int = Field(default=0, ge=0)
    #: Fewer held-out users than this: nothing is deployed (too few to decide on).
    min_users: int = Field(default=20, ge=1)
    #: Bootstrap resamples of the held-out users.
    bootstrap_samples: int = Field(default=2000, ge=100, le=1_000_000)
    #: Confidence of the bootstrap interval of the difference (candidate - serving).
    confidence: float = Field(default=0.95, ge=0.5, lt=1)
    #: Seed of the bootstrap: the same data and seed give the same interval.
    seed: int = 42


class TuningConfig(_Strict):
    """How hyperparameter search spaces (``[models.<name>.search]``) are searched."""

    #: Trials per model (a model's ``search_trials`` overrides it).
    trials: int = Field(default=20, ge=1)
    #: Seconds one model's search may take; the trial running at the deadline finishes.
    #: None: no time limit.
    budget_s: float | None = Field(default=120.0, gt=0)
    #: Seed of the TPE sampler: the same seed and data give the same trials.
    seed: int = 42


class SearchRange(_Strict):
    """A numeric range of a search space: ``{low = 32, high = 256, log = true, type = "int"}``."""

    low: float
    high: float
    #: Sample on a log scale (low must be positive).
    log: bool = False
    #: int | float; unset: as the hyperparameter's own type.
    type: Literal["int", "float"] | None = None
    #: Grid step within the range (not with ``log``).
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log ranges need low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("step and log do not go together")
        return self


class ModelSpec(_Strict):
    """One model of the pipeline: its registered name, hyperparameters and tuning grid."""

    #: Registered model name (the table key by default).
    model: str
    #: Hyperparameters (validated by the model's own config).
    params: dict[str, Any] = Field(default_factory=dict)
    #: Grid searched on the validation split: parameter → list of values.
    tune: dict[str, list[Any]] = Field(default_factory=dict)
    #: Search space for Optuna (TPE): parameter → range table, or a list (categorical).
    #: Hybrids also take ``components = {low, high}`` (each weight in the range); routers
    #: take ``cold`` / ``warm`` / ``hot`` lists of pipeline model names.
    search: dict[str, SearchRange | list[Any]] = Field(default_factory=dict)
    #: Trials of this model's search (default: ``[tuning] trials``).
    search_trials: int | None = Field(default=None, ge=1)
    #: Skip this model without deleting its section.
    enabled: bool = True
    #: Hybrids: search the weight simplex on the validation split with this step (e.g. 0.1).
    tune_weights: float | None = Field(default=None, gt=0, le=0.5)
    #: Routers: pick each segment's model as the best one on the validation split.
    tune_routes: bool = False


class PipelineConfig(_Strict):
    """A whole training pipeline, as written in ``configs/*.toml``."""

    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    #: Model name → spec; order is the table order.
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    #: How the trained pipeline is stored.
    bundle: BundleConfig = Field(default_factory=BundleConfig)
    #: The machine's limits a run keeps to.
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    #: How search spaces are searched.
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    #: MLflow tracking of the runs and the model registry.
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    #: Retraining from feedback and the deploy-if-better gate.
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    #: After tuning, refit on train + valid before testing (else on train only).
    refit_on_valid: bool = True

    @model_validator(mode="before")
    @classmethod
    def _models_from_tables(cls, values: Any) -> Any:
        """Let ``[models.als]`` hold hyperparameters directly, with ``tune`` as a sub-table."""
        if isinstance(values, dict) and isinstance(values.get("models"), dict):
            specs: dict[str, Any] = {}
            for name, raw in values["models"].items():
                if isinstance(raw, ModelSpec):
                    specs[name] = raw
                    continue
                table = dict(raw or {})
                specs[name] = {
                    "model": table.pop("model", name),
                    "tune": table.pop("tune", {}),
                    "search": table.pop("search", {}),
                    "search_trials": table.pop("search_trials", None),
                    "enabled": table.pop("enabled", True),
                    "tune_weights": table.pop("tune_weights", None),
                    "tune_routes": table.pop("tune_routes", False),
                    "params": table.pop("params", {}) | table,
                }
            values = {**values, "models": specs}
        return values

    def enabled_models(self) -> dict[str, ModelSpec]:
        """The models to train, in config order."""
        return {name: spec for name, spec in self.models.items() if spec.enabled}


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, dict):
        pairs = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + pairs + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    import json

    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def config_to_toml(cfg: PipelineConfig, header: str = "") -> str:
    """A pipeline config as TOML that `load_config` reads back to the same config.

    Models are written as ``[models.<name>]`` tables of their hyperparameters; unset
    (None) values are left out, so they keep their defaults.
    """
    raw = cfg.model_dump(mode="json", exclude_none=True)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    models = raw.pop("models", {})
    sections = {k: v for k, v in raw.items() if isinstance(v, dict)}
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in raw.items() if k not in sections]
    for name, table in sections.items():
        lines += ["", f"[{name}]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    for name, spec in models.items():
        lines += ["", f"[models.{_toml_key(name)}]", f"model = {_toml_value(spec['model'])}"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in spec["params"].items()]
        for key in ("enabled", "tune_weights", "tune_routes", "search_trials"):
            if key in spec and spec[key] != ModelSpec.model_fields[key].default:
                lines.append(f"{key} = {_toml_value(spec[key])}")
        for key in ("tune", "search"):
            if spec.get(key):
                lines += ["", f"[models.{_toml_key(name)}.{key}]"]
                lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in spec[key].items()]
    return "\n".join(lines) + "\n"


def load_config(path: str | Path | None) -> PipelineConfig:
    """Read and validate a pipeline TOML file (None: the built-in defaults).

    Raises:
        ConfigError: The file is missing, not valid TOML, or has an invalid key or value;
            the message names the file and the key.
    """
    if path is None:
        return PipelineConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); TOML files must be UTF-8"
        ) from None
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {loc}: {err['msg']}{more}") from None
    _check_models(cfg, path)
    if cfg.data.source == "files" and cfg.data.interactions is None:
        raise ConfigError(f"{path}: data.source = 'files' needs data.interactions")
    if (cfg.data.source == "sources") != bool(cfg.data.sources):
        raise ConfigError(
            f"{path}: data.source = 'sources' and [[data.sources]] tables go together "
            f"(source = {cfg.data.source!r}, {len(cfg.data.sources)} sources)"
        )
    base = path.parent
    # Relative data paths are relative to the config file, as a user reading it expects.
    data = _relative_to(cfg.data, base)
    data = data.model_copy(update={"sources": [_relative_to(s, base) for s in data.sources]})
    return cfg.model_copy(update={"data": data})


_Located = TypeVar("_Located", DataConfig, SourceConfig)


def _relative_to(cfg: _Located, base: Path) -> _Located:
    """``cfg`` with its relative file paths made relative to ``base``."""
    return cfg.model_copy(
        update={
            key: (base / value if not value.is_absolute() else value)
            for key in ("interactions", "items", "users")
            if (value := getattr(cfg, key)) is not None
        }
    )


def _check_models(cfg: PipelineConfig, path: Path) -> None:
    """Validate every model name and hyperparameter now, before any data is loaded."""
    from hybridrec.models.registry import get_model_class

    for name, spec in cfg.models.items():
        try:
            klass = get_model_class(spec.model)
        except ConfigError as exc:
            raise ConfigError(f"{path}: [models.{name}]: {exc}") from None
        fields = klass.Config.model_fields
        for key in [*spec.params, *spec.tune]:
            if key not in fields:
                raise ConfigError(
                    f"{path}: [models.{name}]: unknown hyperparameter {key!r}; "
                    f"valid: {', '.join(fields)}"
                )
        try:
            klass.Config(**spec.params)
            for key, values in spec.tune.items():
                for value in values:
                    klass.Config(**(spec.params | {key: value}))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{path}: [models.{name}] {loc}: {err['msg']}") from None
        from hybridrec.pipeline.search import check_space

        try:
            check_space(spec, list(cfg.models))
        except ConfigError as exc:
            raise ConfigError(f"{path}: [models.{name}.search] {exc}") from None
