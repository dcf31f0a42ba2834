"""Cold-item and cold-user splits, and their evaluation with the ordinary evaluator."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hybridrec.data.coldstart import (
    cold_item_split,
    cold_start_reports,
    cold_train_data,
    cold_user_split,
    evaluate_cold,
)
from hybridrec.data.dataset import InteractionData
from hybridrec.data.synthetic import planted_clusters
from hybridrec.errors import ConfigError, DataError
from hybridrec.evaluation.evaluator import Evaluator
from hybridrec.models import create_model

WORDS = (
    ("rocket", "galaxy", "alien", "orbit", "planet", "laser", "starship", "nebula"),
    ("romance", "wedding", "love", "kiss", "heart", "date", "bride", "flirt"),
    ("ghost", "zombie", "haunted", "blood", "scream", "curse", "crypt", "vampire"),
)


def planted_catalog(item_ids: list[int], seed: int = 0) -> pl.DataFrame:
    """Item text that carries the planted clusters (item ``1000 + i`` is in cluster i % 3)."""
    rng = np.random.default_rng(seed)
    tags = []
    for item in item_ids:
        words = WORDS[(item - 1000) % 3]
        tags.append(" ".join(rng.choice(words, size=int(rng.integers(4, 7)), replace=False)))
    return pl.DataFrame({"item_id": item_ids, "title": [f"t{i}" for i in item_ids], "tags": tags})


@pytest.fixture(scope="module")
def planted() -> pl.DataFrame:
    return planted_clusters(n_users=300, n_items=90, n_clusters=3, per_user=12, seed=3)


@pytest.fixture(scope="module")
def items(planted: pl.DataFrame) -> pl.DataFrame:
    return planted_catalog(sorted(set(planted["item_id"].to_list())))


def test_cold_item_split(planted):
    split = cold_item_split(planted, items_share=0.1, seed=7)
    cold = set(split.test["item_id"].to_list())
    all_items = set(planted["item_id"].to_list())
    assert len(cold) <= round(0.1 * len(all_items)) and len(cold) >= 5
    assert not cold & set(split.train["item_id"].to_list())  # no trace in train
    assert set(split.test["user_id"].to_list()) <= set(split.train["user_id"].to_list())
    assert split.train.height + split.test.height <= planted.height
    again = cold_item_split(planted, items_share=0.1, seed=7)
    assert again.test.equals(split.test)
    assert not cold_item_split(planted, items_share=0.1, seed=8).test.equals(split.test)
    with pytest.raises(ConfigError, match="items_share"):
        cold_item_split(planted, items_share=1.0)


def test_cold_user_split_keeps_one_to_three_earliest(planted):
    split = cold_user_split(planted, users_share=0.2, max_train=3, seed=1)
    cold_users = set(split.test["user_id"].to_list())
    assert len(cold_users) == round(0.2 * planted["user_id"].n_unique())
    train_counts = split.train.group_by("user_id").len()
    counts = dict(zip(train_counts["user_id"], train_counts["len"], strict=True))
    kept = [counts[u] for u in cold_users]
    assert min(kept) >= 1 and max(kept) <= 3 and len(set(kept)) == 3
    # Warm users keep everything; nothing is lost or duplicated.
    assert split.train.height + split.test.height == planted.height
    for u in list(cold_users)[:20]:
        tr = split.train.filter(pl.col("user_id") == u)["timestamp"].max()
        te = split.test.filter(pl.col("user_id") == u)["timestamp"].min()
        assert tr < te  # the earliest interactions are the ones kept
    with pytest.raises(DataError, match="more than 50"):
        cold_user_split(planted, max_train=50)


def test_cold_train_data_covers_the_catalog(planted, items):
    split = cold_item_split(planted, items_share=0.1, seed=0)
    train = cold_train_data(split.train, items)
    assert len(train.items) == items.height
    cold = split.test["item_id"].unique().to_list()
    assert np.all(train.items.index(cold) >= 0)
    assert train.matrix[:, train.items.index(cold)].nnz == 0


def test_content_recommends_cold_items_popularity_cannot(planted, items):
    split = cold_item_split(planted, items_share=0.1, seed=0)
    train = cold_train_data(split.train, items)
    reports = evaluate_cold(
        {
            "content": create_model("content", {"show_progress": False}),
            "popularity": create_model("popularity"),
        },
        train,
        split.test,
        ks=(10,),
    )
    by = {r.name: r for r in reports}
    assert by["popularity"].metrics["recall@10"] == 0.0
    # A random ranking of the ~80 unseen items would find about 10/80 of them.
    assert by["content"].metrics["recall@10"] > 0.2
    assert by["content"].n_users == split.test["user_id"].n_unique()
    assert by["content"].fit_seconds is not None


def test_unknown_test_items_count_as_misses(planted):
    # Fit on interactions only (no catalog rows for cold items): they cannot be recommended,
    # yet they still divide recall.
    split = cold_item_split(planted, items_share=0.3, seed=0)
    train = InteractionData.from_frame(split.train)
    [report] = evaluate_cold({"pop": create_model("popularity")}, train, split.test, ks=(5,))
    assert report.metrics["recall@5"] == 0.0
    evaluator = Evaluator(train, split.test, ks=(5,))
    per_user = split.test.group_by("user_id").len().sort("user_id")
    np.testing.assert_array_equal(evaluator.user_ids, per_user["user_id"].to_numpy())
    np.testing.assert_array_equal(evaluator.n_relevant, per_user["len"].to_numpy())
    assert evaluator.relevant.nnz == 0


def test_model_fit_on_other_vocabulary_is_rejected(planted, items):
    split = cold_item_split(planted, items_share=0.1, seed=0)
    other = create_model("popularity").fit(InteractionData.from_frame(split.train))
    with pytest.raises(DataError, match="different item vocabulary"):
        evaluate_cold({"pop": other}, cold_train_data(split.train, items), split.test, fit=False)


def test_cold_start_reports_runs_both_splits(planted, items):
    out = cold_start_reports(
        planted,
        items,
        lambda: {
            "content": create_model("content", {"show_progress": False}),
            "popularity": create_model("popularity"),
        },
        ks=(10,),
    )
    assert set(out) == {"cold_items", "cold_users"}
    for reports in out.values():
        assert [r.name for r in reports] == ["content", "popularity"]
    users = {r.name: r for r in out["cold_users"]}
    assert users["content"].metrics["recall@10"] > users["popularity"].metrics["recall@10"]
