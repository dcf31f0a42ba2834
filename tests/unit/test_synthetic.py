"""Tests for hybridrec.data.synthetic."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from hybridrec.data.schema import INTERACTION_COLUMNS, validate_interactions
from hybridrec.data.synthetic import planted_clusters, random_matrix


@pytest.fixture(scope="module")
def clusters() -> pl.DataFrame:
    return planted_clusters(n_users=60, n_items=30, n_clusters=3, per_user=6, seed=1)


def test_planted_clusters_schema(clusters):
    assert clusters.columns == list(INTERACTION_COLUMNS)
    assert validate_interactions(clusters).equals(clusters)
    assert clusters["weight"].to_list() == [1.0] * clusters.height
    assert clusters["event_type"].unique().to_list() == ["interaction"]


def test_planted_clusters_users_stay_in_their_cluster(clusters):
    user_cluster = (clusters["user_id"] - 1) % 3
    item_cluster = (clusters["item_id"] - 1000) % 3
    assert (user_cluster == item_cluster).all()
    assert clusters["user_id"].min() == 1
    assert clusters["user_id"].max() == 60
    assert clusters["item_id"].min() >= 1000
    assert clusters["item_id"].max() < 1030


def test_planted_clusters_counts_and_distinct_pairs(clusters):
    assert clusters.height == 60 * 6
    assert clusters.group_by("user_id").len()["len"].to_list() == [6] * 60
    assert not clusters.select("user_id", "item_id").is_duplicated().any()


def test_planted_clusters_timestamps_increase_by_a_minute():
    df = planted_clusters(n_users=5, n_items=10, per_user=2, start_time=100)
    ts = df["timestamp"].to_numpy()
    assert ts[0] == 100
    assert (np.diff(ts) == 60).all()


def test_planted_clusters_per_user_capped_by_cluster_size():
    df = planted_clusters(n_users=4, n_items=6, n_clusters=2, per_user=10)
    assert df.group_by("user_id").len()["len"].to_list() == [3] * 4


def test_planted_clusters_seeded():
    a = planted_clusters(n_users=30, seed=4)
    assert a.equals(planted_clusters(n_users=30, seed=4))
    assert not a.equals(planted_clusters(n_users=30, seed=5))


def test_planted_clusters_noise_crosses_clusters():
    df = planted_clusters(n_users=90, n_items=60, n_clusters=3, per_user=8, noise=0.5, seed=2)
    cross = ((df["user_id"] - 1) % 3) != ((df["item_id"] - 1000) % 3)
    assert cross.any()
    assert not df.select("user_id", "item_id").is_duplicated().any()


def test_random_matrix_shape_and_values():
    m = random_matrix(50, 20, 300, seed=3)
    assert isinstance(m, sp.csr_matrix)
    assert m.shape == (50, 20)
    assert m.dtype == np.float32
    assert m.nnz == 300  # exactly the requested distinct cells
    assert (m.data == 1.0).all()
    assert m.max() == 1.0
    dense = m.toarray()
    assert set(np.unique(dense)) <= {0.0, 1.0}


def test_random_matrix_skew_favours_low_items():
    m = random_matrix(2000, 50, 20_000, seed=0, skew=1.0)
    pop = np.asarray(m.sum(axis=0)).ravel()
    assert pop[0] > pop[-1] * 3


def test_random_matrix_user_skew_gives_a_long_tail_of_light_users():
    flat = random_matrix(2000, 500, 20_000, seed=0)
    skewed = random_matrix(2000, 500, 20_000, seed=0, user_skew=0.8)
    assert skewed.nnz == 20_000  # still exactly the requested distinct cells
    lengths = np.diff(skewed.indptr)
    assert lengths[:20].mean() > 5 * lengths[-1000:].mean()
    assert np.diff(flat.indptr)[:20].mean() < 2 * np.diff(flat.indptr)[-1000:].mean()


def test_random_matrix_seeded():
    a = random_matrix(30, 10, 100, seed=9)
    b = random_matrix(30, 10, 100, seed=9)
    c = random_matrix(30, 10, 100, seed=10)
    assert (a != b).nnz == 0
    assert (a != c).nnz > 0
