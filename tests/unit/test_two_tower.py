"""The two-tower model: learning, determinism, cold users and items, bundles, CLI and API.

The data is the planted-cluster pattern with features that carry it: each item's genre is
its cluster, and each user's ``segment`` attribute is theirs. Users 5001-5030 have
attributes and no interaction at all.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from starlette.testclient import TestClient
from typer.testing import CliRunner

from hybridrec.bundle import Bundle, ModelStore, write_bundle
from hybridrec.cli import app
from hybridrec.config import Settings
from hybridrec.data.dataset import InteractionData
from hybridrec.data.split import random_split
from hybridrec.data.synthetic import planted_clusters
from hybridrec.errors import DataError
from hybridrec.evaluation.evaluator import Evaluator
from hybridrec.models import Recommender, create_model
from hybridrec.models.two_tower import (
    _COLD_MAX,
    _PRIOR_GRID,
    TwoTower,
    _earliest_order,
    _recency_order,
    _time_columns,
    _training_windows,
)
from hybridrec.serving.app import create_app

GENRES = ("Space", "Romance", "Horror")
N_USERS, N_ITEMS, CLUSTERS = 240, 60, 3
NEW_USERS = list(range(5001, 5031))
FAST = {"epochs": 12, "show_progress": False, "seed": 7, "tower_dims": [64], "min_epochs": 12}


def cluster_of_item(ids: np.ndarray) -> np.ndarray:
    return (np.asarray(ids, dtype=np.int64) - 1000) % CLUSTERS


def cluster_of_user(uid: int) -> int:
    return (uid - 1) % CLUSTERS if uid < 5000 else uid % CLUSTERS


def catalog(item_ids: list[int]) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"{GENRES[cluster_of_item(np.asarray([i]))[0]]} film {i}" for i in item_ids],
            "categories": [[GENRES[int(cluster_of_item(np.asarray([i]))[0])]] for i in item_ids],
            "year": rng.integers(1970, 2020, len(item_ids)),
        }
    )


def users_table(user_ids: list[int]) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    return pl.DataFrame(
        {
            "user_id": user_ids,
            "segment": [f"s{cluster_of_user(u)}" for u in user_ids],
            "age": rng.integers(18, 70, len(user_ids)).astype(np.float64),
        }
    )


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return planted_clusters(
        n_users=N_USERS, n_items=N_ITEMS, n_clusters=CLUSTERS, per_user=10, seed=3
    )


def featured(df: pl.DataFrame) -> InteractionData:
    items = sorted(set(df["item_id"].to_list()))
    users = sorted(set(df["user_id"].to_list())) + NEW_USERS
    return InteractionData.from_frame(
        df, items_table=catalog(items), users_table=users_table(users)
    )


@pytest.fixture(scope="module")
def data(events: pl.DataFrame) -> InteractionData:
    return featured(events)


@pytest.fixture(scope="module")
def model(data: InteractionData) -> TwoTower:
    fitted = create_model("two_tower", FAST).fit(data)
    assert isinstance(fitted, TwoTower)
    return fitted


def own_share(recs, cluster) -> float:
    shares = [(cluster_of_item(items) == cluster(uid)).mean() for uid, items, _ in recs]
    return float(np.mean(shares))


def test_beats_popularity_on_held_out_interactions(events: pl.DataFrame) -> None:
    split = random_split(events, valid=0.0, test=0.2, seed=0)
    train = featured(split.train)
    ev = Evaluator(train, split.test)
    tower = create_model("two_tower", FAST).fit(train)
    pop = create_model("popularity").fit(train)
    got = ev.evaluate(tower).metrics["ndcg@10"]
    base = ev.evaluate(pop).metrics["ndcg@10"]
    assert got > 1.3 * base, f"two_tower {got:.3f} vs popularity {base:.3f}"
    assert tower.train_log_ and all(np.isfinite(e["loss"]) for e in tower.train_log_)


def test_known_users_get_their_cluster(model: TwoTower, data: InteractionData) -> None:
    users = [u for u in data.users.to_list() if u < 5000]
    assert own_share(model.recommend(users, 5), cluster_of_user) >= 0.9


def test_same_seed_same_model(data: InteractionData, model: TwoTower) -> None:
    again = create_model("two_tower", FAST).fit(data)
    np.testing.assert_allclose(again.item_vectors_, model.item_vectors_, atol=1e-4)
    losses = [e["loss"] for e in model.train_log_]
    np.testing.assert_allclose([e["loss"] for e in again.train_log_], losses, rtol=1e-4)


def test_new_user_with_item_ids_is_folded_in(model: TwoTower) -> None:
    history = {
        90_000 + c: [i for i in range(1000, 1000 + N_ITEMS) if (i - 1000) % CLUSTERS == c][:5]
        for c in range(CLUSTERS)
    }
    recs = model.recommend(list(history), 5, history=history)
    assert all(items.size == 5 for _, items, _ in recs)
    assert own_share(recs, lambda u: u - 90_000) >= 0.8


def test_attribute_only_users_get_personalized_results(model: TwoTower) -> None:
    # Users of the attributes table with no interaction: answered from attributes alone.
    recs = model.recommend(NEW_USERS, 5)
    assert all(items.size == 5 for _, items, _ in recs)
    assert own_share(recs, cluster_of_user) >= 0.7
    # And users who signed up after training, added without retraining.
    late = [7002, 7003, 7004]  # segments s1, s2, s0 (uid % 3... by cluster_of_user)
    added = users_table(late)
    assert model.add_users(added) == 3
    assert model.add_users(added) == 0
    recs = model.recommend(late, 5)
    assert all(items.size == 5 for _, items, _ in recs)
    assert own_share(recs, cluster_of_user) >= 0.6
    vectors = model.user_vectors(late)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_visitors_are_answered_from_request_attributes_without_changing_the_model(
    model: TwoTower,
) -> None:
    assert model.reads_user_attributes
    assert model.user_attribute_columns() == ["segment", "age"]
    before = (len(model.users_), model.user_vectors_.copy())
    visitors = [8000, 8001, 8002]  # segments s2, s0, s1 (uid % 3)
    view = model.with_visitors(users_table(visitors))
    recs = view.recommend(visitors, 5)
    assert all(items.size == 5 for _, items, _ in recs)
    assert own_share(recs, cluster_of_user) >= 0.6
    # The same vectors as users registered for good (add_users on a copy of the model).
    registered = copy.deepcopy(model)
    registered.add_users(users_table(visitors))
    np.testing.assert_allclose(
        view.user_vectors(visitors), registered.user_vectors(visitors), atol=1e-5
    )
    # A visitor with only one of the columns, and one with a few items as well.
    partial = model.with_visitors(pl.DataFrame({"user_id": [8003], "segment": ["s0"]}))
    assert own_share(partial.recommend([8003], 5), lambda _: 0) >= 0.6
    space = [i for i in range(1000, 1000 + N_ITEMS) if (i - 1000) % CLUSTERS == 0][:3]
    mixed = model.with_visitors(users_table([8004])).recommend([8004], 5, history={8004: space})
    assert not set(mixed.row(0)[0].tolist()) & set(space)  # what they have is not offered
    # The model itself is untouched.
    assert len(model.users_) == before[0]
    np.testing.assert_array_equal(model.user_vectors_, before[1])
    # Visitor ids need not be of the training ids' type: they only name the request's rows.
    named = model.with_visitors(pl.DataFrame({"user_id": ["visitor:1"], "segment": ["s1"]}))
    assert own_share(named.recommend(["visitor:1"], 5), lambda _: 1) >= 0.6
    with pytest.raises(DataError, match="user_id"):
        model.with_visitors(pl.DataFrame({"segment": ["s0"]}))


def test_new_item_gets_a_vector_from_its_features(model: TwoTower, tmp_path: Path) -> None:
    model = Recommender.load(model.save(tmp_path / "copy.joblib"))  # the fixture stays as is
    assert isinstance(model, TwoTower)
    new_ids = [2000, 2001, 2002]
    table = pl.DataFrame(
        {
            "item_id": new_ids,
            "title": ["Space film new", "Romance film new", "Horror film new"],
            "categories": [["Space"], ["Romance"], ["Horror"]],
            "year": [2021, 2022, 2023],
        }
    )
    assert model.add_items(table) == 3
    assert all(i in model.items_ for i in new_ids)
    vectors = model.item_vectors_[model.items_.index(new_ids)]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = model.similar_items(new_ids, k=5)
    for c, (_, neighbours, _) in enumerate(sims):
        old = neighbours[neighbours < 2000]
        assert (cluster_of_item(old) == c).mean() >= 0.6, f"genre {GENRES[c]}: {neighbours}"


def test_als_initialized_variant_reads_als_item_factors(
    data: InteractionData, model: TwoTower, tmp_path: Path
) -> None:
    tower = create_model("two_tower", {**FAST, "als_factors": 8}).fit(data)
    assert isinstance(tower, TwoTower)
    plain_width = model.item_text_.shape[1]
    assert tower.item_text_.shape[1] == plain_width + 8 == tower.arch_["text"]
    # The extra columns are ALS item factors (unit rows): items of a cluster point alike.
    cf = tower.item_text_[:, plain_width:]
    np.testing.assert_allclose(np.linalg.norm(cf, axis=1), 1.0, atol=1e-4)
    same = cluster_of_item(tower.items_.ids)[:, None] == cluster_of_item(tower.items_.ids)
    cos = cf @ cf.T
    off = ~np.eye(len(cf), dtype=bool)
    assert cos[same & off].mean() > cos[~same].mean() + 0.3
    users = [u for u in data.users.to_list() if u < 5000]
    assert own_share(tower.recommend(users, 5), cluster_of_user) >= 0.9
    loaded = Recommender.load(tower.save(tmp_path / "als-tower.joblib"))
    assert isinstance(loaded, TwoTower) and loaded.cf_dim_ == 8
    np.testing.assert_array_equal(
        loaded.recommend(users[:20], 5).items, tower.recommend(users[:20], 5).items
    )
    # A new catalog item has no ALS factors: zeros there, a vector from its features.
    new = pl.DataFrame(
        {
            "item_id": [2100],
            "title": ["Horror film new"],
            "categories": [["Horror"]],
            "year": [2024],
        }
    )
    assert loaded.add_items(new) == 1
    row = loaded.items_.index([2100])[0]
    assert not loaded.item_text_[row, plain_width:].any()
    assert np.isfinite(loaded.item_vectors_[row]).all()


def test_items_without_interactions_rank_by_their_features(
    events: pl.DataFrame, tmp_path: Path
) -> None:
    # The cold-item protocol in miniature: the second most popular item of each cluster
    # loses every interaction; its catalog row (its genre) stays.
    cold = [1003, 1004, 1005]
    train = events.filter(~pl.col("item_id").is_in(cold))
    data = InteractionData.from_frame(train, items_table=catalog(list(range(1000, 1060))))
    tower = create_model("two_tower", FAST).fit(data)
    assert isinstance(tower, TwoTower)
    liked = events.filter(pl.col("item_id").is_in(cold))
    recs = tower.recommend(liked["user_id"].to_list(), 5)
    found = [iid in items for (_, items, _), iid in zip(recs, liked["item_id"], strict=True)]
    # Before the popularity prior they came last (their log count lay below every trained
    # one): about 2% of these pairs were in the top 5.
    assert np.mean(found) >= 0.6, f"{np.mean(found):.2f} of the cold pairs in the top 5"
    # Their popularity input lies in the trained range, and so does that of an item added
    # after loading the model (the prior is stored with it).
    pop = tower.item_numeric_[:, -1]
    counts = np.bincount(tower.user_items_.indices, minlength=len(tower.items_))
    low, high = pop[counts > 0].min(), pop[counts > 0].max()
    assert np.all((pop[counts == 0] >= low) & (pop[counts == 0] <= high))
    loaded = Recommender.load(tower.save(tmp_path / "tt.joblib"))
    assert isinstance(loaded, TwoTower)
    twin = data.items_table.filter(pl.col("item_id") == 1003).with_columns(item_id=pl.lit(2003))
    assert loaded.add_items(twin) == 1
    added = loaded.item_numeric_[loaded.items_.index([2003]), -1]
    assert low <= added[0] <= high
    np.testing.assert_allclose(added, pop[tower.items_.index([1003])], atol=1e-5)


def test_the_user_tower_sees_the_history_length(model: TwoTower) -> None:
    # Mean pooling gives one item and the same item twice the same input; only the length
    # input tells a one-item user (weak evidence) from a longer history.
    a = int(model.items_.index([1000])[0])
    hist = np.asarray([[a, -1], [a, a]], np.int64)
    vectors = model._users_from_windows(
        model._net(), np.asarray([-1, -1]), hist, model.item_vectors_
    )
    assert np.linalg.norm(vectors[0] - vectors[1]) > 1e-3


def test_time_columns_are_hat_functions_on_evenly_spaced_knots() -> None:
    cols = _time_columns(np.asarray([0.0, 0.5, 1.0, 0.25, -3.0, 7.0]), 5)
    assert cols.shape == (6, 5)
    np.testing.assert_allclose(cols.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(cols[0], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(cols[1], [0, 0, 1, 0, 0])
    np.testing.assert_allclose(cols[3], [0, 1, 0, 0, 0])
    # Outside the training range: clipped to the first / last knot.
    np.testing.assert_allclose(cols[4], cols[0])
    np.testing.assert_allclose(cols[5], [0, 0, 0, 0, 1])
    np.testing.assert_allclose(_time_columns(np.asarray([0.125]), 5)[0], [0.5, 0.5, 0, 0, 0])


def two_eras() -> pl.DataFrame:
    """Users 1-100 came in 2000 and took items 0-29; users 101-200 came in 2020, 30-59."""
    rng = np.random.default_rng(5)
    rows = []
    for u in range(1, 201):
        late = u > 100
        start = 1_577_836_800 if late else 946_684_800
        for n, i in enumerate(rng.choice(30, size=8, replace=False) + (30 if late else 0)):
            rows.append((u, int(i), 1.0, start + int(rng.integers(0, 86_400)) + n))
    return pl.DataFrame(
        rows, schema=["user_id", "item_id", "weight", "timestamp"], orient="row"
    ).with_columns(pl.lit("interaction").alias("event_type"))


def test_the_time_input_answers_a_newcomer_with_what_is_wanted_now(tmp_path: Path) -> None:
    df = two_eras()
    data = InteractionData.from_frame(df)
    params = {**FAST, "time_knots": 4, "history_dropout": 0.5}
    tower = create_model("two_tower", params).fit(data)
    assert isinstance(tower, TwoTower) and tower.arch_["time_knots"] == 4
    assert tower.user_time_ is not None
    early, late = tower.users_.index([1, 150])
    assert tower.user_time_[early] < 0.01 and tower.user_time_[late] > 0.99
    # With no history items, only the time tells two users apart: each era's items.
    empty = np.full((2, 4), -1, np.int64)
    for m in (tower, Recommender.load(tower.save(tmp_path / "tt.joblib"))):
        assert isinstance(m, TwoTower)
        vectors = m._users_from_windows(m._net(), np.asarray([early, late]), empty, m.item_vectors_)
        top = np.argsort(-(vectors @ m.item_vectors_.T), axis=1)[:, :10]
        assert (m.items_.ids[top[0]] < 30).sum() >= 8, m.items_.ids[top[0]]
        assert (m.items_.ids[top[1]] >= 30).sum() >= 8, m.items_.ids[top[1]]
        # A newcomer without history or attributes is at the latest training time.
        got = m.with_visitors(pl.DataFrame({"user_id": [99_999]})).recommend([99_999], 10)
        assert (got.indices >= 0).all()
        assert (m.items_.ids[got.indices[0]] >= 30).sum() >= 8
        # A user added without retraining is there too, and old users keep their time.
        assert m.add_users(pl.DataFrame({"user_id": [77_777]})) == 1
        got = m.recommend([77_777, 1], 10)
        assert (m.items_.ids[got.indices[0]] >= 30).sum() >= 8
        assert m.user_time_ is not None and m.user_time_[m.users_.index([1])[0]] < 0.01
    # Without timestamps the input is off (nothing to encode), and the model still fits.
    untimed = InteractionData.from_frame(df.with_columns(pl.lit(None).alias("timestamp")))
    off = create_model("two_tower", {**params, "epochs": 1, "min_epochs": 1}).fit(untimed)
    assert isinstance(off, TwoTower) and off.arch_["time_knots"] == 0 and off.user_time_ is None


def test_time_knots_of_one_are_refused() -> None:
    with pytest.raises(ValueError, match="time_knots"):
        TwoTower.Config(time_knots=1)


def test_cut_training_rows_keep_zero_to_four_items() -> None:
    # 400 users with 50 ordered items each; every row is cut, half the items dropped.
    indptr = np.arange(0, 401 * 50, 50, dtype=np.int64)
    order = (indptr, np.tile(np.arange(50, dtype=np.int64), 400))
    config = TwoTower.Config(history_dropout=1.0, history_item_dropout=0.5, history_length=20)
    users = np.arange(400, dtype=np.int64)
    hist = _training_windows(order, users, np.full(400, 49), config, np.random.default_rng(0))
    kept = (hist >= 0).sum(axis=1)
    assert hist.shape == (400, 20) and kept.max() <= 4
    # 0-4 drawn uniformly: 2 on average (the dropout applied after the cut left about 1).
    assert 1.7 <= kept.mean() <= 2.3, kept.mean()


def test_earliest_order_reverses_time_and_needs_timestamps() -> None:
    df = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2],
            "item_id": [10, 11, 12, 10, 12],
            "weight": [1.0] * 5,
            "timestamp": [30, 10, 20, 5, 1],
        }
    )
    data = InteractionData.from_frame(df)
    order = _recency_order(data)
    indptr, items = _earliest_order(data, order)  # type: ignore[misc]
    ids = data.items.ids
    assert ids[items[indptr[0] : indptr[1]]].tolist() == [11, 12, 10]
    assert ids[items[indptr[1] : indptr[2]]].tolist() == [12, 10]
    untimed = InteractionData.from_frame(df.with_columns(pl.lit(None).alias("timestamp")))
    assert _earliest_order(untimed, _recency_order(untimed)) is None


def cold_rows(target: int, first: bool) -> np.ndarray:
    """Every row cut (``earliest``): 400 users whose 50 items came in the order 0, 1, ..."""
    indptr = np.arange(0, 401 * 50, 50, dtype=np.int64)
    recent = (indptr, np.tile(np.arange(49, -1, -1, dtype=np.int64), 400))
    earliest = (indptr, np.tile(np.arange(50, dtype=np.int64), 400))
    config = TwoTower.Config(
        history_dropout=1.0, history_item_dropout=0.5, history_length=20, cold_history="earliest"
    )
    users = np.arange(400, dtype=np.int64)
    targets = np.full(400, target)
    rng = np.random.default_rng(0)
    return _training_windows(recent, users, targets, config, rng, first=earliest if first else None)


def test_earliest_cut_keeps_the_users_first_items_before_the_target() -> None:
    # A late target: each row holds the user's first 0-4 items (no dropout among them).
    hist = cold_rows(45, first=True)
    kept = (hist >= 0).sum(axis=1)
    for row, n in zip(hist, kept, strict=True):
        assert row[:n].tolist() == list(range(n)) and (row[n:] < 0).all()
    assert kept.max() == 4 and 1.7 <= kept.mean() <= 2.3, kept.mean()
    # The user's third item as the target: only the two before it can be the history.
    early = cold_rows(2, first=True)
    kept = (early >= 0).sum(axis=1)
    assert kept.max() == 2
    assert all(row[:n].tolist() == list(range(n)) for row, n in zip(early, kept, strict=True))


def test_earliest_cut_without_timestamps_keeps_random_items() -> None:
    hist = cold_rows(45, first=False)
    kept = hist[hist >= 0]
    assert (hist >= 0).sum(axis=1).max() <= 4 and 45 not in kept
    # Any item of the window (the 20 most recent but the target), not only the first 4.
    assert set(np.unique(kept).tolist()) == set(range(29, 50)) - {45}


def test_fits_with_earliest_cold_rows(data: InteractionData) -> None:
    params = {**FAST, "cold_history": "earliest", "history_dropout": 0.5, "epochs": 2}
    tower = create_model("two_tower", {**params, "min_epochs": 1}).fit(data)
    assert tower.train_log_ and all(np.isfinite(e["loss"]) for e in tower.train_log_)
    assert all(items.size == 5 for _, items, _ in tower.recommend([1, 2], 5))


def test_round_trips_through_a_bundle_and_a_file(
    model: TwoTower, data: InteractionData, tmp_path: Path
) -> None:
    users = [1, 2, 3, NEW_USERS[0]]
    history = {99_999: [1000, 1003, 1006]}
    want = model.recommend(users, 8)
    want_fold = model.recommend([99_999], 8, history=history)
    root = tmp_path / "models"
    pop = create_model("popularity").fit(data)
    ModelStore(root).write_version(
        lambda path: {
            **write_bundle(path, {"popularity": pop, "two_tower": model}),
            "default_model": "two_tower",
        }
    )
    reopened = Bundle.open(root / ModelStore(root).current())
    loaded_file = Recommender.load(model.save(tmp_path / "tt.joblib"))
    for loaded in (reopened.model("two_tower"), loaded_file):
        got = loaded.recommend(users, 8)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        fold = loaded.recommend([99_999], 8, history=history)
        np.testing.assert_array_equal(fold.indices, want_fold.indices)
        np.testing.assert_allclose(fold.scores, want_fold.scores, atol=1e-5)


# ---- the popularity prior ----------------------------------------------------------------

PRIORED = {**FAST, "popularity_prior": 0.5, "cold_popularity_prior": 1.5}


@pytest.fixture(scope="module")
def priored(data: InteractionData) -> TwoTower:
    """The fixture's model with fixed prior weights, behind an approximate (HNSW) index."""
    fitted = create_model("two_tower", {**PRIORED, "index": "hnsw"}).fit(data)
    assert isinstance(fitted, TwoTower) and fitted.index_ is not None
    return fitted


