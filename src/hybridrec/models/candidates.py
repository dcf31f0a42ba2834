"""Hybrid candidates without dense score blocks: the same `Proposal` from sparse structure.

A hybrid asks each component for its top ``n`` items per user and for its scores at the
union of the proposals (`hybridrec.models.base.Proposal`). The default answer scores the
dense users × items block; two kinds of model answer from much less:

- `ranked_proposal`: one ranking shared by every user (popularity). A user's top ``n`` are
  the first ``n`` ranks not among their seen items, found for the whole block at once.
- `sparse_proposal`: scores that are a sparse matrix (item-kNN's ``history · S``). The top
  ``n`` lie among the row's stored entries and its first ``n`` unstored (zero-score, unseen)
  items by index, so the selection runs over those alone.

Both give exactly the dense path's items (ties broken by item index) and scores.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from hybridrec.models.base import Proposal, topk_rows

__all__ = [
    "cell_keys",
    "csr_lookup",
    "first_free",
    "lookup",
    "ranked_proposal",
    "sparse_proposal",
]


def first_free(
    indptr: NDArray[np.integer], taken: NDArray[np.integer], n: int, size: int
) -> NDArray[np.int64]:
    """Per row, the ``n`` smallest positions in ``[0, size)`` not in the row's ``taken``.

    ``taken[indptr[r]:indptr[r + 1]]`` must be sorted and unique (a canonical CSR row).
    Positions past ``size`` are -1. With the taken positions ``t_0 < t_1 < ...`` of a row,
    the j-th free one is ``j + #{i : t_i - i <= j}``: one `np.searchsorted` for the block.
    """
    rows = indptr.size - 1
    lengths = np.diff(indptr).astype(np.int64)
    n = max(0, min(n, size))
    j = np.arange(n, dtype=np.int64)
    if taken.size == 0:
        return np.broadcast_to(j, (rows, n)).copy()
    stride = np.int64(size + n + 1)
    offset = np.arange(rows, dtype=np.int64) * stride
    within = np.arange(taken.size, dtype=np.int64) - np.repeat(
        indptr[:-1].astype(np.int64), lengths
    )
    keys = taken.astype(np.int64) - within + np.repeat(offset, lengths)
    queries = j[None, :] + offset[:, None]
    count = np.searchsorted(keys, queries, side="right") - indptr[:-1, None].astype(np.int64)
    free = j[None, :] + count
    free[free >= size] = -1
    return free


def cell_keys(matrix: sp.csr_matrix) -> NDArray[np.int64]:
    """``row · n_cols + col`` of every stored cell of a canonical CSR ``matrix`` (ascending)."""
    lengths = np.diff(matrix.indptr).astype(np.int64)
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64) * matrix.shape[1], lengths)
    return np.asarray(rows + matrix.indices, np.int64)


def lookup(
    keys: NDArray[np.int64], queries: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Where each query key sits in sorted ``keys``, and whether it is there."""
    if keys.size == 0:
        return np.zeros(queries.shape, np.int64), np.zeros(queries.shape, bool)
    pos = np.minimum(np.searchsorted(keys, queries), keys.size - 1)
    return pos, keys[pos] == queries


