"""Top-k selection of dense score rows, ties broken by item index (numpy only).

Every answer path ranks with `topk_rows`: a model's `recommend`, the hybrid's candidate
union, batch scoring, and a bundle answering a known user from stored factors without
building the model (`hybridrec.bundle.bundle`), which is why it imports nothing beyond
numpy. `hybridrec.models.base` re-exports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from hybridrec.errors import ConfigError

__all__ = ["BLOCK_CELLS", "check_k", "dot_topk", "ranked_rows", "topk_rows"]

#: Dense score blocks are chunked so one block stays under this many float32 cells (~32 MB);
#: `hybridrec.models.base.batch_threads` blocks are scored at once.
BLOCK_CELLS = 8_000_000
# Cells per chunk (at most) in `topk_rows` (a chunk's maximum stands for it at first).
_CHUNK = 64


def topk_rows(scores: NDArray[np.floating[Any]], k: int) -> tuple[NDArray[np.int64], NDArray[Any]]:
    """Top-k per row of a dense score block, best first; -inf (and NaN) cells become padding.

    Ties are broken by item index, also at the k-th place, so results never depend on the
    partition algorithm: batch and single-user answers and saved/loaded models agree exactly.
    ``scores`` is never modified (copied once only when it holds NaN).

    Wide rows are cut into chunks of `_CHUNK` cells: the k chunks with the largest maxima
    hold every top-k cell whenever the k-th and (k+1)-th largest chunk maxima differ, so
    those rows are answered from k·`_CHUNK` candidates; other rows (ties at the k-th chunk
    maximum, rows nobody can answer) take the exact path over the whole row.
    """
    n, m = scores.shape
    kk = min(k, m)
    k = min(k, max(m, 1))
    out_idx = np.full((n, k), -1, np.int64)
    out_val = np.full((n, k), -np.inf, np.float32)
    if kk == 0 or n == 0:
        return out_idx, out_val
    if np.isnan(scores.max()):
        # max propagates NaN: one cheap pass decides whether the block needs a cleaned copy.
        scores = np.where(np.isnan(scores), -np.inf, scores)
    if n == 1:
        out_idx[0, :kk], out_val[0, :kk] = _topk_row(scores[0], kk)
        return out_idx, out_val
    # Narrower chunks for large k, so that the k chosen chunks stay a small share of a row.
    width = max(min(_CHUNK, m // (32 * kk)), min(8, _CHUNK))
    n_chunks = m // width
    if n_chunks < 4 * kk + 1:
        idx, val = _topk_exact(scores, kk)
        out_idx[:, :kk], out_val[:, :kk] = idx, val
        return out_idx, out_val
    # Chunk c holds columns c, c + n_chunks, c + 2·n_chunks, ...: the maxima are then a
    # reduction over a middle axis, which numpy vectorizes (a last-axis one it does not).
    main = scores[:, : n_chunks * width].reshape(n, width, n_chunks)
    maxima = main.max(axis=1)
    tail_len = m - n_chunks * width
    if tail_len:
        padded = np.full((n, width), -np.inf, scores.dtype)
        padded[:, :tail_len] = scores[:, n_chunks * width :]
        maxima = np.concatenate([maxima, padded.max(axis=1, keepdims=True)], axis=1)
    total = maxima.shape[1]
    # k-th and (k+1)-th largest chunk maxima per row.
    # One partition places both and puts the k largest maxima after them.
    part = np.argpartition(maxima, (total - kk - 1, total - kk), axis=1)
    kth = np.take_along_axis(maxima, part[:, total - kk : total - kk + 1], axis=1)[:, 0]
    next_ = np.take_along_axis(maxima, part[:, total - kk - 1 : total - kk], axis=1)[:, 0]
    # The k chunks of largest maxima hold every cell above the k-th maximum (kth). When
    # at least k cells are above it, the top k (ties included) lie in those chunks;
    # otherwise the k-th value is kth itself: the cells above it, then ties by index.
    chunk = np.sort(part[:, total - kk :], axis=1)
    in_main = chunk < n_chunks
    safe = np.minimum(chunk, n_chunks - 1)[:, None, :]
    cand = main[np.arange(n)[:, None, None], np.arange(width)[None, :, None], safe]
    glob = np.arange(width)[None, :, None] * n_chunks + chunk[:, None, :]
    if not in_main.all():
        r, c = np.nonzero(~in_main)
        cand[r, :, c] = padded[r]
        glob[r, :, c] = n_chunks * width + np.arange(width)
    flat = cand.reshape(n, width * kk)
    gflat = glob.reshape(n, width * kk)
    inside = (kth > next_) | (np.count_nonzero(flat > kth[:, None], axis=1) >= kk)
    rows = np.flatnonzero(inside)
    if rows.size:
        flat, gflat = flat[rows], gflat[rows]
        tail_rows = np.flatnonzero(~in_main[rows].all(axis=1))
        if tail_rows.size:
            # Main cells come in index order (offset-major, chunks ascending); the tail's
            # do not, so rows holding it are put in index order before the selection.
            perm = np.argsort(gflat[tail_rows], axis=1)
            flat[tail_rows] = np.take_along_axis(flat[tail_rows], perm, axis=1)
            gflat[tail_rows] = np.take_along_axis(gflat[tail_rows], perm, axis=1)
        pos, val = _topk_exact(flat, kk)
        idx = np.take_along_axis(gflat, np.maximum(pos, 0), axis=1).astype(np.int64)
        idx[pos < 0] = -1
        out_idx[rows, :kk], out_val[rows, :kk] = idx, val
    rest = np.flatnonzero(~inside)
    if rest.size:
        idx, val = _topk_exact(scores[rest], kk, thr=kth[rest, None])
        out_idx[rest, :kk], out_val[rest, :kk] = idx, val
    return out_idx, out_val


def _topk_row(row: NDArray[Any], kk: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """`topk_rows` of one row (no NaN, ``kk <= row.size``): a request's few calls, lean."""
    thr = _kth_largest(row, kk)
    idx = np.flatnonzero(row > thr)
    if idx.size < kk:
        # The k-th value ties: the lowest indices among the tied cells fill the rest.
        ties = np.flatnonzero(row == thr)[: kk - idx.size]
        idx = np.sort(np.concatenate([idx, ties]))
    val = row[idx]
    order = np.lexsort((idx, -val))
    idx, val = idx[order].astype(np.int64), val[order].astype(np.float32)
    idx[~np.isfinite(val)] = -1
    val[idx < 0] = -np.inf
    return idx, val