def exact(model: TwoTower) -> TwoTower:
    """A copy of ``model`` that scores by exact products (no vector index)."""
    twin = copy.copy(model)
    twin.index_ = None
    return twin


def cosines(model: TwoTower, users: list[int]) -> np.ndarray:
    idx = model.users_.index(users)
    return model.user_vectors_[idx] @ model.item_vectors_.T


def known(model: TwoTower, users: list[int]) -> np.ndarray:
    """`_score` of known users (no new history)."""
    idx = model.users_.index(users)
    rows = model.user_items_[idx]
    return model._score(idx, rows, np.zeros(idx.size, bool))


AUTO = {"popularity_prior": "auto", "cold_popularity_prior": "auto"}


def test_a_zero_prior_scores_the_plain_cosines(data: InteractionData, model: TwoTower) -> None:
    off = model  # the default: off
    assert off.popularity_prior_ == off.cold_popularity_prior_ == 0.0
    # The prior is chosen after training: "auto" trains the same towers.
    auto = create_model("two_tower", {**FAST, **AUTO}).fit(data)
    assert isinstance(auto, TwoTower)
    np.testing.assert_array_equal(auto.item_vectors_, off.item_vectors_)
    users = [1, 2, 3, NEW_USERS[0]]  # warm users and one with no history (cold)
    np.testing.assert_array_equal(known(off, users), cosines(off, users))
    recs = off.recommend(users, 5)
    want = cosines(off, users)
    np.testing.assert_array_equal(recs.scores, np.take_along_axis(want, recs.indices, axis=1))


