"""The ranker's features, its leakage guard, and chunked training (`hybridrec.ranking`)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from hybridrec.config import PipelineConfig
from hybridrec.data.dataset import InteractionData
from hybridrec.data.split import temporal_split
from hybridrec.data.synthetic import planted_clusters
from hybridrec.data.vocab import Vocab
from hybridrec.models import Recommender, create_model
from hybridrec.pipeline.train import runnable_models
from hybridrec.ranking import Ranker
from hybridrec.ranking.features import (
    DAY,
    FeatureTables,
    LeakageError,
    check_no_leakage,
    pair_features,
)

T0 = 1_600_000_000


def _log() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Three users, four items, times in days from T0; a two-category catalog."""
    rows = [
        # user, item, day
        (1, 10, 0.0),
        (1, 11, 1.0),
        (1, 12, 9.0),
        (2, 10, 2.0),
        (2, 12, 8.5),
        (3, 13, 3.0),
        (3, 10, 9.5),
    ]
    log = pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "weight": [1.0] * len(rows),
            "timestamp": [int(T0 + r[2] * DAY) for r in rows],
        }
    )
    items = pl.DataFrame(
        {
            "item_id": [10, 11, 12, 13],
            "year": [1990, 2000, 2010, None],
            "categories": [["a"], ["a", "b"], ["b"], []],
        }
    )
    return log, items


def _tables() -> tuple[FeatureTables, Vocab, Vocab, pl.DataFrame]:
    log, items = _log()
    users, vocab = Vocab([1, 2, 3], kind="user"), Vocab([10, 11, 12, 13])
    tables = FeatureTables.build(log, users, vocab, items_table=items, windows=[1.0, 7.0])
    return tables, users, vocab, log


def test_item_and_user_aggregates_match_hand_counts():
    tables, *_ = _tables()
    # Item 10: users 1, 2, 3 -> log1p(3). The newest event is on day 9.5: the 1-day window
    # holds days 8.5 to 9.5 (items 10 and 12 twice), the 7-day one days 2.5 to 9.5.
    np.testing.assert_allclose(tables.item["item_pop"][0], np.log1p(3), rtol=1e-6)
    np.testing.assert_allclose(tables.item["item_pop_1d"], np.log1p([1, 0, 2, 0]), rtol=1e-6)
    np.testing.assert_allclose(tables.item["item_pop_7d"], np.log1p([1, 0, 2, 1]), rtol=1e-6)
    np.testing.assert_allclose(tables.item["item_age_days"], [9.5, 8.5, 1.0, 6.5], rtol=1e-6)
    np.testing.assert_allclose(tables.item["item_year"][:3], [1990, 2000, 2010])
    assert np.isnan(tables.item["item_year"][3])
    np.testing.assert_array_equal(tables.item_category, [0, 0, 1, -1])
    assert tables.item_cats.toarray().tolist() == [[1, 0], [1, 1], [0, 1], [0, 0]]
    np.testing.assert_allclose(tables.user["user_recency_days"], [0.5, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(tables.user["user_span_days"], [9.0, 6.5, 6.5], rtol=1e-6)
    np.testing.assert_allclose(tables.read_until - T0, np.array([9.0, 8.5, 9.5]) * DAY)


def test_pair_features_read_the_users_time_and_history():
    tables, *_ = _tables()
    names = tables.names(["r"])
    hist = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0]], np.float32))
    cands = np.array([[2, 3], [1, -1]])
    score = np.array([[0.5, 0.1], [0.9, np.nan]], np.float32)
    rank = np.array([[0, 1], [0, np.nan]], np.float32)
    x = pair_features(tables, np.array([0, 1]), hist, cands, {"r": (score, rank, score)})
    assert x.shape == (4, len(names))
    col = {n: x[:, j] for j, n in enumerate(names)}
    np.testing.assert_allclose(col["r_score"][:3], [0.5, 0.1, 0.9])
    np.testing.assert_allclose(col["n_sources"][:3], [1, 1, 1])
    # User 1's history: items 10 (a) and 11 (a, b): shares a = 1.0, b = 0.5.
    # Item 12 (b) -> 0.5; item 13 has no category -> NaN. User 2 (10: a, 12: b) and item
    # 11 (a, b): mean (0.5 + 0.5) / 2, max 0.5.
    np.testing.assert_allclose(col["ui_cat_affinity"][[0, 2]], [0.5, 0.5])
    assert np.isnan(col["ui_cat_affinity"][1])
    np.testing.assert_allclose(col["user_items"][[0, 2]], np.log1p([2, 2]))
    np.testing.assert_allclose(col["user_mean_year"][[0, 2]], [1995, 2000])
    np.testing.assert_allclose(col["ui_year_gap"][[0, 2]], [2010 - 1995, 2000 - 2000])
    # Item 12 had two events (days 8.5 and 9) in the day up to user 1's last (day 9).
    np.testing.assert_allclose(col["ui_pop_1d_at_user"][0], np.log1p(2), rtol=1e-6)
    # Item 11 at user 2's time (day 8.5): its only event (day 1) is 7.5 days older.
    np.testing.assert_allclose(col["ui_pop_7d_at_user"][2], 0.0, atol=1e-7)
    np.testing.assert_allclose(col["ui_item_age_at_user"][[0, 2]], [0.5, 7.5], rtol=1e-5)
    assert np.all(col["ui_seen_weight"][:3] == 0)


