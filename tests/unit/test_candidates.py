"""Hybrid candidates without dense blocks: every sparse proposal and the hybrid's and the
router's ranking over candidates equal the dense computation, ties by item index included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from hybridrec.data.dataset import InteractionData
from hybridrec.models import Recommender, base, create_model, topk
from hybridrec.models.base import ItemFilter, dense_proposal, topk_rows
from hybridrec.models.candidates import csr_lookup, first_free, ranked_proposal, sparse_proposal
from hybridrec.models.hybrid import Hybrid, Router


def _random_csr(rng: np.random.Generator, rows: int, cols: int, density: float) -> sp.csr_matrix:
    m = sp.random(rows, cols, density=density, format="csr", random_state=rng, dtype=np.float32)
    m.sum_duplicates()
    return m


def test_first_free_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    size = 30
    taken = _random_csr(rng, 40, size, 0.4)
    # Rows that take everything, nothing, and all but the last position.
    dense = taken.toarray() != 0
    dense[0] = True
    dense[1] = False
    dense[2, :-1] = True
    taken = sp.csr_matrix(dense.astype(np.float32))
    for n in (1, 5, size, size + 7):
        got = first_free(taken.indptr, taken.indices, n, size)
        assert got.shape == (40, min(n, size))
        for r in range(40):
            free = [c for c in range(size) if not dense[r, c]][:n]
            want = free + [-1] * (got.shape[1] - len(free))
            assert got[r].tolist() == want


def _seen_dense(history: sp.csr_matrix, scores: np.ndarray, blank: np.ndarray | None) -> np.ndarray:
    out = scores.astype(np.float32).copy()
    out[history.toarray() != 0] = -np.inf
    if blank is not None:
        out[blank] = -np.inf
    return out


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_ranked_proposal_equals_dense(exclude_seen: bool) -> None:
    rng = np.random.default_rng(1)
    items = 50
    # Few distinct values: many ties, broken by item index.
    scores = rng.integers(0, 6, items).astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(items)
    seen = _random_csr(rng, 25, items, 0.3).toarray()
    seen[3] = 1.0  # a user who has seen everything
    history = sp.csr_matrix(seen)
    dense = np.broadcast_to(scores, (25, items)).copy()
    if exclude_seen:
        dense = _seen_dense(history, dense, None)
    cands = rng.integers(-1, items, (25, 12))
    for n in (1, 10, items):
        got = ranked_proposal(scores, order, rank, history, n, exclude_seen=exclude_seen)
        want = dense_proposal(dense, n)
        np.testing.assert_array_equal(got.top, want.top)
        np.testing.assert_array_equal(got.at(cands), want.at(cands))


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_sparse_proposal_equals_dense(exclude_seen: bool) -> None:
    rng = np.random.default_rng(2)
    rows, items = 30, 60
    product = _random_csr(rng, rows, items, 0.15)
    # Tied values, negative scores, explicit zeros and unsorted indices, as products give.
    product.data = rng.choice(np.asarray([-0.5, 0.0, 0.25, 0.5, 1.0], np.float32), product.nnz)
    product = sp.csr_matrix((product.data, product.indices, product.indptr), shape=product.shape)
    for r in range(rows):
        lo, hi = product.indptr[r], product.indptr[r + 1]
        p = lo + rng.permutation(hi - lo)
        product.indices[lo:hi], product.data[lo:hi] = product.indices[p], product.data[p]
    product.has_sorted_indices = False
    seen = _random_csr(rng, rows, items, 0.1).toarray()
    seen[5] = 0.0  # a user with no history: blank
    history = sp.csr_matrix(seen)
    blank = np.diff(history.indptr) == 0
    assert blank.any()
    dense = product.toarray()
    if exclude_seen:
        dense = _seen_dense(history, dense, blank)
    else:
        dense[blank] = -np.inf
    cands = rng.integers(-1, items, (rows, 15))
    for n in (1, 8, items):
        got = sparse_proposal(product.copy(), history, n, exclude_seen=exclude_seen, blank=blank)
        want = dense_proposal(dense, n)
        np.testing.assert_array_equal(got.top, want.top)
        np.testing.assert_array_equal(got.at(cands), want.at(cands))


def test_csr_lookup_reads_stored_cells() -> None:
    m = sp.csr_matrix(np.asarray([[0, 2, 0], [3, 0, 4]], np.float32))
    values, found = csr_lookup(m, np.asarray([[1, 0, -1], [2, 1, 0]]))
    assert values.tolist() == [[2, 0, 0], [4, 0, 3]]
    assert found.tolist() == [[True, False, False], [True, False, True]]


@pytest.fixture(scope="module")
def fitted(components: dict[str, Recommender]) -> dict[str, Recommender]:
    return components


@pytest.mark.parametrize("name", ["popularity", "itemknn"])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_model_proposals_equal_their_dense_blocks(
    fitted: dict[str, Recommender], planted_data: InteractionData, name: str, exclude_seen: bool
) -> None:
    model = fitted[name]
    ids = [*planted_data.users.ids[:40].tolist()]
    _, idx, hist, fold_in = model._histories(ids, None)
    dense = model._block_scores(idx, hist, fold_in, exclude_seen=exclude_seen)
    cands = np.random.default_rng(3).integers(-1, len(planted_data.items), (len(ids), 30))
    for n in (5, 50):
        got = model._propose(idx, hist, fold_in, n, exclude_seen=exclude_seen)
        want = dense_proposal(dense, n)
        np.testing.assert_array_equal(got.top, want.top)
        np.testing.assert_array_equal(got.at(cands), want.at(cands))


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_hybrid_and_router_rank_as_their_dense_scores(
    fitted: dict[str, Recommender],
    planted_data: InteractionData,
    monkeypatch: pytest.MonkeyPatch,
    exclude_seen: bool,
) -> None:
    hybrid = create_model(
        "hybrid",
        {"components": {"als": 0.5, "itemknn": 0.3, "popularity": 0.2}, "candidates": 15},
    )
    assert isinstance(hybrid, Hybrid)
    hybrid.attach(fitted).fit(planted_data)
    router = create_model(
        "router", {"cold": "popularity", "warm": "itemknn", "hot": "hybrid", "hot_from": 12}
    )
    assert isinstance(router, Router)
    router.attach({**fitted, "hybrid": hybrid}).fit(planted_data)
    # Every planted user has 10 items (warm); extra history makes 30 of them hot, and ten
    # new users with 2 items are cold.
    items = planted_data.items.ids
    known = planted_data.users.ids
    history = {u: items[i % 50 : i % 50 + 5].tolist() for i, u in enumerate(known[:30])}
    history |= {90_000 + i: items[i : i + 2].tolist() for i in range(10)}
    ids = np.concatenate([known, np.arange(90_000, 90_010)])
    # Deny a few popular items: the filter applies to the candidates as to dense scores.
    denied = planted_data.items.ids[np.argsort(-planted_data.matrix.getnnz(axis=0))[:5]]
    filters = ItemFilter(deny=denied.tolist())
    allowed = filters.mask(planted_data.items)
    assert allowed is not None
    whole = {}
    for model in (hybrid, router):
        got = whole[model.name] = model.recommend(
            ids, 9, exclude_seen=exclude_seen, filters=filters, history=history
        )
        _, idx, hist, fold_in = model._histories(ids, history)
        dense = model._block_scores(idx, hist, fold_in, exclude_seen=exclude_seen)
        dense[:, ~allowed] = -np.inf
        want_idx, want_val = topk_rows(dense, 9)
        np.testing.assert_array_equal(got.indices, want_idx)
        np.testing.assert_allclose(got.scores, want_val, rtol=1e-6)
        assert (got.indices[:, 0] >= 0).all()
        assert not np.isin(got.indices, np.flatnonzero(~allowed)).any()
    # The router really routes: some users to each of its three components.
    routes = router.routes_for(ids, history)
    assert {"popularity", "itemknn", "hybrid"} <= set(routes)
    # Blocks of 4 users, each mixing routes, answer as one block.
    monkeypatch.setattr(topk, "BLOCK_CELLS", 4 * len(planted_data.items))
    split = router.recommend(ids, 9, exclude_seen=exclude_seen, filters=filters, history=history)
    np.testing.assert_array_equal(split.indices, whole["router"].indices)


def test_sparse_times_dense_equals_the_dense_product(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    cells = _random_csr(rng, 6, 40, 0.2).toarray()
    cells[3] = 0.0  # an empty row
    rows = sp.csr_matrix(cells)
    dense = rng.standard_normal((40, 9)).astype(np.float32)
    got = base.sparse_times_dense(rows, dense)
    np.testing.assert_allclose(got, rows.toarray() @ dense, rtol=1e-5, atol=1e-6)
    assert not got[3].any()
    one = base.sparse_times_dense(rows[1], dense)
    np.testing.assert_array_equal(one[0], got[1])
    # Column-major weights take the gathering path: the same numbers.
    np.testing.assert_array_equal(base.sparse_times_dense(rows, np.asfortranarray(dense)), got)
    memmapped = np.lib.format.open_memmap(
        str(tmp_path / "w.npy"), mode="w+", dtype=np.float32, shape=dense.shape
    )
    memmapped[:] = dense
    np.testing.assert_array_equal(base.sparse_times_dense(rows, memmapped), got)


@pytest.mark.parametrize("name", ["popularity", "itemknn"])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_models_with_proposals_rank_as_their_dense_blocks(
    fitted: dict[str, Recommender], planted_data: InteractionData, name: str, exclude_seen: bool
) -> None:
    # Without filters they rank through their proposal; with filters through the dense block.
    model = fitted[name]
    ids = [*planted_data.users.ids.tolist(), 90_001]
    history = {90_001: planted_data.items.ids[:3].tolist()}
    _, idx, hist, fold_in = model._histories(ids, history)
    dense = model._block_scores(idx, hist, fold_in, exclude_seen=exclude_seen)
    for k in (1, 7, len(planted_data.items)):
        got = model.recommend(ids, k, exclude_seen=exclude_seen, history=history)
        want_idx, want_val = topk_rows(dense, k)
        np.testing.assert_array_equal(got.indices, want_idx)
        np.testing.assert_array_equal(got.scores, want_val)
    denied = planted_data.items.ids[:4].tolist()
    filtered = model.recommend(
        ids, 7, exclude_seen=exclude_seen, filters=ItemFilter(deny=denied), history=history
    )
    assert not np.isin(filtered.indices, np.arange(4)).any()