def test_auto_chooses_grid_weights_on_the_holdout_and_scores_with_them(
    data: InteractionData, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="hybridrec.models.two_tower"):
        tower = create_model("two_tower", {**FAST, **AUTO, "epochs": 3, "min_epochs": 1}).fit(data)
    assert isinstance(tower, TwoTower)
    assert tower.popularity_prior_ in _PRIOR_GRID and tower.cold_popularity_prior_ in _PRIOR_GRID
    # Each weight is the best of its NDCG@10 row on the holdout (warm users, then cold).
    # (A lone mapping argument of a log call becomes the record's args.)
    tables = [r.args for r in caplog.records if isinstance(r.args, dict)]
    assert len(tables) == 2 and all(list(t) == list(_PRIOR_GRID) for t in tables)
    chosen = (tower.popularity_prior_, tower.cold_popularity_prior_)
    for table, weight in zip(tables, chosen, strict=True):
        assert table[weight] == max(table.values())
    # Scores are the cosines plus temperature x weight x log popularity.
    weight = tower.temperature_ * tower.popularity_prior_
    want = cosines(tower, [1, 2]) + weight * tower.log_pop_
    np.testing.assert_allclose(known(tower, [1, 2]), want, rtol=1e-6, atol=1e-6)
    # Without a holdout "auto" means off.
    blind = create_model("two_tower", {**FAST, **AUTO, "epochs": 1, "validation_users": 0})
    blind = blind.fit(data)
    assert isinstance(blind, TwoTower)
    assert blind.popularity_prior_ == blind.cold_popularity_prior_ == 0.0


