"""Top-k ranking metrics, computed per user with vectorized numpy.

Conventions shared by every function here:

* ``topk`` is an ``(n_users, k)`` integer array of item indices, best first. ``-1`` pads the
  lists of users who received fewer than ``k`` items; padding is never a hit, never counted as
  a recommended item, and never looked up in an item table.
* ``relevant`` is a scipy sparse matrix of shape ``(n_users, n_items)``; a stored nonzero marks a
  held-out positive. Row ``i`` of ``relevant`` belongs to row ``i`` of ``topk``.
* ``hits`` is the ``(n_users, k)`` boolean array built by :func:`hits_matrix`. The cutoff of
  every accuracy metric is ``hits.shape[1]``, so metrics at 10 and at 20 come from
  ``hits[:, :10]`` and ``hits`` of one top-20 list.
* ``n_relevant`` is the ``(n_users,)`` count of relevant items per user (see
  :func:`count_relevant`). Users with no relevant items score 0 on the accuracy metrics that
  divide by it; the evaluator decides whether to drop them before averaging.

Beyond-accuracy metrics (:func:`intra_list_diversity`, :func:`novelty`) return NaN for users
whose list is too short to define them, so that ``np.nanmean`` averages over the defined ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from hybridrec.errors import DataError

__all__ = [
    "METRICS",
    "BootstrapInterval",
    "MetricFn",
    "average_precision_at_k",
    "catalog_coverage",
    "count_relevant",
    "hit_rate_at_k",
    "hits_matrix",
    "intra_list_diversity",
    "ndcg_at_k",
    "novelty",
    "paired_bootstrap",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank_at_k",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
IntArray: TypeAlias = npt.NDArray[np.integer[Any]]
MetricFn: TypeAlias = Callable[[BoolArray, IntArray], FloatArray]
"""Signature shared by the entries of :data:`METRICS`: ``(hits, n_relevant) -> per-user``."""

# Upper bound on the float64 elements materialised at once by intra_list_diversity's dense path
# (32 Mi elements = 256 MiB), so 100k users x 20 items x wide embeddings never gathers in one go.
_DENSE_GATHER_BUDGET = 1 << 25


# --------------------------------------------------------------------------------------------
# Validation helpers: cheap O(n) checks that turn silent misalignment into a named DataError.
# --------------------------------------------------------------------------------------------


def _as_topk(topk: IntArray) -> npt.NDArray[np.int64]:
    arr = np.asarray(topk)
    if arr.ndim != 2:
        raise DataError(
            f"topk must be a 2-D (n_users, k) array of item indices; got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"topk must hold integer item indices; got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < -1:
        raise DataError(
            f"topk holds {int(arr.min())}; item indices must be >= 0, with -1 only as padding"
        )
    return arr.astype(np.int64, copy=False)


def _check_items_in_range(topk: npt.NDArray[np.int64], n_items: int, source: str) -> None:
    if topk.size and int(topk.max()) >= n_items:
        raise DataError(
            f"topk holds item index {int(topk.max())} but {source} covers only {n_items} items"
        )


def _as_csr(relevant: Any) -> Any:
    if not sp.issparse(relevant) or len(relevant.shape) != 2:
        raise DataError(
            f"relevant must be a 2-D scipy sparse matrix (n_users, n_items); "
            f"got {type(relevant).__name__}"
        )
    # tocsr() returns the same object when it already is CSR, so the caller's data is not copied.
    return relevant.tocsr()


def _as_hits(hits: BoolArray) -> BoolArray:
    arr = np.asarray(hits)
    if arr.ndim != 2:
        raise DataError(f"hits must be a 2-D (n_users, k) boolean array; got shape {arr.shape}")
    # Insisting on bool catches a top-k index array passed by mistake, which would otherwise
    # read every nonzero item index as a hit.
    if arr.dtype != np.bool_:
        raise DataError(f"hits must have dtype bool (see hits_matrix); got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise DataError("hits has no columns; the cutoff k must be at least 1")
    return arr


def _as_n_relevant(n_relevant: IntArray, hits: BoolArray) -> npt.NDArray[np.int64]:
    arr = np.asarray(n_relevant)
    if arr.shape != (hits.shape[0],):
        raise DataError(
            f"n_relevant must have shape ({hits.shape[0]},) to match the rows of hits; "
            f"got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"n_relevant must hold integer counts; got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise DataError(f"n_relevant holds {int(arr.min())}; counts must be >= 0")
    # More hits than relevant items means rows of hits and n_relevant are misaligned (or a
    # list repeats an item); either way every metric dividing by n_relevant would be wrong.
    bad = np.flatnonzero(hits.sum(axis=1) > arr)
    if bad.size:
        raise DataError(
            f"hits has more hits than n_relevant allows for {bad.size} user row(s) "
            f"(first: row {int(bad[0])}); are the rows aligned and the lists free of repeats?"
        )
    return arr.astype(np.int64, copy=False)


def _safe_divide(num: FloatArray, den: npt.NDArray[Any]) -> FloatArray:
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --------------------------------------------------------------------------------------------
# Hits
# --------------------------------------------------------------------------------------------


def count_relevant(relevant: Any) -> npt.NDArray[np.int64]:
    """Count the relevant items of each user, ignoring explicitly stored zeros.

    Counting the same way :func:`hits_matrix` matches keeps recall at most 1 even when the
    sparse matrix carries explicit zeros.

    Args:
        relevant: Scipy sparse matrix ``(n_users, n_items)``; a nonzero marks a relevant item.

    Returns:
        ``(n_users,)`` int64 array of relevant-item counts.

    Raises:
        DataError: If ``relevant`` is not a 2-D scipy sparse matrix.
    """
    rel = _as_csr(relevant)
    row_of = np.repeat(np.arange(rel.shape[0], dtype=np.int64), np.diff(rel.indptr))
    counts: npt.NDArray[np.int64] = np.bincount(
        row_of[rel.data != 0], minlength=rel.shape[0]
    ).astype(np.int64)
    return counts


def hits_matrix(topk: IntArray, relevant: Any) -> BoolArray:
    """Mark which recommended items are relevant.

    Each valid cell ``(u, item)`` becomes the key ``u * n_items + item``; the stored nonzeros of
    ``relevant`` become keys the same way, already sorted in CSR order, and one
    ``np.searchsorted`` answers all cells at once. No Python loop runs over users.

    A repeated item in one list is a hit at every position it occupies.

    Args:
        topk: ``(n_users, k)`` integer item indices, best first; ``-1`` is padding.
        relevant: Scipy sparse matrix ``(n_users, n_items)``; a nonzero marks a relevant item.
            Any sparse format is accepted; CSR avoids a conversion.

    Returns:
        ``(n_users, k)`` boolean array; ``True`` where the item at that rank is relevant.
        Padding cells are always ``False``.

    Raises:
        DataError: If ``topk`` is not a 2-D integer array, holds values below ``-1`` or indices
            beyond ``n_items``, if ``relevant`` is not sparse, or if the row counts disagree.
    """
    top = _as_topk(topk)
    rel = _as_csr(relevant)
    n_users, n_items = rel.shape
    if top.shape[0] != n_users:
        raise DataError(
            f"topk has {top.shape[0]} user rows but relevant has {n_users}; "
            "row i of both must be the same user"
        )
    _check_items_in_range(top, n_items, "relevant")

    row_of = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(rel.indptr))
    keep = rel.data != 0
    keys = row_of[keep] * n_items + rel.indices[keep].astype(np.int64)
    # CSR with canonical (sorted) indices already yields ascending keys; check rather than trust
    # the has_sorted_indices flag, which users can set by hand.
    if keys.size > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
        keys.sort()

    valid = top >= 0
    rows = np.broadcast_to(np.arange(n_users, dtype=np.int64)[:, None], top.shape)
    query = rows[valid] * n_items + top[valid]
    pos = np.searchsorted(keys, query)
    found = np.zeros(query.shape, dtype=np.bool_)
    inside = pos < keys.size
    found[inside] = keys[pos[inside]] == query[inside]

    hits = np.zeros(top.shape, dtype=np.bool_)
    hits[valid] = found
    return hits


# --------------------------------------------------------------------------------------------
# Accuracy metrics over hits
# --------------------------------------------------------------------------------------------


def precision_at_k(hits: BoolArray) -> FloatArray:
    """Precision at k: the share of the k slots that hold a relevant item.

    The denominator is always k, also for users whose list was padded, because empty slots are
    a recommender's failure to fill the list, not a smaller list to be judged by.

    Args:
        hits: ``(n_users, k)`` boolean hit matrix.

    Returns:
        ``(n_users,)`` float64 precision values in ``[0, 1]``.

    Raises:
        DataError: If ``hits`` is not a 2-D boolean array with at least one column.
    """
    h = _as_hits(hits)
    result: FloatArray = h.sum(axis=1, dtype=np.float64) / h.shape[1]
    return result


def recall_at_k(hits: BoolArray, n_relevant: IntArray) -> FloatArray:
    """Recall at k: the share of a user's relevant items found in the top k.

    The denominator is the full ``n_relevant`` (not ``min(n_relevant, k)``), so a user with
    more relevant items than k cannot reach 1.0; users with no relevant items get 0.

    Args:
        hits: ``(n_users, k)`` boolean hit matrix.
        n_relevant: ``(n_users,)`` number of relevant items per user.

    Returns:
        ``(n_users,)`` float64 recall values in ``[0, 1]``.

    Raises:
        DataError: If the shapes disagree, counts are negative, or a row has more hits than
            relevant items.
    """
    h = _as_hits(hits)
    n_rel = _as_n_relevant(n_relevant, h)
    return _safe_divide(h.sum(axis=1, dtype=np.float64), n_rel)


def average_precision_at_k(hits: BoolArray, n_relevant: IntArray) -> FloatArray:
    """Average precision at k, the per-user term of MAP@k.

    ``AP = sum_j precision@(j+1) * hit_j / min(n_relevant, k)``; the ``min`` lets a perfect
    top-k list score 1.0 even when the user has more than k relevant items. Users with no
    relevant items get 0.

    Args:
        hits: ``(n_users, k)`` boolean hit matrix.
        n_relevant: ``(n_users,)`` number of relevant items per user.

    Returns:
        ``(n_users,)`` float64 average-precision values in ``[0, 1]``.

    Raises:
        DataError: If the shapes disagree, counts are negative, or a row has more hits than
            relevant items.
    """
    h = _as_hits(hits)
    n_rel = _as_n_relevant(n_relevant, h)
    k = h.shape[1]
    precision_at_rank = np.cumsum(h, axis=1, dtype=np.float64) / np.arange(1, k + 1)
    summed = np.where(h, precision_at_rank, 0.0).sum(axis=1)
    return _safe_divide(summed, np.minimum(n_rel, k))


def ndcg_at_k(hits: BoolArray, n_relevant: IntArray) -> FloatArray:
    """Normalised discounted cumulative gain at k with binary relevance.

    ``DCG = sum_j hit_j / log2(j + 2)`` over 0-based ranks j; the ideal DCG places
    ``min(n_relevant, k)`` hits at the top ranks. Users with no relevant items get 0.

    Args:
        hits: ``(n_users, k)`` boolean hit matrix.
        n_relevant: ``(n_users,)`` number of relevant items per user.

    Returns:
        ``(n_users,)`` float64 NDCG values in ``[0, 1]``.

    Raises:
        DataError: If the shapes disagree, counts are negative, or a row has more hits than
            relevant items.
    """
    h = _as_hits(hits)
    n_rel = _as_n_relevant(n_relevant, h)
    k = h.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = h.astype(np.float64) @ discounts
    # Prefix sums of the discounts give every possible ideal DCG; index 0 (no relevant items)
    # is 0 and is left at 0 by _safe_divide.
    ideal_by_count = np.concatenate(([0.0], np.cumsum(discounts)))
    idcg = ideal_by_count[np.minimum(n_rel, k)]
    return _safe_divide(dcg, idcg)


def hit_rate_at_k(hits: BoolArray) -> FloatArray:
    """Hit rate at k: 1.0 if any of the top k items is relevant, else 0.0.

    Args:
        hits: ``(n_users, k)`` boolean hit matrix.

    Returns:
        ``(n_users,)`` float64 array of 0.0 and 1.0.

    Raises:
        DataError: If ``hits`` is not a 2-D boolean array with at least one column.
    """
    h = _as_hits(hits)
    result = np.zeros(h.shape[0], dtype=np.float64)
    result[h.any(axis=1)] = 1.0
    return result


def reciprocal_rank_at_k(hits: BoolArray) -> FloatArray:
    """Reciprocal rank at k, the per-user term of MRR@k.

    Args:
        hits: ``(n_users, k)`` boolean hit matrix.

    Returns:
        ``(n_users,)`` float64 values ``1 / rank`` of the first hit (1-based), 0 if no hit.

    Raises:
        DataError: If ``hits`` is not a 2-D boolean array with at least one column.
    """
    h = _as_hits(hits)
    # argmax on bool returns the first True; rows without one return 0 and are masked out.
    first = np.argmax(h, axis=1)
    result = np.zeros(h.shape[0], dtype=np.float64)
    found = h.any(axis=1)
    result[found] = 1.0 / (first[found] + 1.0)
    return result


# --------------------------------------------------------------------------------------------
# Beyond-accuracy metrics over top-k lists
# --------------------------------------------------------------------------------------------


def catalog_coverage(topk: IntArray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's list.

    Args:
        topk: ``(n_users, k)`` integer item indices; ``-1`` is padding and is ignored.
        n_items: Size of the catalogue.

    Returns:
        Distinct recommended items divided by ``n_items``, in ``[0, 1]``.

    Raises:
        DataError: If ``n_items`` is not positive, or ``topk`` is malformed or holds indices
            ``>= n_items``.
    """
    if n_items <= 0:
        raise DataError(f"n_items must be positive; got {n_items}")
    top = _as_topk(topk)
    _check_items_in_range(top, n_items, "n_items")
    # bincount over the catalogue is linear, where np.unique would sort all n_users * k cells.
    seen = np.bincount(top[top >= 0], minlength=n_items)
    return float(np.count_nonzero(seen)) / n_items


