"""The content recommender beyond the shared contract: catalog vocabulary, new items,
approximate index, time decay, positive feedback, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hybridrec.data.dataset import InteractionData
from hybridrec.errors import ConfigError, DataError
from hybridrec.models import ContentRecommender, Recommender, create_model

WORDS = {
    "space": "space rocket alien galaxy orbit",
    "love": "love wedding kiss romance heart",
    "ghost": "ghost haunted zombie horror crypt",
}


def catalog(n_per: int = 10, extra: int = 0) -> pl.DataFrame:
    rows = []
    for g, (name, words) in enumerate(WORDS.items()):
        vocab = words.split()
        for j in range(n_per + extra):
            picked = " ".join(vocab[(j + t) % 5] for t in range(3))
            rows.append({"item_id": 100 * (g + 1) + j, "title": f"{name}{j} {picked}"})
    return pl.DataFrame(rows)


def frame(rows: list[tuple[int, int, float, int]]) -> pl.DataFrame:
    u, i, w, t = zip(*rows, strict=True)
    return pl.DataFrame(
        {
            "user_id": list(u),
            "item_id": list(i),
            "weight": list(w),
            "timestamp": list(t),
            "event_type": ["interaction"] * len(u),
        }
    )


# Users 1-3 like one genre each; only the first 8 items of each genre were ever touched.
BASE = frame(
    [(1, 100 + j, 1.0, j) for j in range(4)]
    + [(2, 200 + j, 1.0, j) for j in range(4)]
    + [(3, 300 + j, 1.0, j) for j in range(4)]
    + [(4, 100 + j, 1.0, j) for j in range(4, 8)]
    + [(4, 200 + j, 1.0, j) for j in range(4, 8)]
    + [(4, 300 + j, 1.0, j) for j in range(4, 8)]
)


def fit(df: pl.DataFrame = BASE, table: pl.DataFrame | None = None, **params) -> Recommender:
    table = catalog() if table is None else table
    data = InteractionData.from_frame(df, items_table=table)
    return create_model("content", {"show_progress": False, **params}).fit(data)


def test_needs_a_catalog():
    with pytest.raises(DataError, match="item catalog"):
        create_model("content").fit(InteractionData.from_frame(BASE))


def test_catalog_items_without_interactions_are_recommendable_and_similar():
    model = fit()
    assert len(model.items_) == 30  # the whole catalog, not only the 24 interacted items
    never = {108, 109, 208, 209, 308, 309}
    assert never <= set(model.items_.to_list())
    recs = model.recommend([1], k=6)
    items, scores = recs.row(0)
    assert all(100 <= i < 200 for i in items), items  # own genre, incl. untouched items
    assert {108, 109} <= set(items.tolist())
    assert np.all(np.isfinite(scores))
    sim, _ = model.similar_items([109], k=3).row(0)
    assert all(100 <= i < 200 for i in sim) and 109 not in sim.tolist()
    # The same from a fresh load.
    assert model.items_ == fit().items_


def test_interacted_items_missing_from_the_catalog_are_never_recommended():
    table = catalog().filter(pl.col("item_id") != 101)
    model = fit(table=table)
    assert 101 in model.items_
    rows = model.recommend([2, 3, 4], k=29, exclude_seen=False)
    assert all(101 not in items.tolist() for _, items, _ in rows)
    items, _ = model.similar_items([101], k=5).row(0)
    assert items.size == 0  # no content: nothing to compare


def test_add_items_without_refit(tmp_path: Path):
    model = fit(index="hnsw")
    assert model.index_ is not None
    n_before = len(model.index_)
    new = pl.DataFrame(
        {"item_id": [150, 250, 100], "title": ["rocket galaxy orbit", "kiss wedding", "dup"]}
    )
    assert model.add_items(new) == 2  # 100 is known: skipped
    assert len(model.index_) == n_before + 2
    items, _ = model.recommend([1], k=7).row(0)  # 6 unseen space items and the new one
    assert 150 in items.tolist() and all(100 <= i < 200 for i in items)
    sim, _ = model.similar_items([250], k=3).row(0)
    assert all(200 <= i < 300 for i in sim)
    # Training histories moved with the new vocabulary.
    assert model.recommend([1], k=40).row(0)[0].size == 32 - 4
    path = model.save(tmp_path / "m.joblib")
    loaded = Recommender.load(path)
    np.testing.assert_array_equal(
        loaded.recommend([1, 2, 3], k=10).indices, model.recommend([1, 2, 3], k=10).indices
    )


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_index_kinds_agree_on_a_small_catalog(index):
    exact = fit(index="flat").recommend([1, 2, 3, 4], k=5)
    other = fit(index=index, nprobe=64).recommend([1, 2, 3, 4], k=5)
    assert (fit(index=index).index_ is None) == (index == "flat")
    assert_same_top_k(other, exact)


def assert_same_top_k(got, want, *, atol: float = 1e-5) -> None:
    """Two top-k batches agree up to ties: same score multisets (with tolerance), the same
    items wherever the score is clearly above the k-th (boundary) score, and items that
    differ only at the boundary (ties there may fall either way between FAISS and numpy,
    or AVX2 and AVX-512 kernels)."""
    assert got.indices.shape == want.indices.shape
    for row in range(want.indices.shape[0]):
        w_idx, w_val = want.indices[row], want.scores[row]
        g_idx, g_val = got.indices[row], got.scores[row]
        np.testing.assert_allclose(np.sort(g_val), np.sort(w_val), rtol=1e-5, atol=atol)
        finite = np.isfinite(w_val)
        if not finite.any():
            assert (g_idx < 0).all()
            continue
        boundary = w_val[finite].min()
        clearly_in = set(w_idx[w_val > boundary + atol].tolist())
        assert clearly_in <= set(g_idx.tolist()), (row, clearly_in, g_idx)
        swapped = set(g_idx.tolist()) - set(w_idx.tolist())
        for item in swapped:
            score = g_val[g_idx.tolist().index(item)]
            assert abs(score - boundary) <= atol, (row, item, score, boundary)


def test_auto_index_switches_at_threshold():
    assert fit(index_threshold=30).index_ is not None  # 30 items with content
    assert fit(index_threshold=31).index_ is None


def test_time_decay_favours_recent_history():
    day = 86_400
    df = frame(
        [(1, 100 + j, 1.0, j * day) for j in range(4)]  # long ago: space
        + [(1, 200, 1.0, 400 * day)]  # recently: one love item
        + [(2, 300, 1.0, 0)]
    )
    plain = fit(df).recommend([1], k=3).row(0)[0]
    decayed = fit(df, half_life_days=30).recommend([1], k=3).row(0)[0]
    assert all(100 <= i < 200 for i in plain)
    assert all(200 <= i < 300 for i in decayed)


def test_only_positive_feedback_shapes_the_profile():
    df = frame(
        [(1, 100, 1.0, 0), (1, 101, 1.0, 1)]
        + [(1, 200 + j, -1.0, 2) for j in range(5)]  # disliked
        + [(2, 300, 1.0, 0)]
    )
    items, _ = fit(df).recommend([1], k=5).row(0)
    assert all(100 <= i < 200 for i in items)
    # Only negative history: nothing to personalize on.
    items, _ = fit(df).recommend([9], k=5, history={9: {200: -1.0}}).row(0)
    assert items.size == 0


def test_config_and_data_errors():
    with pytest.raises(ConfigError, match="image_model"):
        create_model("content", {"image_field": "poster"})
    with pytest.raises(ConfigError, match="encoder"):
        create_model("content", {"encoder": "word2vec"})
    with pytest.raises(DataError, match="'plot'"):
        fit(text_fields=["title", "plot"])
    text_ids = catalog().with_columns(pl.col("item_id").cast(pl.String))
    with pytest.raises(DataError, match="text"):
        fit(table=text_ids)
    with pytest.raises(DataError, match="image column 'poster'"):
        fit(image_field="poster", image_model="/nonexistent")


def test_sentence_encoder_model(tmp_path: Path):
    model = fit(encoder="sentence", cache_dir=str(tmp_path))
    assert isinstance(model, ContentRecommender)
    assert model.embeddings_ is not None and model.embeddings_.shape == (30, 384)
    items, _ = model.recommend([3], k=5).row(0)
    assert sum(300 <= i < 400 for i in items) >= 4
    assert model.encode_stats_["encoded"] == 30
    again = fit(encoder="sentence", cache_dir=str(tmp_path))
    assert again.encode_stats_ == {"items": 30, "encoded": 0, "cached": 30, "images": 0}
    np.testing.assert_allclose(again.embeddings_, model.embeddings_, atol=1e-6)


def test_scores_of_a_column_subset_equal_the_full_scores():
    # A hybrid over fewer items than the catalog asks content for those columns only.
    extra = frame([(5, 101, 1.0, 9), (5, 208, 1.0, 9)])
    model = fit(pl.concat([BASE, extra]), half_life_days=30.0)
    _, idx, hist, fold_in = model._histories([1, 2, 4, 5], None)
    full = model._score(idx, hist, fold_in)
    cols = np.asarray([0, 3, 7, 8, 12, 29, 15], np.int64)
    got = model._score_columns(idx, hist, fold_in, cols)
    assert np.isfinite(got).any()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(full[:, cols]))
    ok = np.isfinite(got)
    np.testing.assert_allclose(got[ok], full[:, cols][ok], rtol=1e-5, atol=1e-6)
    # Items without content stay unscorable in the subset too.
    no_text = fit(table=catalog().filter(pl.col("item_id") != 101))
    _, idx, hist, fold_in = no_text._histories([2, 3], None)
    col = no_text.items_.index([101])
    assert np.isneginf(no_text._score_columns(idx, hist, fold_in, col)).all()