def test_log_popularity_is_the_training_count_or_the_features_guess(priored: TwoTower) -> None:
    counts = np.bincount(priored.user_items_.indices, minlength=len(priored.items_))
    seen = counts > 0
    np.testing.assert_allclose(priored.log_pop_[seen], np.log1p(counts[seen]), rtol=1e-5)
    assert priored.temperature_ == pytest.approx(FAST.get("temperature", 0.15))


def test_short_histories_get_the_cold_weight(priored: TwoTower) -> None:
    model = exact(priored)
    tau, pop = model.temperature_, model.log_pop_
    # Known users with ten items: the warm weight; an attribute-only user: the cold one.
    np.testing.assert_allclose(
        known(model, [1, 2]), cosines(model, [1, 2]) + tau * 0.5 * pop, rtol=1e-6, atol=1e-6
    )
    uid = [NEW_USERS[0]]
    np.testing.assert_allclose(
        known(model, uid), cosines(model, uid) + tau * 1.5 * pop, rtol=1e-6, atol=1e-6
    )
    # Folded-in users: by the number of items their vector was built from.
    space = [i for i in range(1000, 1000 + N_ITEMS) if (i - 1000) % CLUSTERS == 0]
    for n, weight in ((_COLD_MAX, 1.5), (_COLD_MAX + 1, 0.5)):
        items = model.items_.index(space[:n])
        history = sp.csr_matrix(
            (np.ones(n, np.float32), (np.zeros(n), items)), shape=(1, len(model.items_))
        )
        users = np.asarray([-1])
        vector, built_from = model._fold_in(users, history)
        assert built_from.tolist() == [n]
        got = model._score(users, history, np.ones(1, bool))
        np.testing.assert_allclose(
            got, vector @ model.item_vectors_.T + tau * weight * pop, rtol=1e-6, atol=1e-6
        )


