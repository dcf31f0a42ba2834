"""ALS on Apache Spark: training factors (``[models.als] backend = "spark"``) and batch scoring.

Imported only when the Spark backend or the Spark batch engine is asked for, so PySpark is
never loaded on any other path.

How the two backends are made to solve the same problem. `implicit` minimizes, over user
factors x and item factors y,

    Σ_ui c_ui (p_ui - x_u·y_i)² + λ (Σ_u |x_u|² + Σ_i |y_i|²)

with c_ui = alpha·w_ui on observed cells (1 elsewhere) and an unscaled λ. Spark's implicit
ALS (``implicitPrefs``) uses c_ui = 1 + alpha_spark·|r_ui| and scales λ by each row's number
of observed cells (ALS-WR): λ_spark·n_u for user u, λ_spark·n_i for item i. So:

- Spark is given ``rating = alpha·w - 1`` and ``alpha = 1``: its confidence 1 + rating is
  then alpha·w, exactly implicit's (the normal equations coincide term by term). Where
  alpha·w <= 1 the rating is clipped to a tiny positive value (Spark treats ratings <= 0 as
  "not preferred"): such cells train with confidence 1 instead of alpha·w.
- ``regParam = λ · Σn / Σn²``, with n the interaction counts of the users and items: the
  row count an average *interaction* sits in is Σn² / Σn, so λ_spark · n equals λ where
  the data is; rows with more interactions than that are regularized more, rows with fewer
  less, as ALS-WR intends. (λ over the plain mean count instead over-shrinks the popular
  items, whose counts are far above the mean: on MovieLens with λ = 20 it loses half the
  NDCG.)

Both are tested (``tests/unit/test_spark_als.py``): Spark's final user factors equal the
closed-form solve against its item factors under this mapping, and NDCG@10 on MovieLens
latest-small matches the implicit backend's (``tests/integration/test_spark_ndcg.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from hybridrec.errors import ConfigError, DataError

if TYPE_CHECKING:
    from hybridrec.models.als import ALS, ALSConfig

__all__ = [
    "SparkInputs",
    "recommend_all_users",
    "resolve_master",
    "spark_error",
    "spark_inputs",
    "spark_session",
    "train_factors",
]

log = logging.getLogger(__name__)

#: The rating given to Spark where alpha·weight - 1 <= 0 (see the module docstring).
MIN_RATING = 1e-6
_DEFAULT_MASTER = "local[*]"
# The master URL forms Spark accepts (checked before a JVM is started for nothing).
_MASTER_URL = re.compile(
    r"^(local(\[(\*|\d+)(,\s*\d+)?\])?|local-cluster\[[^\]]+\]|yarn|(spark|mesos|k8s)://\S+)$"
)
_EXTRA_HINT = "pip install 'hybridrec[spark]'"


def resolve_master(configured: str | None) -> str:
    """The Spark master: the config's, else ``SPARK_MASTER``, else ``local[*]``."""
    return configured or os.environ.get("SPARK_MASTER") or _DEFAULT_MASTER


def _import_pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise ConfigError(
            f"als: backend = 'spark' needs PySpark, which is not installed: {_EXTRA_HINT} "
            "(the 'spark' extra)"
        ) from None
    return pyspark


def _check_java() -> None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return
    if shutil.which("java") is None:
        raise ConfigError(
            "als: backend = 'spark' needs Java (17 or newer for PySpark 4), and none was "
            "found: no 'java' on PATH and JAVA_HOME is unset; install a JDK or set JAVA_HOME"
        )