def csr_lookup(
    matrix: sp.csr_matrix, cols: NDArray[np.int64], keys: NDArray[np.int64] | None = None
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Values of a canonical CSR ``matrix`` at ``cols`` (rows × c), and which are stored.

    Unstored cells (and ``cols`` of -1) read 0 with ``found`` False; ``keys`` are the
    matrix's `cell_keys` when the caller has them.
    """
    keys = cell_keys(matrix) if keys is None else keys
    queries = np.arange(matrix.shape[0], dtype=np.int64)[:, None] * matrix.shape[1] + cols
    pos, found = lookup(keys, queries)
    found &= cols >= 0
    values = np.zeros(cols.shape, np.float32)
    values[found] = matrix.data[pos[found]]
    return values, found


def ranked_proposal(
    scores: NDArray[np.floating],
    order: NDArray[np.int64],
    rank: NDArray[np.int64],
    history: sp.csr_matrix,
    n: int,
    *,
    exclude_seen: bool,
) -> Proposal:
    """Proposal of a model that scores every user alike (``scores``, all finite).

    ``order`` lists the items best first (ties by index) and ``rank`` is its inverse;
    ``history`` is canonical.
    """
    size = order.size
    if exclude_seen and history.nnz:
        seen = sp.csr_matrix(
            (np.ones(history.nnz, np.int8), rank[history.indices], history.indptr),
            shape=history.shape,
        )
        seen.sort_indices()
        free = first_free(seen.indptr, seen.indices, n, size)
    else:
        free = first_free(history.indptr, np.empty(0, np.int64), n, size)
    top = np.where(free >= 0, order[np.maximum(free, 0)], -1)

    def at(cands: NDArray[np.int64]) -> NDArray[np.float32]:
        out = np.asarray(scores, np.float32)[np.maximum(cands, 0)]
        out[cands < 0] = -np.inf
        if exclude_seen:
            out[csr_lookup(history, cands)[1]] = -np.inf
        return out

    return Proposal(top, at)


def sparse_proposal(
    product: sp.csr_matrix,
    history: sp.csr_matrix,
    n: int,
    *,
    exclude_seen: bool,
    blank: NDArray[np.bool_],
) -> Proposal:
    """Proposal of a model whose block scores are the sparse ``product`` (zero elsewhere).

    ``product`` is taken over (modified); ``history`` is canonical. ``blank`` rows cannot
    be answered (-inf everywhere); seen items are -inf when excluded.
    """
    rows, size = product.shape
    if not product.has_sorted_indices:
        # Two transposes sort every row in O(nnz), several times faster than a row sort.
        product = product.tocsc().tocsr()
    product.sum_duplicates()
    product.eliminate_zeros()
    keys = cell_keys(product)
    taken = product
    if exclude_seen and history.nnz:
        seen = cell_keys(history)
        pos, hit = lookup(keys, seen)
        product.data[pos[hit]] = -np.inf
        # Seen cells the product does not hold are taken too (they cannot be zero-filled).
        both = np.insert(keys, np.searchsorted(keys, seen[~hit]), seen[~hit])
        indptr = np.searchsorted(both, np.arange(rows + 1, dtype=np.int64) * size)
        taken = sp.csr_matrix(
            (np.ones(both.size, np.int8), both % size, indptr), shape=product.shape
        )
    n = min(n, size)
    zeros = first_free(taken.indptr, taken.indices, n, size)
    lengths = np.diff(product.indptr).astype(np.int64)
    width = int(lengths.max(initial=0))
    vals = np.full((rows, width + n), -np.inf, np.float32)
    cols = np.full((rows, width + n), -1, np.int64)
    entry_row = np.repeat(np.arange(rows), lengths)
    within = np.arange(product.nnz) - np.repeat(product.indptr[:-1], lengths)
    vals[entry_row, within] = product.data
    cols[entry_row, within] = product.indices
    vals[:, width:] = np.where(zeros >= 0, 0.0, -np.inf)
    cols[:, width:] = zeros
    vals[blank] = -np.inf
    # Stored entries come in index order and hold no zero, the zero fill follows in index
    # order: equal scores sit in one of the two runs, so position order is index order.
    pos_top, _ = topk_rows(vals, n)
    top = np.where(pos_top >= 0, np.take_along_axis(cols, np.maximum(pos_top, 0), axis=1), -1)

    def at(cands: NDArray[np.int64]) -> NDArray[np.float32]:
        out, _ = csr_lookup(product, cands, keys)
        out[cands < 0] = -np.inf
        if exclude_seen:
            out[csr_lookup(history, cands)[1]] = -np.inf
        out[blank] = -np.inf
        return out

    return Proposal(top, at)