def _unit_rows_dense(vectors: npt.NDArray[Any]) -> FloatArray:
    mat = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(mat, axis=1)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    unit: FloatArray = mat * inv[:, None]
    return unit


def _unit_rows_sparse(vectors: Any) -> Any:
    mat = sp.csr_matrix(vectors, dtype=np.float64)
    norms = np.sqrt(np.asarray(mat.multiply(mat).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv) @ mat)


def intra_list_diversity(
    topk: IntArray,
    item_vectors: npt.NDArray[Any] | Any,
    *,
    chunk_size: int | None = None,
) -> FloatArray:
    """Intra-list diversity: 1 minus the mean pairwise cosine similarity within each list.

    With unit rows ``v_i``, the sum of cosine similarities over ordered pairs ``i != j`` equals
    ``||sum_i v_i||^2 - sum_i ||v_i||^2``, so only the per-user sum vector is needed and memory
    grows with ``k * d`` per user, never ``k * k * d``. Zero vectors normalise to zero and thus
    have similarity 0 with everything; they still count as list members. Dense similarity can be
    negative, so values lie in ``[0, 2]``.

    Args:
        topk: ``(n_users, k)`` integer item indices; ``-1`` is padding and is ignored.
        item_vectors: ``(n_items, d)`` dense array or scipy sparse matrix, one row per item
            (e.g. genre one-hot rows, embeddings, or item columns of the interaction matrix).
        chunk_size: Users processed per chunk. Defaults to a size that keeps the dense gather
            near 256 MiB, and to 4096 users for sparse input.

    Returns:
        ``(n_users,)`` float64 diversity values; NaN for users with fewer than 2 valid items.

    Raises:
        DataError: If ``topk`` is malformed, ``item_vectors`` is not 2-D, an index is beyond its
            rows, or ``chunk_size`` is not positive.
    """
    top = _as_topk(topk)
    sparse = sp.issparse(item_vectors)
    shape = item_vectors.shape if sparse else np.shape(item_vectors)
    if len(shape) != 2:
        raise DataError(f"item_vectors must be 2-D (n_items, d); got shape {shape}")
    n_items, dim = int(shape[0]), int(shape[1])
    _check_items_in_range(top, n_items, "item_vectors")
    if chunk_size is not None and chunk_size <= 0:
        raise DataError(f"chunk_size must be positive; got {chunk_size}")

    n_users, k = top.shape
    valid = top >= 0
    n_valid = valid.sum(axis=1)
    sum_sq = np.zeros(n_users, dtype=np.float64)
    self_sq = np.zeros(n_users, dtype=np.float64)

    if sparse:
        unit_s = _unit_rows_sparse(item_vectors)
        row_sq = np.asarray(unit_s.multiply(unit_s).sum(axis=1)).ravel()
        step = chunk_size or 4096
        for start in range(0, n_users, step):
            block, mask = top[start : start + step], valid[start : start + step]
            n_block = block.shape[0]
            rows = np.broadcast_to(np.arange(n_block)[:, None], block.shape)[mask]
            # Duplicate (row, item) pairs are summed by the COO -> CSR conversion, so a repeated
            # item weighs twice, as it would as two separate list members.
            picks = sp.csr_matrix(
                (np.ones(rows.size), (rows, block[mask])), shape=(n_block, n_items)
            )
            summed = picks @ unit_s
            end = start + n_block
            sum_sq[start:end] = np.asarray(summed.multiply(summed).sum(axis=1)).ravel()
            self_sq[start:end] = picks @ row_sq
    else:
        unit = _unit_rows_dense(np.asarray(item_vectors))
        # An appended zero row lets padding (-1) index it directly: it adds nothing to the sums.
        padded = np.vstack([unit, np.zeros((1, dim))])
        padded_sq = np.einsum("ij,ij->i", padded, padded)
        step = chunk_size or max(1, _DENSE_GATHER_BUDGET // max(1, k * dim))
        for start in range(0, n_users, step):
            block = top[start : start + step]
            summed_d = padded[block].sum(axis=1)
            end = start + block.shape[0]
            sum_sq[start:end] = np.einsum("ij,ij->i", summed_d, summed_d)
            self_sq[start:end] = padded_sq[block].sum(axis=1)

    pairs = n_valid * (n_valid - 1.0)
    result = np.full(n_users, np.nan, dtype=np.float64)
    defined = n_valid >= 2
    result[defined] = 1.0 - (sum_sq[defined] - self_sq[defined]) / pairs[defined]
    return result


def novelty(topk: IntArray, item_popularity: npt.ArrayLike, n_users: int) -> FloatArray:
    """Mean self-information of each user's recommended items.

    Item ``i`` carries ``-log2(p_i)`` bits with ``p_i = item_popularity[i] / n_users``. An item
    no training user interacted with has ``p_i = 0`` and infinite information; it is scored as if
    one user had interacted with it (``p_i = 1 / n_users``), the most novel finite value, so a
    single cold item cannot make a user's mean infinite.

    Args:
        topk: ``(n_users_eval, k)`` integer item indices; ``-1`` is padding and is ignored.
        item_popularity: ``(n_items,)`` number of (training) users who interacted with each item.
        n_users: Number of users the popularity was counted over; each popularity must be at
            most this.

    Returns:
        ``(n_users_eval,)`` float64 mean self-information in bits; NaN for users with no valid
        items.

    Raises:
        DataError: If ``n_users`` is not positive, ``item_popularity`` is not 1-D, is negative
            or exceeds ``n_users``, or ``topk`` is malformed or indexes beyond it.
    """
    if n_users <= 0:
        raise DataError(f"n_users must be positive; got {n_users}")
    pop = np.asarray(item_popularity, dtype=np.float64)
    if pop.ndim != 1:
        raise DataError(f"item_popularity must be 1-D (n_items,); got shape {pop.shape}")
    if pop.size and (float(pop.min()) < 0 or float(pop.max()) > n_users):
        raise DataError(
            f"item_popularity must lie in [0, n_users={n_users}] (user counts per item); "
            f"got values in [{float(pop.min())}, {float(pop.max())}]"
        )
    top = _as_topk(topk)
    _check_items_in_range(top, pop.size, "item_popularity")

    prob = np.maximum(pop, 1.0) / n_users
    # Appended 0 bits let padding (-1) index the table directly without adding information.
    info = np.append(-np.log2(prob), 0.0)
    n_valid = (top >= 0).sum(axis=1)
    total = info[top].sum(axis=1)
    result = np.full(top.shape[0], np.nan, dtype=np.float64)
    defined = n_valid > 0
    result[defined] = total[defined] / n_valid[defined]
    return result


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def _precision(hits: BoolArray, n_relevant: IntArray) -> FloatArray:
    del n_relevant  # precision divides by k, not by the relevant count
    return precision_at_k(hits)


def _hit_rate(hits: BoolArray, n_relevant: IntArray) -> FloatArray:
    del n_relevant  # a hit is a hit however many relevant items exist
    return hit_rate_at_k(hits)


def _reciprocal_rank(hits: BoolArray, n_relevant: IntArray) -> FloatArray:
    del n_relevant  # only the first hit's rank matters
    return reciprocal_rank_at_k(hits)


METRICS: dict[str, MetricFn] = {
    "precision": _precision,
    "recall": recall_at_k,
    "map": average_precision_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": _hit_rate,
    "mrr": _reciprocal_rank,
}
"""Accuracy metrics by short name, each ``(hits, n_relevant) -> (n_users,) float64``."""


# --------------------------------------------------------------------------------------------
# Comparing two models on the same users
# --------------------------------------------------------------------------------------------

# Resample indices drawn at once by paired_bootstrap (4 Mi int64 = 32 MiB), so that many
# resamples of many users never materialise together.
_BOOTSTRAP_CHUNK = 1 << 22


@dataclass(frozen=True)
class BootstrapInterval:
    """A bootstrap interval of the mean per-user difference between two models.

    Attributes:
        mean: The observed mean difference (first model minus second).
        low: Lower end of the interval.
        high: Upper end of the interval.
        confidence: Its two-sided confidence (0.95: the 2.5th and 97.5th percentiles).
        samples: Bootstrap resamples drawn.
        users: Users the difference was taken over (pairs with a NaN are left out).
    """

    mean: float
    low: float
    high: float
    confidence: float
    samples: int
    users: int


def paired_bootstrap(
    first: npt.ArrayLike,
    second: npt.ArrayLike,
    *,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile bootstrap interval of the mean of ``first - second`` over paired users.

    Row ``i`` of both arrays is the same user scored by two models on the same held-out
    data, so the difference is taken per user before resampling (a paired test: the
    variation between users, much larger than that between the models, cancels out).
    Users are resampled with replacement ``samples`` times; the interval holds the central
    ``confidence`` share of the resampled means.

    Args:
        first: Per-user metric of one model (e.g. a candidate), ``(n_users,)``.
        second: Per-user metric of the other (e.g. the model serving), same users in the
            same order.
        samples: Resamples to draw.
        confidence: Two-sided confidence of the interval, in (0, 1).
        seed: Seed of the resampling: the same inputs and seed give the same interval.

    Returns:
        The observed mean difference and its interval.

    Raises:
        DataError: The arrays differ in shape or are not 1-D, no user has both values, or
            ``samples`` / ``confidence`` are out of range.
    """
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise DataError(
            f"paired values must be two 1-D arrays of the same users; got shapes {a.shape} "
            f"and {b.shape}"
        )
    if samples < 1:
        raise DataError(f"samples must be at least 1 (got {samples})")
    if not 0 < confidence < 1:
        raise DataError(f"confidence must be between 0 and 1 (got {confidence})")
    diff = a - b
    diff = diff[~np.isnan(diff)]
    n = int(diff.size)
    if n == 0:
        raise DataError("no user has a value from both models; nothing to compare")
    rng = np.random.default_rng(seed)
    means = np.empty(samples, dtype=np.float64)
    rows = max(1, _BOOTSTRAP_CHUNK // n)
    for start in range(0, samples, rows):
        stop = min(samples, start + rows)
        picks = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return BootstrapInterval(
        mean=float(diff.mean()),
        low=float(low),
        high=float(high),
        confidence=float(confidence),
        samples=int(samples),
        users=n,
    )
