"""The `Recommender` contract (see ``hybridrec.models.base``), checked for every registered model.

The suite is parametrized over `model_names()`, so a newly registered model is tested as soon
as it exists. Hyperparameters suited to the tiny planted data set live in `MODEL_PARAMS`; a
model missing from it is built with its defaults. A model that needs more than interactions
(the content model needs an item catalog) gets it from `MODEL_DATA`; every check is the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from hybridrec.data.dataset import InteractionData
from hybridrec.errors import (
    ConfigError,
    DataError,
    HybridrecError,
    NotFittedError,
    UnknownIdError,
)
from hybridrec.models import (
    ItemFilter,
    Recommendations,
    Recommender,
    create_model,
    get_model_class,
    model_names,
)
from hybridrec.models.base import topk_rows

#: Small-data hyperparameters per model name; names not listed use the model's defaults.
MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "als": {"factors": 16, "iterations": 15, "use_gpu": False, "random_state": 0},
    "itemknn": {"neighbors": 20},
    "ease": {"regularization": 10.0},
    "popularity": {},
    "content": {"show_progress": False},
    "two_tower": {"epochs": 15, "min_epochs": 15, "tower_dims": [64], "show_progress": False},
    "hybrid": {
        "components": {"als": 0.5, "itemknn": 0.5},
        "params": {"als": {"factors": 16, "iterations": 15, "use_gpu": False, "random_state": 0}},
    },
    "ranker": {
        "retrievers": {"als": 30, "itemknn": 30, "popularity": 30},
        "params": {"als": {"factors": 16, "iterations": 15, "use_gpu": False, "random_state": 0}},
        "min_child_samples": 20,
        "snapshots": 1,
        "show_progress": False,
    },
    "router": {
        "cold": "itemknn",
        "warm": "als",
        "hot": "ease",
        "cold_below": 5,
        "hot_from": 12,
        "params": {
            "als": {"factors": 16, "iterations": 15, "use_gpu": False, "random_state": 0},
            "ease": {"regularization": 10.0},
        },
    },
}

_CLUSTER_WORDS = (
    ("rocket", "galaxy", "alien", "orbit", "planet", "laser", "starship", "nebula"),
    ("romance", "wedding", "love", "kiss", "heart", "date", "bride", "flirt"),
    ("ghost", "zombie", "haunted", "blood", "scream", "curse", "crypt", "vampire"),
)


def planted_catalog(item_ids: list[int], n_clusters: int = 3, seed: int = 0) -> pl.DataFrame:
    """A catalog whose text carries the planted clusters: each item gets four to six words of
    its cluster's vocabulary (repeated at random, so no two items tie) and a unique word."""
    rng = np.random.default_rng(seed)
    titles, tags = [], []
    for item in item_ids:
        words = _CLUSTER_WORDS[(item - 1000) % n_clusters]
        chosen = rng.choice(len(words), size=int(rng.integers(4, 7)), replace=False)
        titles.append(f"title{item}")
        tags.append(" ".join(words[j] for j in chosen for _ in range(int(rng.integers(1, 4)))))
    return pl.DataFrame({"item_id": item_ids, "title": titles, "tags": tags})


def with_catalog(data: InteractionData) -> InteractionData:
    return dataclasses.replace(data, items_table=planted_catalog(data.items.to_list()))


#: Training data per model name: models not listed train on the interactions alone.
MODEL_DATA: dict[str, Callable[[InteractionData], InteractionData]] = {
    "content": with_catalog,
}


def data_for(name: str, data: InteractionData) -> InteractionData:
    return MODEL_DATA.get(name, lambda d: d)(data)


NAMES = model_names()
UNKNOWN_USER = 999_999
UNKNOWN_ITEM = 424_242


def make(name: str) -> Recommender:
    return create_model(name, dict(MODEL_PARAMS.get(name, {})))