def test_label_events_moved_into_the_feature_window_are_detected():
    log, _ = _log()
    split = temporal_split(log, test=0.34)
    features, labels = split.train, split.test
    check_no_leakage(features, labels)
    # Shuffle label events into the feature window: the features then read past a cutoff.
    for j in range(labels.height):
        leaked = pl.concat([features, labels.slice(j, 1)])
        with pytest.raises(LeakageError, match=r"label cutoff|label events are in the feature"):
            check_no_leakage(leaked, labels)
    # Any event of a user after the user's cutoff, label or not, is refused.
    later = features.head(1).with_columns(pl.lit(int(T0 + 20 * DAY), pl.Int64).alias("timestamp"))
    with pytest.raises(LeakageError, match="after the label cutoff for 1 of 3 users"):
        check_no_leakage(pl.concat([features, later]), labels)
    # Without timestamps (or with random labels) the guard compares (user, item) pairs.
    untimed = features.with_columns(pl.lit(None, pl.Int64).alias("timestamp"))
    check_no_leakage(untimed, labels)
    with pytest.raises(LeakageError, match="1 of 3 label events are in the feature window"):
        check_no_leakage(pl.concat([untimed, labels.head(1)]), labels, by_time=False)


def _ranker_params(**extra: object) -> dict[str, object]:
    return {
        "retrievers": {"itemknn": 20, "popularity": 20},
        "min_child_samples": 10,
        "snapshots": 2,
        "show_progress": False,
        **extra,
    }


@pytest.fixture(scope="module")
def timed_data() -> InteractionData:
    return InteractionData.from_frame(
        planted_clusters(n_users=150, n_items=45, per_user=12, noise=0.1, seed=3)
    )


def test_chunk_size_changes_memory_not_the_model(timed_data):
    small = create_model("ranker", _ranker_params(chunk_size=7)).fit(timed_data)
    whole = create_model("ranker", _ranker_params(chunk_size=100_000)).fit(timed_data)
    assert small.model_texts_ == whole.model_texts_
    users = timed_data.users.to_list()[:30]
    a, b = small.recommend(users, 10), whole.recommend(users, 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert small.info_["label_users"] == len(timed_data.users)
    recall = small.info_["candidate_recall"]
    assert recall["union"] >= max(v for k, v in recall.items() if k != "union")


def test_candidate_recall_of_the_union_bounds_each_retriever(timed_data):
    split = temporal_split(timed_data.events, test=0.2)
    train = InteractionData.from_frame(split.train)
    ranker = create_model("ranker", _ranker_params(snapshots=1)).fit(train)
    table = ranker.candidate_recall(split.test, ns=(5, 20))
    assert set(table) == {"itemknn", "popularity", "union"}
    for n in (5, 20):
        assert table["union"][n] >= max(table["itemknn"][n], table["popularity"][n])
    assert table["itemknn"][20] >= table["itemknn"][5]
    assert 0 < table["union"][20] <= 1


def test_pipeline_drops_absent_retrievers_and_follows_the_split():
    cfg = PipelineConfig.model_validate(
        {
            "split": {"method": "temporal"},
            "models": {
                "itemknn": {},
                "two_tower": {"enabled": False},
                "ranked": {"model": "ranker", "retrievers": {"itemknn": 10, "two_tower": 10}},
            },
        }
    )
    specs = runnable_models(cfg, None)
    assert specs["ranked"].params["retrievers"] == {"itemknn": 10}
    assert specs["ranked"].params["labels"] == "latest"
    random = cfg.model_copy(update={"split": cfg.split.model_copy(update={"method": "random"})})
    assert runnable_models(random, None)["ranked"].params["labels"] == "random"
    only_off = cfg.model_copy(
        update={
            "models": {
                **cfg.models,
                "ranked": cfg.models["ranked"].model_copy(
                    update={"params": {"retrievers": {"two_tower": 10}}}
                ),
            }
        }
    )
    assert "ranked" not in runnable_models(only_off, None)


def test_the_boosters_are_averaged_and_a_one_booster_bundle_loads(timed_data, tmp_path):
    ranker = create_model("ranker", _ranker_params(boosters=3)).fit(timed_data)
    assert len(ranker.model_texts_) == len(ranker.info_["rounds"]) == 3
    assert len(set(ranker.model_texts_)) == 3  # each its own held-out users and seed
    assert sum(ranker.feature_importance().values()) == pytest.approx(1.0, abs=1e-4)
    users = timed_data.users.index(timed_data.users.to_list()[:20])
    hist = timed_data.matrix[users].astype(np.float32)
    fold = np.zeros(users.size, bool)
    cands, x, _ = ranker._candidate_features(users, hist, fold, exclude_seen=True)
    _, scores = ranker._ranked(users, hist, fold, exclude_seen=True)
    each = [lgb.Booster(model_str=t).predict(x) for t in ranker.model_texts_]
    expected = np.mean(each, axis=0).reshape(cands.shape)
    ok = cands >= 0
    np.testing.assert_allclose(scores[ok], expected[ok], rtol=1e-5, atol=1e-6)
    assert not np.allclose(each[0], each[1])
    loaded = Recommender.load(ranker.save(tmp_path / "ranker.joblib"))
    some = timed_data.users.to_list()[:20]
    np.testing.assert_allclose(loaded.recommend(some, 5).scores, ranker.recommend(some, 5).scores)
    # A bundle from before several boosters holds one model text: that booster answers.
    state = ranker.export_state()
    state["state"]["model_text"] = state["state"].pop("model_texts")[1]
    old = Recommender.from_state(state, ranker.users_, ranker.items_, ranker.user_items_)
    assert isinstance(old, Ranker) and old.model_texts_ == [ranker.model_texts_[1]]
    _, old_scores = old._ranked(users, hist, fold, exclude_seen=True)
    np.testing.assert_allclose(old_scores[ok], each[1].reshape(cands.shape)[ok], rtol=1e-5)