@contextlib.contextmanager
def spark_session(
    master: str | None = None,
    *,
    driver_memory: str | None = None,
    app_name: str = "hybridrec",
) -> Iterator[Any]:
    """A Spark session: the active one if there is one (left running), else a new one.

    A session created here is stopped on exit. Spark's log level is set to WARN; its own
    logs go to stderr, never to stdout (which may carry the CLI's output).

    Raises:
        ConfigError: PySpark is not installed, or Java is missing.
    """
    _import_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.sparkContext.setLogLevel("WARN")
        yield active
        return
    # Under spark-submit the JVM (and its --master) is there before us: a master given in
    # the config still wins, but SPARK_MASTER / local[*] must not override spark-submit's.
    submitted = bool(os.environ.get("PYSPARK_GATEWAY_PORT")) and not master
    url = "" if submitted else resolve_master(master)
    if url and not _MASTER_URL.match(url):
        raise ConfigError(
            f"als: master {url!r} is not a Spark master URL (local[*], local[N], "
            "spark://host:port, yarn, k8s://..., mesos://...); set the config key 'master' "
            "or SPARK_MASTER"
        )
    _check_java()
    builder = SparkSession.builder.appName(app_name).config("spark.ui.showConsoleProgress", "false")
    if url:
        builder = builder.master(url)
    if url.startswith("local"):
        # One machine: no web UI to serve, shuffles over a few partitions (not 200), and
        # Python workers run this interpreter (the one hybridrec is installed in), not
        # whatever ``python3`` is first on PATH. A cluster sets PYSPARK_PYTHON itself.
        builder = builder.config("spark.ui.enabled", "false").config(
            "spark.sql.shuffle.partitions", str(max(os.cpu_count() or 1, 2))
        )
    if driver_memory:
        builder = builder.config("spark.driver.memory", driver_memory)
    # PySpark reads the workers' interpreter from PYSPARK_PYTHON when the context starts.
    own_python = url.startswith("local") and not os.environ.get("PYSPARK_PYTHON")
    if own_python:
        os.environ["PYSPARK_PYTHON"] = sys.executable
    where = repr(url) if url else "given to spark-submit"
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # py4j / pyspark raise their own types when the JVM fails
        raise ConfigError(
            f"als: could not start Spark at master {where} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); check Java and the "
            "master URL (config key 'master' or SPARK_MASTER)"
        ) from None
    finally:
        if own_python:
            del os.environ["PYSPARK_PYTHON"]
    session.sparkContext.setLogLevel("WARN")
    try:
        yield session
    finally:
        session.stop()


# An exception line in Spark's (Java and Python) traces; the wrappers around the cause.
_EXC_LINE = re.compile(r"^\s*(?:Caused by: )?([\w.$]+(?:Error|Exception)): (.+)$")
_WRAPPERS = ("Py4JJavaError", "SparkException", "PythonException", "QueryExecutionException")


def spark_error(exc: BaseException) -> str:
    """The line of a Spark failure that says what went wrong (not py4j's call wrapper)."""
    text = str(exc)
    causes = []
    for line in text.splitlines():
        m = _EXC_LINE.match(line)
        if m and not m.group(1).endswith(_WRAPPERS):
            causes.append(f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}")
    if causes:
        return causes[0]
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first or type(exc).__name__


@dataclass(frozen=True)
class SparkInputs:
    """What Spark's ALS is given for one `ALSConfig` and weighted matrix.

    Attributes:
        users: Row index of each observed cell (int32).
        items: Column index of each observed cell (int32).
        ratings: ``max(alpha·weight - 1, MIN_RATING)`` (float32).
        reg_param: Spark's ``regParam`` (λ · Σn / Σn², n the row counts).
        clipped: Cells whose alpha·weight < 1 (their confidence is 1 on Spark).
    """

    users: NDArray[np.int32]
    items: NDArray[np.int32]
    ratings: NDArray[np.float32]
    reg_param: float
    clipped: int


def spark_inputs(x: sp.csr_matrix, config: ALSConfig) -> SparkInputs:
    """Spark's ratings and regParam matching implicit's objective (module docstring)."""
    coo = x.tocoo()
    keep = coo.data != 0
    users = coo.row[keep].astype(np.int32)
    items = coo.col[keep].astype(np.int32)
    raw = config.alpha * coo.data[keep].astype(np.float64) - 1.0
    clipped = int(np.count_nonzero(raw < 0))
    ratings = np.maximum(raw, MIN_RATING).astype(np.float32)
    # Spark multiplies regParam by each row's count n; dividing λ by the count an average
    # *interaction's* row has (Σn² / Σn over users and items) makes λ_spark · n equal λ
    # where the data is. (Dividing by the plain mean count over-shrinks popular items,
    # whose counts are far above it, and loses most of the NDCG on MovieLens.)
    counts = np.concatenate([np.bincount(users), np.bincount(items)]).astype(np.float64)
    mass = float(np.square(counts).sum())
    reg_param = config.regularization * float(counts.sum()) / mass if mass else 0.0
    return SparkInputs(users, items, ratings, float(reg_param), clipped)