@pytest.fixture(scope="module", params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def fitted(name: str, planted_data: InteractionData) -> Recommender:
    """One fitted model per registered name (shared by the module: never mutate it)."""
    return make(name).fit(data_for(name, planted_data))


def seen_items(data: InteractionData, user_id: int) -> set[int]:
    row = data.matrix[int(data.users.index([user_id])[0])]
    return {int(i) for i in data.items.lookup(row.indices)}


def item_counts(planted: pl.DataFrame) -> dict[int, int]:
    counts = planted.group_by("item_id").len()
    return dict(zip(counts["item_id"].to_list(), counts["len"].to_list(), strict=True))


def most_popular(counts: dict[int, int], k: int, exclude: set[int] = frozenset()) -> list[int]:
    """Top-k item ids by count, ties by smaller id (the items vocabulary order)."""
    ranked = sorted((i for i in counts if i not in exclude), key=lambda i: (-counts[i], i))
    return ranked[:k]


def assert_same(a: Recommendations, b: Recommendations, *, exact: bool = False) -> None:
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.indices, b.indices)
    if exact:
        np.testing.assert_array_equal(a.scores, b.scores)
    else:
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-6)


def some_users(data: InteractionData, n: int = 20) -> list[int]:
    ids = data.users.to_list()
    step = max(1, len(ids) // n)
    return ids[::step][:n]


# ---- 1. the planted pattern -----------------------------------------------------------------


def test_planted_pattern_recovered(fitted, planted_data, planted, planted_spec):
    users = planted_data.users.to_list()
    if fitted.needs_history:
        recs = fitted.recommend(users, k=5)
        own_share = []
        for uid, items, _ in recs:
            assert items.size == 5, f"user {uid}: {items.size} items"
            own = planted_spec.item_cluster(items) == planted_spec.user_cluster(uid)
            own_share.append(own.mean())
        own_share = np.asarray(own_share)
        assert own_share.mean() >= 0.9, f"only {own_share.mean():.1%} own-cluster items"
        assert own_share.min() >= 0.6, f"a user got {own_share.min():.0%} own-cluster items"
    else:
        counts = item_counts(planted)
        recs = fitted.recommend(users, k=5, exclude_seen=False)
        expected = most_popular(counts, 5)
        for uid, items, scores in recs:
            assert items.tolist() == expected, f"user {uid}"
            np.testing.assert_allclose(scores, [counts[i] for i in expected])
        # With exclusion, the most popular items the user has not seen (ties by item id).
        for uid, items, scores in fitted.recommend(users[:30], k=5):
            want = most_popular(counts, 5, exclude=seen_items(planted_data, uid))
            assert items.tolist() == want, f"user {uid}"
            np.testing.assert_allclose(scores, [counts[i] for i in want], err_msg=f"user {uid}")


# ---- 2. batch = single ----------------------------------------------------------------------


def test_batch_equals_single(fitted, planted_data):
    users = some_users(planted_data, 20)
    assert len(users) == 20
    batch = fitted.recommend(users, k=7)
    assert batch.indices.shape == (20, 7)
    for i, uid in enumerate(users):
        one = fitted.recommend([uid], k=7)
        np.testing.assert_array_equal(one.indices[0], batch.indices[i], err_msg=f"user {uid}")
        np.testing.assert_allclose(one.scores[0], batch.scores[i], rtol=1e-6, atol=1e-6)


def test_batch_equals_single_with_history(fitted, planted_data, planted_spec):
    known = some_users(planted_data, 4)
    unknown = [UNKNOWN_USER + c for c in range(3)]
    history: dict[int, Any] = {
        u: planted_spec.items_of_cluster(c)[:3] for c, u in enumerate(unknown)
    }
    history[known[0]] = {planted_spec.items_of_cluster(0)[-1]: 2.0}
    users = [known[0], unknown[0], known[1], unknown[1], known[2], unknown[2], known[3]]
    batch = fitted.recommend(users, k=6, history=history)
    for i, uid in enumerate(users):
        one = fitted.recommend([uid], k=6, history=history)
        np.testing.assert_array_equal(one.indices[0], batch.indices[i], err_msg=f"user {uid}")
        np.testing.assert_allclose(one.scores[0], batch.scores[i], rtol=1e-6, atol=1e-6)


# ---- 3. exclude_seen ------------------------------------------------------------------------


def test_exclude_seen_never_returns_training_items(fitted, planted_data):
    users = planted_data.users.to_list()
    for uid, items, _ in fitted.recommend(users, k=10):
        assert not set(items.tolist()) & seen_items(planted_data, uid), f"user {uid}"
        assert items.size == 10


def test_exclude_seen_false_allows_seen_items(fitted, planted_data):
    users = planted_data.users.to_list()
    recs = fitted.recommend(users, k=10, exclude_seen=False)
    assert all(items.size == 10 for _, items, _ in recs)
    with_seen = sum(
        bool(set(items.tolist()) & seen_items(planted_data, uid)) for uid, items, _ in recs
    )
    assert with_seen > 0, "exclude_seen=False still dropped every seen item"


def test_k_larger_than_catalog_pads_rows(fitted, planted_data):
    n_items = len(planted_data.items)
    users = some_users(planted_data, 5)
    recs = fitted.recommend(users, k=n_items + 40)
    # k is capped at the catalog: a huge k never allocates more than the catalog.
    assert recs.indices.shape == (5, n_items)
    assert fitted.recommend(users[:1], k=10**12).indices.shape == (1, n_items)
    for i, uid in enumerate(users):
        items, scores = recs.row(i)
        assert len(set(items.tolist())) == items.size, "duplicate items in a row"
        assert items.size <= n_items - len(seen_items(planted_data, uid))
        assert np.all(recs.indices[i, items.size :] == -1)
        assert np.all(np.isneginf(recs.scores[i, items.size :]))
        assert np.all(np.isfinite(scores))


# ---- 4. filters -----------------------------------------------------------------------------


def test_allow_filter_keeps_only_allowed(fitted, planted_data, planted_spec):
    allow = [1000 + i for i in range(0, 60, 4)]  # 15 items from every cluster
    users = some_users(planted_data, 20)
    recs = fitted.recommend(users, k=5, filters=ItemFilter(allow=allow))
    for uid, items, _ in recs:
        assert set(items.tolist()) <= set(allow), f"user {uid}"
        assert not set(items.tolist()) & seen_items(planted_data, uid)


def test_deny_filter_drops_denied(fitted, planted_data):
    users = some_users(planted_data, 20)
    plain = fitted.recommend(users, k=5)
    deny = sorted({int(i) for _, items, _ in plain for i in items})
    recs = fitted.recommend(users, k=5, filters=ItemFilter(deny=deny))
    for uid, items, _ in recs:
        assert items.size == 5, f"user {uid}"
        assert not set(items.tolist()) & set(deny), f"user {uid}"


def test_deny_wins_over_allow_and_unknown_filter_ids_are_ignored(
    fitted, planted_data, planted_spec
):
    uid = 1
    unseen = [i for i in planted_spec.items_of_cluster(0) if i not in seen_items(planted_data, uid)]
    allow = [*unseen[:4], UNKNOWN_ITEM]
    recs = fitted.recommend([uid], k=10, filters=ItemFilter(allow=allow, deny=[unseen[0]]))
    items, _ = recs.row(0)
    assert set(items.tolist()) == set(unseen[1:4])


def test_allow_fewer_than_k_pads_row(fitted, planted_data, planted_spec):
    uid = 1
    unseen = [i for i in planted_spec.items_of_cluster(0) if i not in seen_items(planted_data, uid)]
    allow = unseen[:3]
    recs = fitted.recommend([uid], k=5, filters=ItemFilter(allow=allow))
    assert recs.indices.shape == (1, 5)
    assert np.all(recs.indices[0, 3:] == -1)
    assert np.all(np.isneginf(recs.scores[0, 3:]))
    assert np.all(recs.indices[0, :3] >= 0)
    items, scores = recs.row(0)
    assert sorted(items.tolist()) == sorted(allow)
    assert scores.size == 3 and np.all(np.isfinite(scores))
    assert np.all(np.diff(scores) <= 0)


# ---- 5. persistence -------------------------------------------------------------------------


def _similar_or_none(model: Recommender, items: list[int]) -> Recommendations | None:
    try:
        return model.similar_items(items, k=5)
    except HybridrecError as exc:
        if "does not support similar_items" in str(exc):
            return None
        raise


def test_save_load_round_trip(fitted, planted_data, planted_spec, tmp_path: Path):
    path = fitted.save(tmp_path / "sub" / "model.joblib")
    assert path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    users = planted_data.users.to_list()
    items = planted_data.items.to_list()
    history = {UNKNOWN_USER: planted_spec.items_of_cluster(1)[:3], users[0]: {items[-1]: 1.0}}
    want = fitted.recommend(users, k=10)
    want_fold = fitted.recommend([UNKNOWN_USER, users[0]], k=10, history=history)
    want_sim = _similar_or_none(fitted, items)
    for loaded in (type(fitted).load(path), Recommender.load(path)):
        assert type(loaded) is type(fitted)
        assert loaded.config == fitted.config
        assert_same(loaded.recommend(users, k=10), want, exact=True)
        fold = loaded.recommend([UNKNOWN_USER, users[0]], k=10, history=history)
        assert_same(fold, want_fold, exact=True)
        sim = _similar_or_none(loaded, items)
        if want_sim is None:
            assert sim is None
        else:
            assert sim is not None
            assert_same(sim, want_sim, exact=True)


def test_load_missing_file_is_data_error(name, tmp_path: Path):
    with pytest.raises(DataError, match="no saved model"):
        get_model_class(name).load(tmp_path / "absent.joblib")


# ---- 6. unknown users, fold-in, extra history -----------------------------------------------


def test_unknown_user_without_history_raises(fitted):
    with pytest.raises(UnknownIdError) as info:
        fitted.recommend([1, UNKNOWN_USER], k=5)
    assert str(UNKNOWN_USER) in str(info.value)
    assert info.value.ids == [UNKNOWN_USER]
    # History for someone else does not help.
    with pytest.raises(UnknownIdError, match=str(UNKNOWN_USER)):
        fitted.recommend([UNKNOWN_USER], k=5, history={1: [1000]})


def test_unknown_user_with_history_is_folded_in(fitted, planted_spec):
    own = []
    for c in range(planted_spec.n_clusters):
        uid = UNKNOWN_USER + c
        hist = planted_spec.items_of_cluster(c)[:3]
        recs = fitted.recommend([uid], k=5, history={uid: [*hist, UNKNOWN_ITEM]})
        items, scores = recs.row(0)
        assert items.size == 5, f"cluster {c}: empty or short answer"
        assert np.all(np.isfinite(scores))
        assert not set(items.tolist()) & set(hist)
        own.extend((planted_spec.item_cluster(items) == c).tolist())
    if fitted.needs_history:
        assert np.mean(own) >= 0.8, f"only {np.mean(own):.0%} of folded-in items in cluster"


def test_weighted_history_mapping_is_accepted(fitted, planted_spec):
    hist = dict.fromkeys(planted_spec.items_of_cluster(2)[:3], 3.0)
    items, _ = fitted.recommend([UNKNOWN_USER], k=5, history={UNKNOWN_USER: hist}).row(0)
    assert items.size == 5
    assert not set(items.tolist()) & set(hist)


def test_known_user_extra_history_is_excluded(fitted, planted_data):
    uid = planted_data.users.to_list()[5]
    top, _ = fitted.recommend([uid], k=5).row(0)
    new = [int(i) for i in top[:2]]
    for hist in (new, dict.fromkeys(new, 1.0)):
        items, _ = fitted.recommend([uid], k=5, history={uid: hist}).row(0)
        assert items.size == 5
        assert not set(items.tolist()) & set(new)
        assert not set(items.tolist()) & seen_items(planted_data, uid)
    # Without exclusion the call still answers.
    items, _ = fitted.recommend([uid], k=5, history={uid: new}, exclude_seen=False).row(0)
    assert items.size == 5


# ---- 7. empty history -----------------------------------------------------------------------


def test_empty_history(fitted, planted, planted_data):
    recs = fitted.recommend([UNKNOWN_USER], k=5, history={UNKNOWN_USER: []})
    items, _ = recs.row(0)
    if fitted.needs_history:
        assert items.size == 0
        assert np.all(recs.indices == -1) and np.all(np.isneginf(recs.scores))
    else:
        assert items.tolist() == most_popular(item_counts(planted), 5)
    # An empty extra history for a known user leaves the training history in place.
    uid = planted_data.users.to_list()[0]
    items, _ = fitted.recommend([uid], k=5, history={uid: []}).row(0)
    assert items.size == 5
    assert not set(items.tolist()) & seen_items(planted_data, uid)


def test_history_of_only_unknown_items(fitted, planted, planted_data):
    items, _ = fitted.recommend([UNKNOWN_USER], k=5, history={UNKNOWN_USER: [UNKNOWN_ITEM]}).row(0)
    if fitted.needs_history:
        assert items.size == 0
    else:
        assert items.tolist() == most_popular(item_counts(planted), 5)


# ---- 8. similar_items -----------------------------------------------------------------------


def test_similar_items(fitted, planted_data, planted_spec):
    items = planted_data.items.to_list()
    sims = _similar_or_none(fitted, items)
    if sims is None:
        return
    same = []
    for query, neighbours, scores in sims:
        assert neighbours.size == 5
        assert query not in neighbours.tolist()
        assert np.all(np.diff(scores) <= 0)
        same.extend(planted_spec.item_cluster(neighbours[:3]) == planted_spec.item_cluster(query))
    if fitted.needs_history:
        assert np.mean(same) >= 0.9, f"only {np.mean(same):.0%} of similar items in cluster"
    with pytest.raises(UnknownIdError, match=str(UNKNOWN_ITEM)):
        fitted.similar_items([items[0], UNKNOWN_ITEM], k=3)


# ---- 9. configuration errors ----------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -3, 2.5, "5", True, None])
def test_bad_k_is_config_error(fitted, k):
    with pytest.raises(ConfigError, match="k must be"):
        fitted.recommend([1], k=k)
    with pytest.raises(ConfigError, match="k must be"):
        fitted.similar_items([1000], k=k)


def test_numpy_integer_k_is_accepted(fitted):
    assert fitted.recommend([1], k=np.int64(3)).indices.shape == (1, 3)


def test_unknown_config_key_is_config_error(name):
    with pytest.raises(ConfigError, match="bogus_key"):
        create_model(name, {"bogus_key": 1})
    with pytest.raises(ConfigError, match="bogus_key"):
        get_model_class(name)(bogus_key=1)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        create_model("nope")
    assert "nope" in str(info.value)
    for valid in model_names():
        assert valid in str(info.value)


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(UnknownIdError, KeyError)


# ---- 10. not fitted -------------------------------------------------------------------------


def test_not_fitted(name, tmp_path: Path):
    model = make(name)
    with pytest.raises(NotFittedError):
        model.recommend([1], k=5)
    with pytest.raises(NotFittedError):
        model.similar_items([1000], k=5)
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "m.joblib")


