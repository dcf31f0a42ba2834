"""Batch scoring: blocks on worker threads answer as one block does; the hybrid's compact
candidate union scores exactly as the dense formulation it replaced."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from hybridrec.data.dataset import InteractionData
from hybridrec.errors import ConfigError
from hybridrec.models import Recommender, base, create_model, topk
from hybridrec.models.hybrid import Hybrid, normalize_scores


@pytest.fixture(scope="module")
def fitted(components: dict[str, Recommender]) -> dict[str, Recommender]:
    return components


def _hybrid(
    fitted: dict[str, Recommender], data: InteractionData, normalization: str, candidates: int
) -> Hybrid:
    hybrid = create_model(
        "hybrid",
        {
            "components": {"als": 0.5, "itemknn": 0.3, "popularity": 0.2},
            "normalization": normalization,
            "candidates": candidates,
        },
    )
    assert isinstance(hybrid, Hybrid)
    hybrid.attach(fitted).fit(data)
    return hybrid


def dense_reference(hybrid: Hybrid, users: Any, history: Any, fold_in: Any) -> np.ndarray:
    """The blend written over the full n × items grid (the formulation before compaction)."""
    raw = {n: hybrid._component_scores(n, users, history, fold_in) for n in hybrid.components_}
    union = np.zeros(next(iter(raw.values())).shape, dtype=bool)
    for scores in raw.values():
        idx, _ = base.topk_rows(scores, hybrid.config.candidates)
        rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
        ok = idx.ravel() >= 0
        union[rows[ok], idx.ravel()[ok]] = True
    total = np.zeros(union.shape)
    mass = np.zeros(union.shape[0])
    for name, scores in raw.items():
        finite = np.isfinite(scores)
        answers = finite.any(axis=1)
        part = normalize_scores(scores, union & finite, hybrid.config.normalization)
        w = hybrid.weights[name]
        total += w * part * answers[:, None]
        mass += w * answers
    out = np.where(union, total / np.where(mass > 0, mass, 1.0)[:, None], -np.inf)
    out[mass == 0] = -np.inf
    return out


@pytest.mark.parametrize("normalization", ["minmax", "zscore", "rank"])
@pytest.mark.parametrize("candidates", [3, 20])
def test_compact_union_equals_dense_blend(
    fitted: dict[str, Recommender],
    planted_data: InteractionData,
    normalization: str,
    candidates: int,
) -> None:
    hybrid = _hybrid(fitted, planted_data, normalization, candidates)
    ids = planted_data.users.ids[:50]
    _, idx, hist, fold_in = hybrid._histories(ids, None)
    got = hybrid._score(idx, hist, fold_in)
    want = dense_reference(hybrid, idx, hist, fold_in)
    assert np.isfinite(got).any()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-5)


@pytest.mark.parametrize("name", ["als", "itemknn", "popularity", "hybrid"])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_threaded_blocks_equal_one_block(
    fitted: dict[str, Recommender],
    planted_data: InteractionData,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    exclude_seen: bool,
) -> None:
    model = _hybrid(fitted, planted_data, "minmax", 10) if name == "hybrid" else fitted[name]
    ids = planted_data.users.ids
    whole = model.recommend(ids, 7, exclude_seen=exclude_seen)
    # Blocks of 3 users on 4 threads.
    monkeypatch.setattr(topk, "BLOCK_CELLS", 3 * len(planted_data.items))
    monkeypatch.setenv("HYBRIDREC_THREADS", "4")
    assert base.batch_threads() == 4
    split = model.recommend(ids, 7, exclude_seen=exclude_seen)
    np.testing.assert_array_equal(split.indices, whole.indices)
    np.testing.assert_allclose(split.scores, whole.scores, rtol=1e-6)
    assert (whole.indices[:, 0] >= 0).all()
    if not exclude_seen:
        # Seen items may come back: some user gets one of their own items.
        seen = planted_data.matrix
        hits = [seen[u, whole.indices[u]].nnz for u in range(len(ids))]
        assert sum(hits) > 0


def test_bad_thread_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDREC_THREADS", "lots")
    with pytest.raises(ConfigError, match="HYBRIDREC_THREADS"):
        base.batch_threads()


def test_batch_reasons_agree_with_per_user_reasons(
    fitted: dict[str, Recommender], planted_data: InteractionData
) -> None:
    from hybridrec.models.explain import answer, answer_batch

    ids = [*planted_data.users.ids[:60].tolist(), 999_999]
    batch = answer_batch(fitted.get, ids, 5, model="als")
    assert batch.fallback == 1
    per_user = answer(fitted.get, ids, 5, strategy="als", first="als", chain=("popularity",))
    want = [
        (a.user_id, item, "; ".join(r.text for r in reasons))
        for a in per_user
        for item, reasons in zip(a.items, a.reasons, strict=True)
    ]
    got = list(batch.frame.select("user_id", "item_id", "reason").iter_rows())
    assert [g[:2] for g in got] == [w[:2] for w in want]
    # Same rule; float32 cosines may break a near-tie between history items differently.
    same = sum(g == w for g, w in zip(got, want, strict=True))
    assert same >= 0.95 * len(want)
    assert all(g[2] for g in got)
    assert sum("because you liked" in g[2] for g in got) >= 0.9 * 60 * 5
    popular = batch.frame.filter(pl.col("user_id") == 999_999)
    assert popular["method"].to_list() == ["popularity"] * 5