def test_the_approximate_index_ranks_as_exact_search_with_the_prior(
    priored: TwoTower,
) -> None:
    # Two more columns: the log popularity, and one that gives every row the same norm
    # (a graph index over inner products needs that).
    assert priored.index_.dim == priored.item_vectors_.shape[1] + 2
    norms = np.linalg.norm(priored._index_vectors(), axis=1)
    np.testing.assert_allclose(norms, norms[0], rtol=1e-5)
    assert priored.ann_recall("hnsw", 20) >= 0.98
    plain = exact(priored)
    users = [u for u in priored.users_.to_list() if u < 5000][:100] + NEW_USERS[:10]
    history = {90_000: [1000, 1003, 1006], 90_001: list(range(1001, 1031, 3))}
    asks = [(users, None), (list(history), history)]
    for ids, hist in asks:
        found = priored.recommend(ids, 10, history=hist)
        got, want = found.indices, plain.recommend(ids, 10, history=hist).indices
        overlap = np.mean([np.intersect1d(g, w).size / 10 for g, w in zip(got, want, strict=True)])
        assert overlap >= 0.95, overlap
        # The index's inner products are the exact scores, prior included.
        scores = plain.recommend(ids, len(plain.items_), history=hist)
        for g, s, row, vals in zip(got, found.scores, scores.indices, scores.scores, strict=True):
            exact_of = dict(zip(row.tolist(), vals.tolist(), strict=True))
            np.testing.assert_allclose(s, [exact_of[i] for i in g.tolist()], atol=1e-4)
    # Item-item similarity stays the plain cosine, through the same augmented index.
    sims = priored.similar_items([1000, 1001], 10).indices
    want = exact(priored).similar_items([1000, 1001], 10).indices
    assert np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(sims, want, strict=True)]) >= 0.9
    direct = priored.item_vectors_[priored.items_.index([1000])] @ priored.item_vectors_.T
    top = np.argsort(-direct[0])[1:6]
    assert np.intersect1d(top, sims[0][:5]).size >= 4