def test_fit_returns_self_and_construction_does_no_work(name, planted_data):
    model = make(name)
    assert model.users_ is None and model.items_ is None
    assert model.fit(data_for(name, planted_data)) is model
    assert model.items_ == planted_data.items


def test_fit_does_not_modify_training_data(name, planted):
    data = data_for(name, InteractionData.from_frame(planted))
    before = data.matrix.copy()
    make(name).fit(data)
    np.testing.assert_array_equal(data.matrix.indptr, before.indptr)
    np.testing.assert_array_equal(data.matrix.indices, before.indices)
    np.testing.assert_array_equal(data.matrix.data, before.data)


# ---- 11. frames -----------------------------------------------------------------------------


def test_to_frame(fitted, planted_data, planted_spec):
    users = some_users(planted_data, 30)
    frame = fitted.recommend(users, k=5).to_frame()
    assert frame.columns == ["user_id", "item_id", "rank", "score"]
    assert frame.height == 30 * 5
    assert sorted(set(frame["user_id"].to_list())) == sorted(users)
    for (uid,), group in frame.group_by("user_id"):
        assert group["rank"].to_list() == list(range(1, group.height + 1)), f"user {uid}"
        assert np.all(np.diff(group["score"].to_numpy()) <= 0), f"user {uid}"
    # Padding is dropped and ranks stay contiguous.
    unseen = [i for i in planted_spec.items_of_cluster(0) if i not in seen_items(planted_data, 1)]
    padded = fitted.recommend([1], k=5, filters=ItemFilter(allow=unseen[:2])).to_frame()
    assert padded["rank"].to_list() == [1, 2]
    assert sorted(padded["item_id"].to_list()) == sorted(unseen[:2])


# ---- ties -----------------------------------------------------------------------------------


def test_topk_rows_breaks_ties_by_index():
    scores = np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
    idx, val = topk_rows(scores, 3)
    assert idx.tolist() == [[2, 3, 0]]
    np.testing.assert_array_equal(val, [[1.0, 1.0, 0.0]])


def test_popularity_ties_broken_by_item_id():
    # Item counts 1, 1, 2, 2: the third slot is a tie between items 10 and 11.
    df = pl.DataFrame(
        {
            "user_id": [1, 2, 3, 4, 5, 6],
            "item_id": [10, 11, 12, 12, 13, 13],
            "weight": [1.0] * 6,
            "timestamp": list(range(6)),
            "event_type": ["interaction"] * 6,
        }
    )
    model = create_model("popularity").fit(InteractionData.from_frame(df))
    items, _ = model.recommend([UNKNOWN_USER], k=3, history={UNKNOWN_USER: []}).row(0)
    assert items.tolist() == [12, 13, 10]