def _kth_largest(row: NDArray[Any], kk: int) -> Any:
    """The ``kk``-th largest value of one row (no NaN, ``1 <= kk <= row.size``).

    The row's strided chunks of 8 (columns c, c + n, c + 2n, ...: a middle-axis reduction,
    which numpy vectorizes) give maxima whose ``kk``-th largest, ``t0``, has at least ``kk``
    cells at or above it; the answer is among those cells, a small share of the row. About
    4x faster than one `np.argpartition` of a 6,000-item row.
    """
    m = row.size
    if kk >= m:
        return row.min()
    n_chunks = m // 8
    if n_chunks < 4 * kk:
        return np.partition(row, m - kk)[m - kk]
    maxima = row[: n_chunks * 8].reshape(8, n_chunks).max(axis=0)
    t0 = np.partition(maxima, n_chunks - kk)[n_chunks - kk]
    cand = row[row >= t0]
    return np.partition(cand, cand.size - kk)[cand.size - kk]


def _first_ties(sub: NDArray[Any], t: NDArray[Any], kk: int) -> NDArray[np.bool_]:
    """Cells above ``t`` per row, plus the lowest-index cells equal to it up to ``kk`` in all.

    Tied cells are looked for in a prefix of each row that grows fourfold until it holds
    enough of them: when ties are many (zeros of a sparse model, equal popularity counts)
    a short prefix does, and no row is scanned much more than once.
    """
    above = sub > t[:, None]
    need = kk - np.count_nonzero(above, axis=1)
    m = sub.shape[1]
    todo = np.flatnonzero(need > 0)
    width = min(m, max(256, 4 * kk))
    while todo.size:
        at = sub[todo, :width] == t[todo, None]
        rank = np.cumsum(at, axis=1, dtype=np.int32)
        done = (rank[:, -1] >= need[todo]) | (width == m)
        sel = todo[done]
        above[sel, :width] |= at[done] & (rank[done] <= need[sel, None])
        todo = todo[~done]
        width = min(m, width * 4)
    return above