def test_a_saved_index_loads_as_built_not_trained_or_calibrated_again(
    priored: TwoTower, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hybridrec.index.faiss_index import VectorIndex

    users = [1, 2, 3]
    want = priored.recommend(users, 8)
    path = priored.save(tmp_path / "indexed.joblib")

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the index was built again at load")

    monkeypatch.setattr(VectorIndex, "build", classmethod(refuse))
    monkeypatch.setattr(VectorIndex, "calibrate", refuse)
    loaded = Recommender.load(path)
    assert isinstance(loaded, TwoTower) and loaded.index_ is not None
    assert loaded.index_.kind == "hnsw" and loaded.index_.params == priored.index_.params
    got = loaded.recommend(users, 8)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_the_prior_survives_save_and_load(priored: TwoTower, tmp_path: Path) -> None:
    loaded = Recommender.load(priored.save(tmp_path / "priored.joblib"))
    assert isinstance(loaded, TwoTower)
    assert (loaded.popularity_prior_, loaded.cold_popularity_prior_) == (0.5, 1.5)
    assert loaded.temperature_ == priored.temperature_
    np.testing.assert_array_equal(loaded.log_pop_, priored.log_pop_)
    users = [1, 2, NEW_USERS[0]]
    np.testing.assert_allclose(known(loaded, users), known(priored, users), atol=1e-6)
    # A bundle from before the prior (no such keys): off, its scores the cosines.
    state = priored.export_state()
    for key in ("log_pop", "popularity_prior", "cold_popularity_prior", "temperature"):
        del state["state"][key]
    old = Recommender.from_state(state, priored.users_, priored.items_, priored.user_items_)
    assert isinstance(old, TwoTower)
    assert old.popularity_prior_ == old.cold_popularity_prior_ == 0.0
    np.testing.assert_allclose(known(exact(old), users), cosines(old, users), atol=1e-6)


def test_new_items_get_the_popularity_their_features_predict(priored: TwoTower) -> None:
    model = copy.deepcopy(priored)
    twin = pl.DataFrame(
        {"item_id": [2500], "title": ["Space film new"], "categories": [["Space"]], "year": [2020]}
    )
    assert model.add_items(twin) == 1
    row = model.items_.index([2500])[0]
    counts = np.bincount(priored.user_items_.indices, minlength=len(priored.items_))
    low, high = np.log1p(counts[counts > 0]).min(), np.log1p(counts[counts > 0]).max()
    assert low - 1e-4 <= model.log_pop_[row] <= high + 1e-4
    assert model.index_.dim == model.item_vectors_.shape[1] + 2 and len(model.index_) == 61
    scores = exact(model)._score(np.asarray([0]), model.user_items_[[0]], np.zeros(1, bool))
    want = model.user_vectors_[0] @ model.item_vectors_[row] + (
        model.temperature_ * 0.5 * model.log_pop_[row]
    )
    assert scores[0, row] == pytest.approx(want, abs=1e-5)


STRATEGY = ("--strategy", "two_tower")
NO_EVAL = ("--no-evaluate",)
TRAIN_CONFIG = """
[data]
source = "files"
interactions = "train.csv"
items = "items.csv"
users = "users.csv"

[models.popularity]

[models.two_tower]
epochs = 8
min_epochs = 8
tower_dims = [64]
show_progress = false
seed = 7
"""


@pytest.fixture(scope="module")
def store(events: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store trained through the CLI (popularity and two_tower, with attributes)."""
    root = tmp_path_factory.mktemp("two-tower-store")
    events.select("user_id", "item_id", "timestamp").write_csv(root / "train.csv")
    items = catalog(sorted(set(events["item_id"].to_list())))
    items.with_columns(pl.col("categories").list.join("|")).write_csv(root / "items.csv")
    users = sorted(set(events["user_id"].to_list())) + NEW_USERS
    users_table(users).write_csv(root / "users.csv")
    (root / "tt.toml").write_text(TRAIN_CONFIG, encoding="utf-8")
    model_dir = root / "models"
    result = CliRunner().invoke(
        app,
        ["train", "--config", str(root / "tt.toml"), "--model-dir", str(model_dir), *NO_EVAL],
        env={"HYBRIDREC_MODEL_DIR": None, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    return model_dir


def test_cli_recommends_with_the_two_tower_strategy(store: Path) -> None:
    for user in ("4", str(NEW_USERS[1])):
        result = CliRunner().invoke(
            app,
            ["recommend", "--model-dir", str(store), "--user", user, "-k", "5", *STRATEGY],
            env={"HYBRIDREC_MODEL_DIR": None},
        )
        assert result.exit_code == 0, result.stdout + result.stderr
        rows = pl.read_csv(result.stdout.encode())
        assert rows.height == 5
        assert set(rows["method"].to_list()) == {"two_tower"}, rows


def test_api_recommends_with_the_two_tower_strategy(store: Path, tmp_path: Path) -> None:
    settings = Settings(
        model_dir=store, data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/events.db"
    )
    with TestClient(create_app(settings)) as client:
        body = client.get("/recommend/user/4", params={"strategy": "two_tower", "k": 5}).json()
        assert body["method_used"] == "two_tower", body
        assert len(body["items"]) == 5
        own = [(it["item_id"] - 1000) % CLUSTERS for it in body["items"]]
        assert np.mean(np.asarray(own) == cluster_of_user(4)) >= 0.6
        # A visitor with five item ids the model never saw as a user.
        visit = [i for i in range(1000, 1000 + N_ITEMS) if (i - 1000) % CLUSTERS == 2][:5]
        body = client.post(
            "/recommend", json={"item_ids": visit, "strategy": "two_tower", "k": 5}
        ).json()
        assert body["method_used"] == "two_tower", body
        assert len(body["items"]) == 5
        # A user known only by attributes.
        uid = NEW_USERS[2]
        body = client.get(f"/recommend/user/{uid}", params={"strategy": "two_tower"}).json()
        assert body["method_used"] == "two_tower", body
