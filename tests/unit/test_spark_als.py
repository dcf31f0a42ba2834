"""ALS with ``backend = "spark"``: the hyperparameter mapping, factors, fold-in, batch scoring.

One local Spark session (``local[2]``) serves the whole module: the code under test reuses
an active session and leaves it running, so only the fixture starts and stops Spark.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from hybridrec.data.dataset import InteractionData
from hybridrec.data.vocab import Vocab
from hybridrec.errors import ConfigError
from hybridrec.models import ALS, create_model
from hybridrec.models.als import ALSConfig
from hybridrec.models.base import ItemFilter
from hybridrec.models.spark_als import (
    MIN_RATING,
    recommend_all_users,
    resolve_master,
    spark_inputs,
    spark_session,
    train_factors,
)

pytestmark = pytest.mark.slow

SPARK = {"backend": "spark", "factors": 8, "iterations": 5, "random_state": 3}


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    with spark_session("local[2]") as session:
        yield session


#: A user in the vocabulary without interactions (Spark never sees them).
IDLE = 10_000


@pytest.fixture(scope="module")
def spark_als(spark: Any, planted: pl.DataFrame) -> ALS:
    users = Vocab(np.concatenate([planted["user_id"].unique().sort().to_numpy(), [IDLE]]))
    data = InteractionData.from_frame(planted, users=users)
    model = create_model("als", SPARK | {"alpha": 4.0, "regularization": 2.0})
    assert isinstance(model, ALS)
    return model.fit(data)


# ---- the mapping (no Spark needed) --------------------------------------------------------


def test_spark_ratings_give_implicits_confidence_and_clip_below_one() -> None:
    x = sp.csr_matrix(np.array([[1.0, 0.0, 3.0], [0.0, 0.25, 0.0]], dtype=np.float32))
    got = spark_inputs(x, ALSConfig(backend="spark", alpha=2.0))
    order = np.lexsort((got.items, got.users))
    cells = list(zip(got.users[order].tolist(), got.items[order].tolist(), strict=True))
    assert cells == [(0, 0), (0, 2), (1, 1)]
    # Spark's confidence is 1 + rating: 2·1 and 2·3 exactly; 2·0.25 < 1 is clipped.
    np.testing.assert_allclose(1 + got.ratings[order], [2.0, 6.0, 1.0 + MIN_RATING], rtol=1e-6)
    assert got.clipped == 1


def test_spark_reg_param_is_lambda_over_the_interaction_weighted_row_count() -> None:
    # Users with 3 and 1 interactions, items with 2, 1 and 1: Σn = 8, Σn² = 9 + 1 + 4 + 1 + 1.
    x = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 0]], dtype=np.float32))
    got = spark_inputs(x, ALSConfig(backend="spark", regularization=4.0))
    assert got.reg_param == pytest.approx(4.0 * 8 / 16)
    assert got.clipped == 0


def test_master_comes_from_config_then_env_then_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    assert resolve_master(None) == "local[*]"
    monkeypatch.setenv("SPARK_MASTER", "spark://head:7077")
    assert resolve_master(None) == "spark://head:7077"
    assert resolve_master("local[2]") == "local[2]"


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"master": "local[2]"}, "master: Spark settings need backend = 'spark'"),
        ({"backend": "spark", "use_gpu": True}, "no GPU"),
        ({"backend": "dask"}, "backend"),
    ],
)
def test_bad_backend_settings_are_config_errors(params: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        create_model("als", params)


def test_missing_pyspark_names_the_spark_extra(
    monkeypatch: pytest.MonkeyPatch, planted_data: InteractionData
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(ConfigError, match=r"hybridrec\[spark\]"):
        create_model("als", SPARK).fit(planted_data)


def test_missing_java_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyspark.sql import SparkSession

    # Whatever session another test left running, this one must start its own.
    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="needs Java"), spark_session("local[1]"):
        pass


@pytest.mark.parametrize("url", ["local[2]", "local[*]", "local", "spark://head:7077", "yarn"])
def test_master_urls_spark_takes_pass_the_check(url: str) -> None:
    from hybridrec.models.spark_als import _MASTER_URL

    assert _MASTER_URL.match(url)


def test_a_bad_master_url_fails_before_starting_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyspark.sql import SparkSession

    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    bad = pytest.raises(ConfigError, match="'local\\[x\\]' is not a Spark master URL")
    with bad, spark_session("local[x]"):
        pass


# ---- training on Spark ----------------------------------------------------------------------


def test_spark_factors_solve_implicits_normal_equations(spark: Any) -> None:
    """Spark's last half-step solves users against its items: implicit's closed form with
    the mapped confidence, and λ_spark · n_u, gives the same factors."""
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(5)
    x = sp.random(120, 40, density=0.15, format="csr", random_state=5, dtype=np.float32).tolil()
    # User 7 and item 3 have no interactions: Spark never sees them.
    x[7, :] = 0
    x[:, 3] = 0
    x = x.tocsr()
    x.eliminate_zeros()
    x.data[:] = rng.integers(1, 4, x.nnz).astype(np.float32)
    config = ALSConfig(backend="spark", factors=6, iterations=4, alpha=3.0, regularization=2.0)
    user_f, item_f = train_factors(x, config)
    assert user_f.dtype == item_f.dtype == np.float32
    assert user_f.shape == (120, 6) and item_f.shape == (40, 6)
    assert np.all(user_f[7] == 0) and np.all(item_f[3] == 0)
    assert np.count_nonzero(np.abs(user_f).sum(axis=1)) == 119
    reg = spark_inputs(x, config).reg_param
    counts = np.diff(x.indptr)
    for n in np.unique(counts[counts > 0]):
        rows = np.flatnonzero(counts == n)
        solver = AlternatingLeastSquares(
            factors=6, regularization=reg * n, alpha=config.alpha, random_state=0
        )
        solver.item_factors = item_f.copy()
        solved = solver.recalculate_user(rows, x[rows])
        np.testing.assert_allclose(solved, user_f[rows], rtol=2e-3, atol=2e-4)


def test_a_configured_checkpoint_dir_is_used(spark: Any, tmp_path: Any) -> None:
    x = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=np.float32))
    folder = tmp_path / "checkpoints"
    config = ALSConfig(
        backend="spark", factors=2, iterations=3, checkpoint_interval=1, checkpoint_dir=str(folder)
    )
    train_factors(x, config)
    assert str(folder) in spark.sparkContext.getCheckpointDir()
    assert folder.is_dir() and any(folder.iterdir())


def test_spark_als_recovers_the_planted_clusters(spark_als: ALS, planted_spec: Any) -> None:
    users = planted_spec.users_of_cluster(1)[:20]
    recs = spark_als.recommend(users, 5)
    hits = [
        np.mean(planted_spec.item_cluster(items) == planted_spec.user_cluster([u])[0])
        for u, items, _ in recs
    ]
    assert np.mean(hits) > 0.9, hits


def test_spark_model_folds_in_and_round_trips(
    spark_als: ALS, planted_spec: Any, tmp_path: Any
) -> None:
    history = {"visitor": planted_spec.items_of_cluster(2)[:6]}
    recs = spark_als.recommend(["visitor"], 5, history=history)
    items = recs.row(0)[0]
    assert items.size == 5
    assert np.mean(planted_spec.item_cluster(items) == 2) > 0.7
    assert not set(items.tolist()) & set(history["visitor"])
    path = tmp_path / "als.joblib"
    spark_als.save(path)
    loaded = ALS.load(path)
    assert loaded.config.backend == "spark"
    again = loaded.recommend(["visitor"], 5, history=history)
    np.testing.assert_array_equal(again.indices, recs.indices)


def test_users_unknown_to_spark_keep_zero_factors(spark_als: ALS) -> None:
    users = spark_als._fitted()[0]
    factors = spark_als.user_factors_
    assert np.all(factors[users.index([IDLE])] == 0)
    assert np.count_nonzero(np.abs(factors).sum(axis=1)) == len(users) - 1


# ---- batch scoring on Spark -----------------------------------------------------------------


def _sets(frame: pl.DataFrame) -> dict[Any, set[Any]]:
    return {
        u: set(items) for u, items in frame.group_by("user_id").agg(pl.col("item_id")).iter_rows()
    }


def _assert_same_batch(got: pl.DataFrame, local: pl.DataFrame, users: Vocab) -> None:
    assert got.columns == local.columns == ["user_id", "item_id", "rank", "score"]
    assert got.schema == local.schema
    assert got["user_id"].unique(maintain_order=True).to_list() == users.ids.tolist()
    assert got.height == local.height
    # Same scores rank by rank (float32 products: tolerance); same sets up to ties at k.
    np.testing.assert_allclose(got["score"].to_numpy(), local["score"].to_numpy(), rtol=1e-5)
    a, b = _sets(got), _sets(local)
    differ = [u for u in a if a[u] != b[u]]
    assert len(differ) <= len(a) // 50, differ


def test_spark_batch_equals_in_process_recommend_without_seen_items(spark_als: ALS) -> None:
    users, items, user_items = spark_als._fitted()
    local = spark_als.recommend(users.ids, 7).to_frame()
    got = recommend_all_users(spark_als, 7, exclude_seen=True)
    _assert_same_batch(got, local, users)
    cells = user_items.tocoo()
    seen = set(zip(users.lookup(cells.row).tolist(), items.lookup(cells.col).tolist(), strict=True))
    assert not seen & set(got.select("user_id", "item_id").iter_rows())


def test_spark_batch_with_seen_items_and_an_allow_list(spark_als: ALS) -> None:
    users, items, _ = spark_als._fitted()
    allowed = np.zeros(len(items), dtype=bool)
    allowed[::4] = True
    allow = ItemFilter(allow=items.ids[allowed].tolist())
    local = spark_als.recommend(users.ids, 5, exclude_seen=False, filters=allow).to_frame()
    got = recommend_all_users(spark_als, 5, exclude_seen=False, allowed=allowed)
    _assert_same_batch(got, local, users)
    assert set(got["item_id"].to_list()) <= set(items.ids[allowed].tolist())