def _topk_exact(
    scores: NDArray[Any], kk: int, *, thr: NDArray[Any] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """`topk_rows` over whole rows (no NaN, ``kk <= width``), exactly ``kk`` columns out.

    One `np.partition` finds each row's k-th value (``thr``, when the caller knows it); a
    row holding exactly k cells at or above it needs nothing more, and only rows where the
    k-th value ties with cells beyond the k-th place pick the lowest indices among the ties.
    """
    n, m = scores.shape
    if kk < m:
        if thr is None:
            thr = np.partition(scores, m - kk, axis=1)[:, m - kk : m - kk + 1]
        chosen = scores >= thr
        extra = np.count_nonzero(chosen, axis=1) > kk
        if extra.any():
            rows = np.flatnonzero(extra)
            chosen[rows] = _first_ties(scores[rows], thr[rows, 0], kk)
        part = np.nonzero(chosen)[1].reshape(n, kk)
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    top = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -top), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    val = np.take_along_axis(top, order, axis=1).astype(np.float32)
    idx[~np.isfinite(val)] = -1
    val[idx < 0] = -np.inf
    return idx, val


def check_k(k: int) -> None:
    """Refuse a ``k`` that is not a positive integer (a clear error, not numpy's)."""
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k <= 0:
        raise ConfigError(f"k must be a positive integer (got {k!r})")


def dot_topk(
    user_vectors: NDArray[Any],
    item_vectors: NDArray[Any],
    seen: list[NDArray[Any]],
    k: int,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The top ``k`` of ``user_vectors @ item_vectors.T``, each row's ``seen`` items left out.

    What a factor model (``Recommender.dot_state``) answers a known user asked with no new
    history, seen items excluded and no filters, in one block: the same product, the same
    float32 scores and `topk_rows`, so the answer is the model's to the bit.
    """
    scores = np.asarray(user_vectors @ item_vectors.T, dtype=np.float32)
    if not scores.flags.writeable:
        scores = scores.copy()
    for row, cols in enumerate(seen):
        scores[row, cols] = -np.inf
    return topk_rows(scores, min(k, max(item_vectors.shape[0], 1)))


def ranked_rows(
    items: NDArray[Any],
    scores: NDArray[Any],
    k: int,
    n_items: int,
    *,
    allowed: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]] | None:
    """The top ``k`` of stored rankings (rows of `Recommender.precompute_ranking`'s table).

    ``items`` / ``scores``: the users' rows, best first, -1 past the end of a short ranking;
    ``allowed``: items that may be recommended. None when the rows cannot answer: ``k``
    beyond them, or too few allowed items in them, for a user whose ranking goes on.
    """
    top = np.array(items, np.int64)  # copies: the rows may be a bundle's read-only map
    val = np.array(scores, np.float32)
    # A row that ends in padding holds the user's whole ranking.
    whole = top[:, -1] < 0
    if allowed is not None:
        keep = (top >= 0) & allowed[np.maximum(top, 0)]
        if not (whole | (keep.sum(axis=1) >= k)).all():
            return None
        order = np.argsort(~keep, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        val = np.take_along_axis(val, order, axis=1)
        kept = np.take_along_axis(keep, order, axis=1)
        top[~kept], val[~kept] = -1, -np.inf
    elif k > top.shape[1] and not whole.all():
        return None
    width = min(k, max(n_items, 1))
    if top.shape[1] < width:
        # Whole rankings shorter than k: padded as `recommend` pads them.
        pad = width - top.shape[1]
        top = np.pad(top, ((0, 0), (0, pad)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, pad)), constant_values=-np.inf)
    return top[:, :width], val[:, :width]