def _read_factors(path: Path, n: int, rank: int) -> NDArray[np.float32]:
    """Spark's ``id, features`` Parquet output as an (n × rank) array, rows placed by id."""
    df = pl.read_parquet(path / "*.parquet")
    out = np.zeros((n, rank), dtype=np.float32)
    if df.height:
        ids = df["id"].to_numpy().astype(np.int64)
        feats = df["features"].list.to_array(rank).to_numpy().astype(np.float32)
        # Users / items without a training interaction never reach Spark, so they are not
        # in its output: they keep zero factors, which is also what implicit solves for an
        # empty row ((YᵀY + λI)⁻¹ · 0), so the two backends agree on them too.
        out[ids] = feats
    return out


def train_factors(
    x: sp.csr_matrix, config: ALSConfig
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Train Spark's implicit ALS on a weighted users × items matrix.

    The cells are written to Parquet (so Spark reads them in parallel), factors come back
    through Parquet too and are placed by index: rows in ``x``'s user / item order, float32.

    Raises:
        ConfigError: PySpark or Java missing, or Spark could not start.
        DataError: Spark's training failed (its message, first line).
    """
    _import_pyspark()
    inputs = spark_inputs(x, config)
    if inputs.clipped:
        log.info(
            "als (spark): %d cells have alpha * weight < 1 and train with confidence 1",
            inputs.clipped,
        )
    from pyspark.sql import SparkSession

    # A session someone else started outlives this call: no temporary checkpoint folder
    # (deleted below) may be left configured on it.
    reused = SparkSession.getActiveSession() is not None
    n_users, n_items = x.shape
    work_root = config.work_dir
    if work_root is not None:
        Path(work_root).mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="hybridrec-spark-", dir=work_root) as tmp,
        spark_session(config.master, driver_memory=config.driver_memory) as spark,
    ):
        from pyspark.ml import recommendation

        root = Path(tmp)
        cells = root / "ratings.parquet"
        pl.DataFrame(
            {"user": inputs.users, "item": inputs.items, "rating": inputs.ratings}
        ).write_parquet(cells, row_group_size=1_000_000)
        sc = spark.sparkContext
        if config.checkpoint_dir is not None:
            sc.setCheckpointDir(config.checkpoint_dir)
        elif not reused and sc.master.startswith("local"):
            # Checkpoints cut the lineage of long runs (Spark's StackOverflowError otherwise);
            # on one machine a temporary folder serves. A cluster needs a shared path.
            sc.setCheckpointDir(str(root / "checkpoints"))
        blocks = max(int(sc.defaultParallelism), 1)
        als = recommendation.ALS(
            rank=config.factors,
            maxIter=config.iterations,
            regParam=inputs.reg_param,
            alpha=1.0,
            implicitPrefs=True,
            nonnegative=False,
            seed=config.random_state,
            numUserBlocks=blocks,
            numItemBlocks=blocks,
            checkpointInterval=config.checkpoint_interval,
            coldStartStrategy=config.cold_start_strategy,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
        )
        start = time.perf_counter()
        try:
            model = als.fit(spark.read.parquet(str(cells)))
            model.userFactors.write.parquet(str(root / "user_factors"))
            model.itemFactors.write.parquet(str(root / "item_factors"))
        except Exception as exc:  # py4j's Java errors: show Spark's message, not a JVM trace
            raise DataError(f"als (spark): training failed: {spark_error(exc)}") from None
        log.info("als (spark): trained in %.1f s on %s", time.perf_counter() - start, sc.master)
        return (
            _read_factors(root / "user_factors", n_users, config.factors),
            _read_factors(root / "item_factors", n_items, config.factors),
        )


# ---- batch scoring ----------------------------------------------------------------------


#: Users per scoring task (one dense block of scores: block × items float32 cells).
_SCORE_BLOCK = 2048


def _score_blocks(
    starts: Iterator[int], n: int, k: int, shared: Any
) -> Iterator[tuple[int, int, int, float]]:
    """Blocks of users: dense scores against all items, seen/filtered out, top-k rows."""
    from hybridrec.models.base import topk_rows

    user_f, item_f, indptr, indices, allowed = shared.value
    for start in starts:
        stop = min(start + _SCORE_BLOCK, n)
        scores = user_f[start:stop] @ item_f.T
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        if indptr is not None:
            lo, hi = indptr[start], indptr[stop]
            rows = np.repeat(np.arange(stop - start), np.diff(indptr[start : stop + 1]))
            scores[rows, indices[lo:hi]] = -np.inf
        idx, val = topk_rows(scores, k)
        for row in range(stop - start):
            for rank, (i, s) in enumerate(zip(idx[row].tolist(), val[row].tolist(), strict=True)):
                if i >= 0:
                    yield start + row, i, rank + 1, s


def recommend_all_users(
    model: ALS,
    k: int,
    *,
    exclude_seen: bool = True,
    allowed: NDArray[np.bool_] | None = None,
    master: str | None = None,
    work_dir: str | None = None,
) -> pl.DataFrame:
    """Every known user's top ``k`` from an ALS model, scored on Spark in blocks of users.

    The factors, the seen items and the allowed-items mask are broadcast; each task
    multiplies one block of users' factors by the item factors, drops seen (and
    disallowed) items and keeps the top k with `topk_rows`, as `Recommender.recommend`
    ranks (ties by item index). The executors write the rows to Parquet; they are read
    back here.

    Returns:
        ``user_id, item_id, rank, score`` (external ids, rank from 1), users in vocabulary
        order: the columns and order of `Recommendations.to_frame`.

    Raises:
        ConfigError: PySpark or Java missing, or Spark could not start.
    """
    _import_pyspark()
    users, items, user_items = model._fitted()
    k = min(k, len(items))
    n = len(users)
    seen = user_items.tocsr()
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="hybridrec-spark-", dir=work_dir) as tmp,
        spark_session(master, app_name="hybridrec-recommend") as spark,
    ):
        from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

        sc = spark.sparkContext
        shared = sc.broadcast(
            (
                np.asarray(model.user_factors_, dtype=np.float32),
                np.asarray(model.item_factors_, dtype=np.float32),
                seen.indptr.astype(np.int64) if exclude_seen else None,
                seen.indices.astype(np.int64) if exclude_seen else None,
                allowed,
            )
        )
        starts = list(range(0, n, _SCORE_BLOCK))
        rdd = sc.parallelize(starts, max(len(starts), 1)).mapPartitions(
            lambda part: _score_blocks(part, n, k, shared)
        )
        schema = StructType(
            [
                StructField("u", IntegerType(), False),
                StructField("i", IntegerType(), False),
                StructField("rank", IntegerType(), False),
                StructField("score", FloatType(), False),
            ]
        )
        out = Path(tmp) / "recommendations"
        try:
            spark.createDataFrame(rdd, schema).write.parquet(str(out))
        except Exception as exc:  # py4j's Java errors: show the cause, not a JVM trace
            raise DataError(f"als (spark): batch scoring failed: {spark_error(exc)}") from None
        shared.unpersist()
        parts = sorted(out.glob("*.parquet"))
        df = (
            pl.read_parquet(parts).sort("u", "rank")
            if parts
            else pl.DataFrame(
                schema={"u": pl.Int32, "i": pl.Int32, "rank": pl.Int32, "score": pl.Float32}
            )
        )
    return pl.DataFrame(
        {
            "user_id": users.lookup(df["u"].to_numpy().astype(np.int64)),
            "item_id": items.lookup(df["i"].to_numpy().astype(np.int64)),
            "rank": df["rank"].cast(pl.Int32),
            "score": df["score"].cast(pl.Float64),
        }
    )
