"""Model-specific correctness: EASE's closed form, ALS fold-in, ItemKNN vs implicit, popularity."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from hybridrec.data.dataset import InteractionData
from hybridrec.data.vocab import Vocab
from hybridrec.errors import ConfigError
from hybridrec.models import ALS, EASE, ItemKNN, Popularity

DAY = 86_400
UNKNOWN = 999_999


def frame(rows: list[tuple[int, int, float, int]]) -> pl.DataFrame:
    """Canonical interactions from (user, item, weight, timestamp) tuples."""
    users, items, weights, times = zip(*rows, strict=True)
    return pl.DataFrame(
        {
            "user_id": np.asarray(users, dtype=np.int64),
            "item_id": np.asarray(items, dtype=np.int64),
            "weight": np.asarray(weights, dtype=np.float64),
            "timestamp": np.asarray(times, dtype=np.int64),
            "event_type": ["interaction"] * len(rows),
        }
    )


def matrix_frame(x: np.ndarray) -> pl.DataFrame:
    """Interactions of a dense users × items matrix (user i+1, item 100+j, weight x[i, j])."""
    u, i = np.nonzero(x)
    return frame([(int(a) + 1, int(b) + 100, float(x[a, b]), 0) for a, b in zip(u, i, strict=True)])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---- EASE -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_matrix() -> np.ndarray:
    rng = np.random.default_rng(3)
    x = (rng.random((12, 7)) < 0.45).astype(np.float64)
    x[:, :] += x * rng.integers(0, 3, size=x.shape)  # some weights above 1
    x[0, :] = 1.0  # every item has an interaction
    return x


@pytest.fixture(scope="module")
def wide_matrix() -> np.ndarray:
    """Fewer users than half the items: EASE inverts through the users (Woodbury)."""
    rng = np.random.default_rng(4)
    x = (rng.random((6, 15)) < 0.4).astype(np.float64) * rng.integers(1, 4, size=(6, 15))
    x[np.arange(15) % 6, np.arange(15)] = 1.0  # every item has an interaction
    return x


def naive_ease(x: np.ndarray, lam: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p @ np.diag(1.0 / np.diag(p))
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("shape", ["tall", "wide"])
@pytest.mark.parametrize("lam", [0.5, 10.0])
def test_ease_weights_match_closed_form(tiny_matrix, wide_matrix, shape, lam):
    # Tall: Cholesky on the items x items Gram matrix; wide: through the users (Woodbury).
    x = tiny_matrix if shape == "tall" else wide_matrix
    assert (2 * x.shape[0] <= x.shape[1]) == (shape == "wide")
    data = InteractionData.from_frame(matrix_frame(x))
    model = EASE(regularization=lam, dtype="float64").fit(data)
    want = naive_ease(x, lam)
    np.testing.assert_allclose(model.weights_, want, rtol=1e-5, atol=1e-7)
    assert np.all(np.diag(model.weights_) == 0.0)


@pytest.mark.parametrize("shape", ["tall", "wide"])
def test_ease_float32_close_to_closed_form(tiny_matrix, wide_matrix, shape):
    x = tiny_matrix if shape == "tall" else wide_matrix
    data = InteractionData.from_frame(matrix_frame(x))
    model = EASE(regularization=2.0).fit(data)
    assert model.weights_.dtype == np.float32
    np.testing.assert_allclose(model.weights_, naive_ease(x, 2.0), rtol=1e-3, atol=1e-4)


def test_ease_scores_are_history_times_weights(tiny_matrix):
    data = InteractionData.from_frame(matrix_frame(tiny_matrix))
    model = EASE(regularization=1.0, dtype="float64").fit(data)
    want = tiny_matrix @ naive_ease(tiny_matrix, 1.0)
    n_items = tiny_matrix.shape[1]
    recs = model.recommend(data.users.to_list(), k=n_items, exclude_seen=False)
    for u in range(tiny_matrix.shape[0]):
        np.testing.assert_allclose(recs.scores[u], want[u, recs.indices[u]], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(recs.scores[u], np.sort(want[u])[::-1], rtol=1e-5, atol=1e-6)


def test_ease_models_only_the_most_popular_items_beyond_max_items(tiny_matrix):
    data = InteractionData.from_frame(matrix_frame(tiny_matrix))
    n_items = tiny_matrix.shape[1]
    keep = n_items - 2
    model = EASE(max_items=keep, regularization=1.0, dtype="float64").fit(data)
    assert model.modeled_items == keep
    counts = np.diff(sp.csc_matrix(tiny_matrix).indptr)
    # The modeled columns are the most popular ones (ties broken by column index).
    order = np.lexsort((np.arange(n_items), -counts))
    cols = np.sort(order[:keep])
    assert sorted(data.items.index(cols + 100).tolist()) == model.columns_.tolist()
    # On the modeled columns, the closed form over the sub-matrix; elsewhere no score.
    sub = tiny_matrix[:, cols]
    want = sub @ naive_ease(sub, 1.0)
    recs = model.recommend(data.users.to_list(), k=n_items, exclude_seen=False)
    for u in range(tiny_matrix.shape[0]):
        ids, scores = recs.row(u)
        assert len(ids) == keep
        assert set(ids.tolist()) == set((cols + 100).tolist())
        np.testing.assert_allclose(scores, np.sort(want[u])[::-1], rtol=1e-5, atol=1e-6)
    unmodeled = np.setdiff1d(np.arange(n_items), cols) + 100
    sims = model.similar_items(unmodeled[:1], k=3)
    assert (sims.indices == -1).all()  # an item EASE does not model has no EASE neighbours
    EASE(max_items=n_items).fit(data)  # exactly at the limit: the whole catalog
    with pytest.raises(ConfigError, match="max_items"):
        EASE(max_items=0)


def test_ease_leaves_out_items_nobody_interacted_with(tiny_matrix):
    # A vocabulary extended to the whole catalog (cold-start evaluations): the extra items
    # are not modeled (their B rows and columns would be 0), the others score as before.
    df = matrix_frame(tiny_matrix)
    data = InteractionData.from_frame(df)
    extra = np.arange(900, 905)
    wide = InteractionData.from_frame(
        df, items=Vocab(np.concatenate([data.items.ids, extra]), kind="item")
    )
    narrow = EASE(regularization=1.0, dtype="float64").fit(data)
    model = EASE(regularization=1.0, dtype="float64").fit(wide)
    assert model.modeled_items == tiny_matrix.shape[1]
    np.testing.assert_allclose(model.weights_, narrow.weights_)
    users = data.users.to_list()
    got, want = model.recommend(users, k=5), narrow.recommend(users, k=5)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-9)
    assert not np.isin(wide.items.lookup(got.indices[got.indices >= 0]), extra).any()


# ---- ALS ------------------------------------------------------------------------------------

ALS_PARAMS = {"factors": 16, "iterations": 30, "use_gpu": False, "random_state": 0}


@pytest.fixture(scope="module")
def als(planted_data) -> ALS:
    return ALS(**ALS_PARAMS).fit(planted_data)


def test_als_cpu_training(als):
    from implicit.cpu.als import AlternatingLeastSquares

    assert als.trained_on_gpu_ is False
    assert isinstance(als.model_, AlternatingLeastSquares)
    n_users, n_items = als.user_items_.shape
    assert als.user_factors_.shape == (n_users, 16)
    assert als.item_factors_.shape == (n_items, 16)
    assert als.user_factors_.dtype == np.float32


def test_als_scores_are_factor_products(als, planted_data):
    users = planted_data.users.to_list()[:40]
    n_items = len(planted_data.items)
    full = als.user_factors_[:40] @ als.item_factors_.T
    recs = als.recommend(users, k=n_items, exclude_seen=False)
    for u in range(40):
        np.testing.assert_allclose(recs.scores[u], full[u, recs.indices[u]], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(recs.scores[u], np.sort(full[u])[::-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "params",
    [{}, {"alpha": 10.0}, {"weighting": "bm25"}],
    ids=["plain", "alpha", "bm25"],
)
def test_als_fold_in_of_known_user_matches_training(planted_data, params):
    model = ALS(**{**ALS_PARAMS, **params}).fit(planted_data)
    folded = model.fold_in(planted_data.matrix)
    sim = cosine(folded, model.user_factors_)
    assert sim.mean() > 0.95, sim.mean()
    assert sim.min() > 0.9, sim.min()


def test_als_fold_in_recommendations_overlap(als, planted_data):
    users = planted_data.users.to_list()[:60]
    stored = als.recommend(users, k=5)
    overlap = []
    for i in range(len(users)):
        # The same training row handed in as the history of a stranger is folded in.
        hist = [int(v) for v in stored.items.lookup(planted_data.matrix[i].indices)]
        folded = als.recommend([UNKNOWN], k=5, history={UNKNOWN: hist})
        a, _ = stored.row(i)
        b, _ = folded.row(0)
        assert b.size == 5
        overlap.append(len(set(a.tolist()) & set(b.tolist())) / 5)
    assert np.mean(overlap) >= 0.8, np.mean(overlap)


@pytest.mark.parametrize("alpha", [1.0, 5.0])
def test_als_fold_in_solves_documented_confidence(planted_data, alpha):
    # ALSConfig.alpha documents implicit's convention of Hu, Koren & Volinsky's confidence:
    # c = alpha · weight for observed items, 1 for the rest. The folded-in user is the exact
    # minimizer of Σ c_i (p_i − x·y_i)² + λ|x|² over all items.
    lam = 0.5
    model = ALS(factors=8, iterations=10, alpha=alpha, regularization=lam, use_gpu=False)
    model.fit(planted_data)
    y = model.item_factors_.astype(np.float64)
    row = planted_data.matrix[3]
    w = row.toarray().ravel().astype(np.float64)
    c, p = np.where(w > 0, alpha * w, 1.0), (w > 0).astype(np.float64)
    want = np.linalg.solve(y.T @ (c[:, None] * y) + lam * np.eye(8), y.T @ (c * p))
    np.testing.assert_allclose(model.fold_in(row)[0], want, rtol=1e-4, atol=1e-5)


def test_als_use_gpu_without_cuda_is_config_error(planted_data):
    from hybridrec.models.als import cuda_available

    model = ALS(factors=4, iterations=2, use_gpu=True)
    if cuda_available():
        assert model.fit(planted_data).trained_on_gpu_ is True
    else:
        # A problem the user can fix: a hybridrec error naming the setting, not implicit's.
        with pytest.raises(ConfigError, match="use_gpu"):
            model.fit(planted_data)


def test_als_loaded_model_folds_in_identically(als, planted_data, tmp_path):
    loaded = ALS.load(als.save(tmp_path / "als.joblib"))
    np.testing.assert_array_equal(
        loaded.fold_in(planted_data.matrix[:30]), als.fold_in(planted_data.matrix[:30])
    )


# ---- ItemKNN --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def knn(planted_data) -> ItemKNN:
    return ItemKNN(neighbors=20).fit(planted_data)


def test_itemknn_scores_are_history_times_similarity(knn, planted_data):
    users = planted_data.users.to_list()[:40]
    n_items = len(planted_data.items)
    full = (planted_data.matrix[:40] @ knn.similarity_).toarray()
    recs = knn.recommend(users, k=n_items, exclude_seen=False)
    for u in range(40):
        np.testing.assert_allclose(recs.scores[u], full[u, recs.indices[u]], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(recs.scores[u], np.sort(full[u])[::-1], rtol=1e-5, atol=1e-6)


def test_itemknn_keeps_at_most_k_neighbours(knn):
    assert np.diff(knn.similarity_.indptr).max() <= 20


@pytest.mark.filterwarnings("ignore:Method expects CSR input")
def test_itemknn_agrees_with_implicit(knn, planted_data):
    from implicit.nearest_neighbours import CosineRecommender

    ref = CosineRecommender(K=20, num_threads=1)
    ref.fit(planted_data.matrix, show_progress=False)
    np.testing.assert_allclose(
        knn.similarity_.toarray(), ref.similarity.toarray(), rtol=1e-6, atol=1e-7
    )
    users = planted_data.users.to_list()[:12]
    ours = knn.recommend(users, k=5)
    rows = np.arange(12)
    ids, scores = ref.recommend(
        rows, sp.csr_matrix(planted_data.matrix[:12]), N=5, filter_already_liked_items=True
    )
    for u in range(12):
        items, our_scores = ours.row(u)
        want = planted_data.items.lookup(ids[u])
        assert set(items.tolist()) == set(want.tolist()), f"user {users[u]}"
        np.testing.assert_allclose(our_scores, scores[u], rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Method expects CSR input")
@pytest.mark.parametrize("similarity", ["bm25", "tfidf"])
def test_itemknn_weighted_similarities_match_implicit(planted_data, similarity):
    from implicit.nearest_neighbours import BM25Recommender, TFIDFRecommender

    model = ItemKNN(neighbors=15, similarity=similarity).fit(planted_data)
    ref = (
        BM25Recommender(K=15, K1=1.2, B=0.75, num_threads=1)
        if similarity == "bm25"
        else TFIDFRecommender(K=15, num_threads=1)
    )
    ref.fit(planted_data.matrix, show_progress=False)
    np.testing.assert_allclose(
        model.similarity_.toarray(), ref.similarity.toarray(), rtol=1e-5, atol=1e-6
    )


# ---- Popularity -----------------------------------------------------------------------------


def trending_data() -> InteractionData:
    """Item 1 was popular 100 days ago; item 2 is popular now; item 3 has one recent user."""
    t0, now = 1_600_000_000, 1_600_000_000 + 100 * DAY
    rows = [(u, 1, 1.0, t0 + u) for u in range(1, 11)]
    rows += [(u, 2, 1.0, now - u * 3600) for u in range(20, 24)]
    rows += [(30, 3, 1.0, now - 2 * DAY)]
    return InteractionData.from_frame(frame(rows))


@pytest.fixture
def trending() -> InteractionData:
    """A fresh copy per test (a fit must not change it, but see the mutation test below)."""
    return trending_data()


def test_popularity_all_time(trending):
    model = Popularity().fit(trending)
    np.testing.assert_array_equal(model.item_scores_, [10, 4, 1])
    items, _ = model.recommend([UNKNOWN], k=3, history={UNKNOWN: []}).row(0)
    assert items.tolist() == [1, 2, 3]


def test_popularity_window_counts_only_recent(trending):
    model = Popularity(window_days=30).fit(trending)
    np.testing.assert_array_equal(model.item_scores_, [0, 4, 1])
    items, scores = model.recommend([UNKNOWN], k=2, history={UNKNOWN: []}).row(0)
    assert items.tolist() == [2, 3]
    np.testing.assert_array_equal(scores, [4, 1])
    # A window reaching back far enough counts everything again.
    assert Popularity(window_days=200).fit(trending_data()).item_scores_.tolist() == [10, 4, 1]


def test_popularity_window_does_not_modify_training_data(trending):
    before = trending.matrix.copy()
    indptr, indices = trending.matrix.indptr.copy(), trending.matrix.indices.copy()
    Popularity(window_days=30).fit(trending)
    np.testing.assert_array_equal(trending.matrix.indptr, indptr)
    np.testing.assert_array_equal(trending.matrix.indices, indices)
    assert (trending.matrix != before).nnz == 0


def test_popularity_window_is_relative_to_newest_interaction(trending):
    # The newest interaction is 20 h before `now`; one day before it reaches back to 44 h, so
    # item 2's users (20-23 h) count and item 3's (48 h) does not.
    model = Popularity(window_days=1.0).fit(trending)
    np.testing.assert_array_equal(model.item_scores_, [0, 4, 0])


def test_popularity_count_weight_sums_weights():
    rows = [(1, 1, 5.0, 0), (2, 1, 2.0, 0), (1, 2, 1.0, 0), (2, 2, 1.0, 0), (3, 2, 1.0, 0)]
    rows += [(3, 2, 1.0, 1)]  # a repeat: the cell's weight becomes 2
    data = InteractionData.from_frame(frame(rows))
    by_users = Popularity().fit(data)
    by_weight = Popularity(count="weight").fit(data)
    np.testing.assert_array_equal(by_users.item_scores_, [2, 3])
    np.testing.assert_array_equal(by_weight.item_scores_, [7, 4])
    first = by_weight.recommend([UNKNOWN], k=1, history={UNKNOWN: []}).row(0)[0]
    assert first.tolist() == [1]


def test_popularity_window_with_weight_ignores_old_interactions():
    # User 1 bought item 1 five times long ago and once within the window: only the recent
    # purchase is "in the last window_days". Item 2 has three recent purchases.
    now = 1_600_000_000 + 100 * DAY
    rows = [(1, 1, 1.0, now - 90 * DAY - k) for k in range(5)] + [(1, 1, 1.0, now)]
    rows += [(u, 2, 1.0, now - DAY) for u in (2, 3, 4)]
    data = InteractionData.from_frame(frame(rows))
    model = Popularity(count="weight", window_days=30).fit(data)
    np.testing.assert_array_equal(model.item_scores_, [1, 3])


def test_popularity_config_validation():
    with pytest.raises(ConfigError, match="window_days"):
        Popularity(window_days=0)
    with pytest.raises(ConfigError, match="count"):
        Popularity(count="clicks")


def test_ease_weights_are_row_major_and_old_column_major_state_converts(tiny_matrix):
    # Scoring reads one row per history item: column-major weights make those strided.
    data = InteractionData.from_frame(matrix_frame(tiny_matrix))
    model = EASE(regularization=1.0, dtype="float64").fit(data)
    assert model.weights_.flags.c_contiguous
    state = {**model._state(), "weights": np.asfortranarray(model.weights_)}
    assert not state["weights"].flags.c_contiguous
    model._set_state(state)
    assert model.weights_.flags.c_contiguous
    np.testing.assert_allclose(model.weights_, naive_ease(tiny_matrix, 1.0), rtol=1e-5, atol=1e-7)
