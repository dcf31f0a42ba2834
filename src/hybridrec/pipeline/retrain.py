"""Retraining from the service's feedback, deployed only when the candidate is better.

One round (`retrain_once`), under a lock that admits one retrain per store at a time:

1. open the serving version (the store's ``current``) and the pipeline config (``--config``,
   else the one the serving version was trained with);
2. merge the pipeline's data with the events and thumbs the service stored
   (`merge_feedback`): events add their weight to their user-item pair, a thumbs up adds
   ``[retrain] thumbs_up``, a thumbs down takes the pair out;
3. hold out the newest interactions the serving version was never trained on
   (`select_holdout`); the candidate is trained on everything else;
4. train the configured pipeline (`train_pipeline`) and write it to the store as a
   candidate, not promoted;
5. score the default model of both versions on the holdout, per user, each against the
   data it was fit on, and compare them (`decide`): the candidate is deployed only when its
   target metric is at least ``min_improve`` (relative) better and a paired bootstrap over
   the held-out users puts the lower end of the interval of the difference above zero;
6. promote it (one atomic rename of ``current``; a server on the store follows that pointer,
   and ``reload_url`` asks one to reload at once) and record the decision, deployed or not,
   with both figures and the interval, in the store's history and the tracking run.

Nothing before step 6 touches ``current``: a crash, a kill, a failed evaluation or a full
disk leaves a ``.tmp-*`` directory or an unpromoted version at worst, and the serving version
keeps serving. What is deployed is exactly what was measured: the candidate is not refit on
the holdout afterwards (the service folds the newest events in online anyway).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from hybridrec.bundle import Bundle, ModelStore, open_bundle
from hybridrec.config import PipelineConfig, RetrainConfig, Settings, load_config
from hybridrec.data.transform import Conversion, deduplicate, to_implicit
from hybridrec.errors import ConfigError, DataError, HybridrecError
from hybridrec.evaluation.evaluator import ModelReport
from hybridrec.evaluation.metrics import METRICS, BootstrapInterval, paired_bootstrap
from hybridrec.pipeline.train import (
    PreparedData,
    evaluate_fitted,
    fingerprint,
    prepare_data,
    train_pipeline,
)
from hybridrec.tracking.record import RunRecord, tracked_run

__all__ = [
    "Decision",
    "FeedbackCounts",
    "RetrainBusyError",
    "RetrainResult",
    "decide",
    "exit_with_parent",
    "load_events",
    "merge_feedback",
    "parse_duration",
    "retrain_lock",
    "retrain_once",
    "run_every",
    "seen_pairs",
    "select_holdout",
]

_LOCK = ".retrain.lock"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_EVENT_SCHEMA = {
    "user_id": pl.String,
    "item_id": pl.String,
    "weight": pl.Float64,
    "timestamp": pl.Int64,
    "event_type": pl.String,
}
_COLUMNS = list(_EVENT_SCHEMA)


class RetrainBusyError(HybridrecError):
    """Another retrain of the same store holds its lock."""


# ---- durations ------------------------------------------------------------------------------


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in a duration such as ``30s``, ``30m``, ``6h``, ``1d`` or ``1h30m``.

    Raises:
        ConfigError: ``text`` is not such a duration, or is zero.
    """
    cleaned = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ConfigError(
            f"{what} {text!r}: give a number and a unit, s, m, h or d (e.g. 30m, 6h, 1d, 1h30m)"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{what} {text!r}: must be longer than zero")
    return seconds


def _describe_seconds(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


# ---- the lock -------------------------------------------------------------------------------


@contextlib.contextmanager
def retrain_lock(model_dir: str | Path) -> Iterator[None]:
    """Hold the store's retrain lock for the block; fail at once when someone else does.

    An ``flock`` on ``<model-dir>/.retrain.lock``: the kernel releases it when its holder
    exits however it exits (a kill included), so a crashed retrain never blocks the next.

    Raises:
        RetrainBusyError: Another process (or thread) holds it; the message says who.
    """
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / _LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise RetrainBusyError(
                f"{root}: another retrain of this store is running ({holder}); "
                "wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        since = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
        os.pwrite(fd, f"pid {os.getpid()} since {since}\n".encode(), 0)
        yield
    finally:
        # Closing releases the lock. The file stays: removing it would let a process that
        # opened it before the removal and one that creates it anew both hold "the" lock.
        os.close(fd)


# ---- the data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackCounts:
    """What the merge took from the event store.

    Attributes:
        events: Interactions merged (views, clicks, purchases, ratings kept as positives).
        thumbs_up: Thumbs up merged, each adding ``[retrain] thumbs_up`` to its pair.
        thumbs_down: Thumbs down seen.
        removed: Rows (of the data and of earlier events) a thumbs down took out.
    """

    events: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    removed: int = 0


def load_events(url: str) -> pl.DataFrame:
    """Every event the service stored (thumbs included), in the order they arrived.

    A thumbs up through ``POST /feedback`` is stored as a feedback row and a ``like`` event
    in one transaction (a thumbs down as a ``dislike``), so the events hold every thumb once,
    also those posted to ``/events`` directly. A SQLite store that does not exist yet means
    no events (it is not created here).

    Args:
        url: The event store's SQLAlchemy URL (`hybridrec.serving.events.database_url`).

    Returns:
        Canonical interactions plus ``event_type``: ``user_id``, ``item_id`` (Int64 when
        every id is an integer, else String), ``weight``, ``timestamp``, ``event_type``.

    Raises:
        DatabaseUnavailableError: The store cannot be read.
    """
    from hybridrec.serving.events import EventStore

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        return pl.DataFrame(schema=_EVENT_SCHEMA)
    store = EventStore(url)
    try:
        with tempfile.TemporaryDirectory(prefix="hybridrec-retrain-") as tmp:
            path = Path(tmp) / "events.parquet"
            store.export(path, include_dislikes=True)
            return pl.read_parquet(path).select(_COLUMNS)
    finally:
        store.dispose()


def _shown(url: str) -> str:
    """Where the events come from, for a progress line (no password)."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return f"{path}" if path.is_file() else f"{path} (no event store there yet)"
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "the event store"


def _id_dtype(*columns: pl.Series) -> pl.DataType:
    """Int64 when every column that holds ids holds integers, else String."""
    filled = [c for c in columns if c.len()] or list(columns)
    return pl.Int64() if all(c.dtype.is_integer() for c in filled) else pl.String()


def merge_feedback(
    base: pl.DataFrame,
    events: pl.DataFrame,
    cfg: RetrainConfig,
    conversion: Conversion | None = None,
) -> tuple[pl.DataFrame, FeedbackCounts]:
    """The training data with the service's events and thumbs merged in.

    Events are applied in the order they arrived, as the service's online history applies
    them: an interaction adds its weight to its (user, item) pair; a ``like`` (thumbs up)
    adds ``cfg.thumbs_up``; a ``dislike`` (thumbs down, with ``thumbs_down = "remove"``)
    takes the pair out, its rows in ``base`` and the events before it (events after it count
    again). A ``rating`` event is converted as the data's ratings were (``conversion``,
    without the rescue by a user's mean, as for held-out files).

    Args:
        base: Canonical implicit interactions (the pipeline's data, preprocessed).
        events: From `load_events`, in arrival order.
        cfg: The ``[retrain]`` settings.
        conversion: The explicit → implicit rule the data was converted with.

    Returns:
        One row per (user, item) pair with summed weights and the latest timestamp, and
        what was merged. Ids are Int64 when those of both inputs are integers, else String.
    """
    dtype = {c: _id_dtype(base[c], events[c]) for c in ("user_id", "item_id")}
    base = base.select(_COLUMNS).with_columns(pl.col(c).cast(t) for c, t in dtype.items())
    events = (
        events.select(_COLUMNS)
        .with_columns(
            *(pl.col(c).cast(t) for c, t in dtype.items()),
            pl.col("weight").cast(pl.Float64),
            pl.col("timestamp").cast(pl.Int64),
        )
        .with_row_index("_seq")
    )
    pair = ["user_id", "item_id"]
    kind = pl.col("event_type")
    downs = events.filter(kind == "dislike")
    rest = events.filter(kind != "dislike")
    removed = 0
    if cfg.thumbs_down == "remove" and downs.height:
        last_down = downs.group_by(pair).agg(pl.col("_seq").max().alias("_down"))
        kept_base = base.join(last_down, on=pair, how="anti")
        rest = rest.join(last_down, on=pair, how="left")
        later = pl.col("_down").is_null() | (pl.col("_seq") > pl.col("_down"))
        removed = base.height - kept_base.height + rest.filter(~later).height
        base, rest = kept_base, rest.filter(later).drop("_down")
    likes = rest.filter(kind == "like").with_columns(pl.lit(cfg.thumbs_up).alias("weight"))
    ratings = rest.filter(kind == "rating")
    if conversion is not None and ratings.height:
        try:
            ratings = to_implicit(ratings, mode=conversion.mode, min_rating=conversion.min_rating)
        except DataError:  # no rating event reaches the threshold
            ratings = ratings.clear()
    others = rest.filter(~kind.is_in(["like", "rating"]) & (pl.col("weight") > 0))
    merged = pl.concat([base, *(f.select(_COLUMNS) for f in (others, ratings, likes))])
    counts = FeedbackCounts(
        events=others.height + ratings.height,
        thumbs_up=likes.height,
        thumbs_down=downs.height,
        removed=removed,
    )
    return deduplicate(merged, "sum"), counts


def _cast_ids(table: pl.DataFrame | None, column: str, dtype: pl.DataType) -> pl.DataFrame | None:
    if table is None or column not in table.columns or table[column].dtype == dtype:
        return table
    return table.with_columns(pl.col(column).cast(dtype))


def seen_pairs(df: pl.DataFrame, bundle: Bundle) -> NDArray[np.bool_]:
    """Which rows of ``df`` are (user, item) pairs ``bundle``'s default model was trained on."""
    users, items, matrix = bundle.model()._fitted()
    rows = users.index(df["user_id"].to_numpy(), missing="mask")
    cols = items.index(df["item_id"].to_numpy(), missing="mask")
    known = (rows >= 0) & (cols >= 0)
    seen = np.zeros(df.height, dtype=bool)
    if known.any():
        values = matrix.tocsr()[rows[known], cols[known]]
        seen[known] = np.asarray(values).ravel() != 0
    return seen


def select_holdout(
    df: pl.DataFrame, seen: NDArray[np.bool_], cfg: RetrainConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split merged interactions into the candidate's training data and the holdout.

    The holdout is the newest interactions (by timestamp; ties by user, then item) among
    the pairs the serving version was not trained on: ``cfg.holdout_size`` of them, else
    the ``cfg.holdout_share`` of those pairs. Pairs the serving version was trained on are
    never held out: it excludes them from its answers as seen, so it could not be scored on
    them fairly, and they are not news.

    Args:
        df: One row per (user, item) pair (`merge_feedback`).
        seen: Per row of ``df``, whether the serving version was trained on it (`seen_pairs`).
        cfg: The ``[retrain]`` settings.

    Returns:
        The training data (every row not held out) and the holdout.
    """
    if seen.shape != (df.height,):
        raise DataError(f"seen has shape {seen.shape}; expected ({df.height},)")
    pool = df.with_row_index("_row").filter(pl.Series(~seen))
    n = cfg.holdout_size or math.ceil(cfg.holdout_share * pool.height)
    newest = pool.sort(["timestamp", "user_id", "item_id"], descending=True, nulls_last=True).head(
        min(n, pool.height)
    )
    held = np.zeros(df.height, dtype=bool)
    held[newest["_row"].to_numpy()] = True
    mask = pl.Series(held)
    return df.filter(~mask), df.filter(mask)


# ---- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether a candidate is deployed, and why.

    Attributes:
        deploy: Promote the candidate.
        reason: One line with the figures it was decided on.
        target: The metric compared (``[evaluation] target``).
        candidate: The candidate's mean on the holdout (None: not scored).
        current: The serving version's mean on the holdout (None: nothing serving, or not
            scored).
        gain: Relative gain of the candidate over the serving version (None where the
            serving version scores 0 or there is none).
        interval: The bootstrap interval of the per-user difference (candidate - serving).
    """

    deploy: bool
    reason: str
    target: str
    candidate: float | None = None
    current: float | None = None
    gain: float | None = None
    interval: BootstrapInterval | None = None


def decide(
    candidate: NDArray[np.float64],
    current: NDArray[np.float64],
    cfg: RetrainConfig,
    target: str,
) -> Decision:
    """The deploy-if-better gate over per-user values of the same held-out users.

    The candidate is deployed when its mean beats the serving version's by at least
    ``cfg.min_improve`` (relative; any gain over a serving version that scores 0) *and*
    the lower end of the paired bootstrap interval of the difference is above zero.

    Args:
        candidate: Per-user ``target`` of the candidate.
        current: Per-user ``target`` of the serving version, same users, same order.
        cfg: The ``[retrain]`` settings (min_improve, bootstrap samples, confidence, seed).
        target: The metric's name, for the reason.
    """
    interval = paired_bootstrap(
        candidate, current, samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed
    )
    both = ~(np.isnan(candidate) | np.isnan(current))
    new, old = float(np.mean(candidate[both])), float(np.mean(current[both]))
    gain = (new - old) / old if old > 0 else None
    improves = gain >= cfg.min_improve if gain is not None else new > old
    above = interval.low > 0
    shown = f"{gain:+.1%}" if gain is not None else "from 0"
    figures = (
        f"{target} {new:.4f} vs {old:.4f} serving ({shown}, needs {cfg.min_improve:+.1%}); "
        f"{interval.confidence:.0%} interval of the per-user difference "
        f"[{interval.low:+.4f}, {interval.high:+.4f}] over {interval.users} users"
    )
    if improves and above:
        reason = f"better: {figures}"
    elif new <= old:
        reason = f"not better: {figures}"
    elif not improves:
        reason = f"gain below min_improve: {figures}"
    else:
        reason = f"not significant (the interval does not lie above 0): {figures}"
    return Decision(improves and above, reason, target, new, old, gain, interval)


# ---- one round ------------------------------------------------------------------------------


@dataclass
class RetrainResult:
    """What a round did.

    Attributes:
        decision: Deployed or not, and why.
        candidate: The candidate version written (None: none was trained).
        compared_with: The serving version at the start (None: nothing was serving).
        current: The store's current version at the end.
        holdout_rows: Interactions held out.
        holdout_users: Users among them.
        rows: Interactions after the merge.
        feedback: What the merge took from the event store.
        reports: The holdout reports (``candidate`` / ``current``).
        seconds: How long the round took.
        reloaded: What ``reload_url`` answered, when one was given and asked.
        inputs: What the outcome depended on (data and config hashes, serving version): a
            round on the same inputs as the last decision repeats it without training.
    """

    decision: Decision
    candidate: str | None
    compared_with: str | None
    current: str | None
    holdout_rows: int = 0
    holdout_users: int = 0
    rows: int = 0
    feedback: FeedbackCounts = field(default_factory=FeedbackCounts)
    reports: dict[str, ModelReport] = field(default_factory=dict)
    seconds: float = 0.0
    reloaded: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The decision as the store's history keeps it (strict JSON: no NaN)."""
        d = self.decision
        record: dict[str, Any] = _finite(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "decision": "deployed" if d.deploy else "rejected",
                "deployed": d.deploy,
                "reason": d.reason,
                "candidate": self.candidate,
                "current": self.compared_with,
                "target": d.target,
                "candidate_metric": d.candidate,
                "current_metric": d.current,
                "gain": d.gain,
                "interval": asdict(d.interval) if d.interval is not None else None,
                "holdout": {"rows": self.holdout_rows, "users": self.holdout_users},
                "data": {"rows": self.rows, **asdict(self.feedback)},
                "seconds": round(self.seconds, 3),
                "inputs": self.inputs,
            }
        )
        return record


def _finite(value: Any) -> Any:
    """NaN and infinities as None, so that the record is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _say(console: Console | None, text: str) -> None:
    if console is not None:
        console.print(escape(text), highlight=False, soft_wrap=True)


def _config(store: ModelStore, path: Path | None, min_improve: float | None) -> PipelineConfig:
    """The pipeline config: the file given, else the one the serving version was trained with."""
    if path is not None:
        cfg = load_config(path)
    else:
        current = store.current()
        if current is None:
            raise ConfigError(
                f"{store.root}: no current version to take the pipeline config from; give --config"
            )
        stored = store.manifest(current).get("config")
        if not stored:
            raise ConfigError(f"version {current} stored no pipeline config; give --config")
        try:
            cfg = PipelineConfig.model_validate(stored)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(
                f"the config stored with version {current} no longer validates ({loc}: "
                f"{err['msg']}); give --config"
            ) from None
    if min_improve is not None:
        if not (min_improve >= 0 and math.isfinite(min_improve)):
            raise ConfigError(f"min_improve must be a number >= 0 (got {min_improve})")
        cfg = cfg.model_copy(
            update={"retrain": cfg.retrain.model_copy(update={"min_improve": min_improve})}
        )
    return cfg


def _check_target(cfg: PipelineConfig) -> None:
    """The gate compares users one by one: the target must be a per-user metric at a cutoff."""
    target = cfg.evaluation.target
    name, _, k = target.partition("@")
    per_user = [*METRICS, "diversity", "novelty"]
    if name not in per_user or not k.isdigit() or int(k) not in cfg.evaluation.k:
        raise ConfigError(
            f"[evaluation] target {target!r}: retraining compares the versions user by user, "
            f"so it needs a per-user metric ({', '.join(per_user)}) at one of the cutoffs "
            f"k = {cfg.evaluation.k}, e.g. ndcg@{cfg.evaluation.k[0]}"
        )


def _score(bundle: Bundle, holdout: pl.DataFrame, cfg: PipelineConfig) -> ModelReport:
    """The default model of ``bundle`` on ``holdout``, keeping the per-user values."""
    name = bundle.default_model
    [report] = evaluate_fitted({name: bundle.model(name)}, holdout, cfg.evaluation, per_user=True)
    return report


def _inputs(merged: pl.DataFrame, cfg: PipelineConfig, current: str | None) -> dict[str, Any]:
    """What a round's outcome depends on: the merged data, the config, the serving version."""
    config = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode("utf-8")
    return {
        "data_hash": fingerprint(merged)["hash"],
        "config_hash": hashlib.sha256(config).hexdigest(),
        "serving": current,
    }


def _unchanged_since(store: ModelStore, inputs: dict[str, Any]) -> str | None:
    """When the last decision was made on these very inputs: when (a round would repeat it)."""
    last = next((d for d in reversed(store.decisions()) if d.get("decision") != "failed"), None)
    if last is not None and last.get("inputs") == inputs:
        return str(last.get("at", "?"))
    return None


def request_reload(url: str, token: str) -> str:
    """``POST <url>/admin/reload-model`` with the admin token; what the server answered.

    Never raises: the promotion stands either way, and a server on the store follows its
    ``current`` pointer by itself.
    """
    request = urllib.request.Request(
        url.rstrip("/") + "/admin/reload-model",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read() or b"{}")
        return f"reloaded {body.get('version')} (was {body.get('previous')})"
    except urllib.error.HTTPError as exc:
        return f"reload refused: HTTP {exc.code} {exc.read()[:200].decode('utf-8', 'replace')}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"reload failed: {exc}"


def retrain_once(
    model_dir: str | Path,
    *,
    config: Path | None = None,
    data_home: str | Path | None = None,
    database_url: str | None = None,
    data_dir: Path | None = None,
    min_improve: float | None = None,
    reload_url: str | None = None,
    skip_unchanged: bool = False,
    console: Console | None = None,
) -> RetrainResult:
    """One retraining round (the module docstring lists the steps).

    Args:
        model_dir: The model store.
        config: Pipeline config (default: the serving version's own).
        data_home: Where registered datasets live.
        database_url: The event store (default: ``HYBRIDREC_DATABASE_URL``, else SQLite in
            the data directory).
        data_dir: The data directory (default: ``HYBRIDREC_DATA_DIR``).
        min_improve: Overrides ``[retrain] min_improve`` (default: ``HYBRIDREC_MIN_IMPROVE``).
        reload_url: A server to ask to reload after a deployment (``HYBRIDREC_ADMIN_TOKEN``
            is its bearer token).
        skip_unchanged: Train nothing when the data, the config and the serving version are
            those of the last decision (a schedule would otherwise write the same rejected
            candidate every round, and pruning would make room for them).
        console: Where progress goes (None: quiet).

    Raises:
        RetrainBusyError: Another retrain of the store is running.
        HybridrecError: The data, the config or the event store is unusable, or training or
            the evaluation failed; a failure once the round has started (after the config
            was read) is recorded in the store's history, and the serving version stays
            current.
    """
    from hybridrec.serving.events import database_url as resolve_url

    settings = Settings()
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    if reload_url is not None and not token:
        raise ConfigError("--reload-url needs the server's HYBRIDREC_ADMIN_TOKEN")
    url = resolve_url(database_url or settings.database_url, data_dir or settings.data_dir)
    if min_improve is None:
        min_improve = settings.min_improve
    store = ModelStore(model_dir)
    with retrain_lock(store.root):
        cfg = _config(store, config, min_improve)
        _check_target(cfg)
        with tracked_run("retrain", cfg, console=console) as run:
            result = _Round(store, cfg, run, console, skip_unchanged).execute(url, data_home)
            if result.decision.deploy and reload_url is not None and token:
                result.reloaded = request_reload(reload_url, token)
                _say(console, f"retrain: {result.reloaded}")
            return result


@dataclass
class _Round:
    """One round's state: what it works on, and how far it got (for a failure's record)."""

    store: ModelStore
    cfg: PipelineConfig
    run: RunRecord
    console: Console | None
    skip_unchanged: bool = False
    start: float = field(default_factory=time.perf_counter)
    phase: str = "opening the serving version"
    current: str | None = None
    candidate: str | None = None

    def execute(self, url: str, data_home: str | Path | None) -> RetrainResult:
        """The round; a failure is recorded in the store's history, then raised."""
        try:
            return self._steps(url, data_home)
        except Exception as exc:
            self._record_failure(exc)
            raise

    def _steps(self, url: str, data_home: str | Path | None) -> RetrainResult:
        store, cfg, console = self.store, self.cfg, self.console
        target = cfg.evaluation.target
        self.current = current = store.current()
        serving = open_bundle(store.root, current) if current is not None else None
        self.phase = "merging the feedback"
        prepared = prepare_data(cfg.data, data_home=data_home)
        merged, counts = merge_feedback(
            prepared.interactions, load_events(url), cfg.retrain, prepared.conversion
        )
        _say(
            console,
            f"retrain: serving {current or 'nothing'}; {prepared.interactions.height:,} "
            f"interactions from {prepared.name} + {counts.events:,} events, "
            f"{counts.thumbs_up:,} thumbs up, {counts.thumbs_down:,} thumbs down "
            f"({counts.removed:,} rows removed) from {_shown(url)}",
        )
        if serving is not None:
            train_df, holdout = select_holdout(merged, seen_pairs(merged, serving), cfg.retrain)
        else:
            train_df, holdout = merged, merged.clear()
        result = RetrainResult(
            Decision(False, "", target),
            None,
            current,
            current,
            holdout_rows=holdout.height,
            holdout_users=holdout["user_id"].n_unique(),
            rows=merged.height,
            feedback=counts,
            inputs=_inputs(merged, cfg, current),
        )
        if self.skip_unchanged and (at := _unchanged_since(store, result.inputs)) is not None:
            result.decision = Decision(
                False,
                f"nothing changed since the decision of {at} (same data, config and serving "
                "version); nothing trained",
                target,
            )
            return self._finish(result)
        if serving is not None:
            _say(
                console,
                f"retrain: holdout of {result.holdout_rows:,} interactions of "
                f"{result.holdout_users:,} users (the newest the serving version was not "
                "trained on)",
            )
            if result.holdout_users < cfg.retrain.min_users:
                result.decision = Decision(
                    False,
                    f"the holdout has {result.holdout_users} users, fewer than [retrain] "
                    f"min_users = {cfg.retrain.min_users}: too few to decide on (few "
                    "interactions since the serving version?); nothing trained",
                    target,
                )
                return self._finish(result)
        self.phase = "training the candidate"
        _say(console, "retrain: training the candidate")
        items = _cast_ids(prepared.items, "item_id", merged["item_id"].dtype)
        users = _cast_ids(prepared.users, "user_id", merged["user_id"].dtype)
        trained = train_pipeline(
            cfg,
            store.root,
            promote=False,
            console=console,
            prepared=PreparedData(prepared.name, train_df, items, users, prepared.conversion),
        )
        self.candidate = result.candidate = trained.version
        self.run.add_train(trained, store.root, promoted=False)
        _say(console, f"retrain: candidate {trained.version} written (not current)")
        if serving is None:
            result.decision = Decision(
                True, "no version was serving: the first one is deployed as it is", target
            )
        else:
            self.phase = "evaluating"
            _say(console, f"retrain: scoring {trained.version} and {current} on the holdout")
            with _status(console, "scoring both versions on the holdout"):
                new = _score(open_bundle(store.root, trained.version), holdout, cfg)
                old = _score(serving, holdout, cfg)
            if (
                new.user_ids is None
                or old.user_ids is None
                or (not np.array_equal(new.user_ids, old.user_ids))
            ):  # pragma: no cover - both are scored on one holdout
                raise DataError("the two versions were scored on different users")
            result.reports = {"candidate": new, "current": old}
            result.decision = decide(
                new.per_user[target], old.per_user[target], cfg.retrain, target
            )
        if result.decision.deploy:
            self.phase = "promoting"
            store.promote(trained.version)
            root, version, _ = self.run.versions[-1]
            self.run.versions[-1] = (root, version, True)  # the registry's champion now
        return self._finish(result)

    def _finish(self, result: RetrainResult) -> RetrainResult:
        """Record the decision (store history, tracking run) and say it."""
        self.phase = "recording the decision"
        result.seconds = time.perf_counter() - self.start
        result.current = self.store.current()
        record = result.record()
        self.store.record_decision(record)
        d = result.decision
        self.run.tags |= {
            "retrain.decision": record["decision"],
            "retrain.reason": d.reason[:5000],
            "retrain.current_version": result.compared_with or "",
            "retrain.candidate_version": result.candidate or "",
        }
        interval = asdict(d.interval) if d.interval is not None else {}
        self.run.add_metrics(
            {
                "deployed": float(d.deploy),
                f"candidate_{d.target}": d.candidate,
                f"current_{d.target}": d.current,
                "gain": d.gain,
                **{f"diff_{k}": interval.get(k) for k in ("mean", "low", "high")},
                "holdout_rows": result.holdout_rows,
                "holdout_users": result.holdout_users,
                **asdict(result.feedback),
            },
            "retrain",
        )
        for role, report in result.reports.items():
            self.run.add_metrics(report.metrics, "holdout", role)
        what = "deployed" if d.deploy else "kept"
        version = result.candidate if d.deploy else result.compared_with
        _say(self.console, f"retrain: {what} {version or 'nothing'}: {d.reason}")
        return result

    def _record_failure(self, exc: BaseException) -> None:
        """Note the failed round in the store's history; a failure to do so is not raised."""
        reason = f"{self.phase} failed: {type(exc).__name__}: {exc}"
        self.run.tags |= {"retrain.decision": "failed", "retrain.reason": reason[:5000]}
        with contextlib.suppress(Exception):  # a full disk may refuse this too
            self.store.record_decision(
                {
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "decision": "failed",
                    "deployed": False,
                    "reason": reason,
                    "candidate": self.candidate,
                    "current": self.current,
                    "seconds": round(time.perf_counter() - self.start, 3),
                }
            )


@contextlib.contextmanager
def _status(console: Console | None, text: str) -> Iterator[None]:
    if console is None or not console.is_terminal:
        yield
        return
    with console.status(text):
        yield


# ---- on a schedule --------------------------------------------------------------------------


def exit_with_parent(parent: int, *, every: float = 0.5) -> threading.Thread:
    """End this process (SIGTERM to itself) as soon as ``parent`` is no longer its parent.

    For a retrain beside a server: however the server ends (a signal, a crash, a kill), its
    children are handed to another parent at once, and this one stops with it, mid-round if
    need be (a round cut anywhere leaves ``current`` as it was).

    Raises:
        ConfigError: ``parent`` is not this process's parent now.
    """
    if os.getppid() != parent:
        raise ConfigError(f"--beside-server {parent}: not this process's parent")

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="hybridrec-parent-watch", daemon=True)
    thread.start()
    return thread


def run_every(
    seconds: float,
    round_: Callable[[], object],
    *,
    console: Console | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Call ``round_`` every ``seconds`` (after each one ends) until stopped.

    The first round starts one interval from now. A round that fails, or finds another
    retrain holding the lock, is reported on ``console`` and the schedule goes on.

    Args:
        seconds: The interval.
        round_: One round (`retrain_once` with its arguments).
        console: Where the schedule and failures are reported.
        stop: Ends the schedule when set (checked between rounds).
    """
    stop = stop or threading.Event()
    every = _describe_seconds(seconds)
    while not stop.is_set():
        due = time.time() + seconds
        at = f"{datetime.fromtimestamp(due):%Y-%m-%d %H:%M:%S}"
        _say(console, f"retrain: next round at {at} (every {every})")
        if stop.wait(seconds):
            return
        try:
            round_()
        except RetrainBusyError as exc:
            _say(console, f"retrain: skipped: {exc}")
        except Exception as exc:  # the schedule outlives any one round
            _say(console, f"retrain: failed: {type(exc).__name__}: {exc}")
