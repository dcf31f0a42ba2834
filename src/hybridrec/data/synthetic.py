"""Synthetic interactions: planted patterns for tests, large matrices for benchmarks."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

__all__ = ["planted_clusters", "random_catalog", "random_interactions", "random_matrix"]


def planted_clusters(
    *,
    n_users: int = 200,
    n_items: int = 60,
    n_clusters: int = 3,
    per_user: int = 8,
    noise: float = 0.0,
    seed: int = 0,
    start_time: int = 1_600_000_000,
) -> pl.DataFrame:
    """Users and items in disjoint clusters; each user interacts only within their cluster.

    A model that learned anything must recommend a user items of their own cluster: the
    planted pattern the contract tests check. Item ids are ``1000 + i`` and user ids
    ``i + 1`` so they never coincide with indices by accident. Items in a cluster are
    sampled with a popularity skew, so popularity and the personalized models disagree.

    Args:
        n_users: Number of users (assigned round-robin to clusters).
        n_items: Number of items (assigned round-robin to clusters).
        n_clusters: Number of clusters.
        per_user: Interactions per user.
        noise: Share of each user's interactions drawn from any cluster instead.
        seed: Random seed.
        start_time: Timestamp of the first interaction; each later one is a minute later.

    Returns:
        Canonical interactions with weights 1.0, distinct (user, item) pairs.
    """
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % n_clusters
    users, items = [], []
    for u in range(n_users):
        c = u % n_clusters
        own = np.flatnonzero(item_cluster == c)
        p = 1.0 / np.arange(1, own.size + 1)
        take = min(per_user, own.size)
        chosen = rng.choice(own, size=take, replace=False, p=p / p.sum())
        n_noise = round(noise * take)
        if n_noise:
            chosen[:n_noise] = rng.choice(n_items, size=n_noise, replace=False)
        chosen = np.unique(chosen)
        users.extend([u + 1] * chosen.size)
        items.extend((chosen + 1000).tolist())
    n = len(users)
    return pl.DataFrame(
        {
            "user_id": np.asarray(users, dtype=np.int64),
            "item_id": np.asarray(items, dtype=np.int64),
            "weight": np.ones(n),
            "timestamp": start_time + 60 * np.arange(n, dtype=np.int64),
            "event_type": ["interaction"] * n,
        }
    )


def _zipf(n: int, skew: float) -> NDArray[np.float64]:
    """Probabilities of ranks 1..n proportional to ``rank ** -skew``."""
    p = 1.0 / np.arange(1, n + 1) ** skew
    return np.asarray(p / p.sum(), dtype=np.float64)


def random_matrix(
    n_users: int,
    n_items: int,
    nnz: int,
    *,
    seed: int = 0,
    skew: float = 1.0,
    user_skew: float = 0.0,
) -> sp.csr_matrix:
    """A random users × items CSR of ones with Zipf-like item popularity, for benchmarks.

    Holds exactly ``nnz`` distinct cells: repeated draws are topped up until there are
    enough (``nnz`` must leave room: at most half the cells).

    Args:
        n_users: Rows.
        n_items: Columns.
        nnz: Distinct cells.
        seed: Random seed.
        skew: Zipf exponent of item popularity (item 0 the most popular).
        user_skew: Zipf exponent of user activity (0: every user equally active; else
            user 0 the most active), as real event logs have a long tail of light users.
    """
    if nnz > n_users * n_items // 2:
        raise ValueError(f"nnz={nnz} is too dense for {n_users}×{n_items}")
    rng = np.random.default_rng(seed)
    p = _zipf(n_items, skew)
    p_user = _zipf(n_users, user_skew) if user_skew else None
    keys = np.empty(0, dtype=np.int64)
    while keys.size < nnz:
        draw = int((nnz - keys.size) * 1.3) + 1000
        if p_user is None:
            rows = rng.integers(0, n_users, size=draw, dtype=np.int64)
        else:
            rows = rng.choice(n_users, size=draw, p=p_user)
        cols = rng.choice(n_items, size=draw, p=p)
        keys = np.unique(np.concatenate([keys, rows * n_items + cols]))
    keys = np.sort(rng.choice(keys, size=nnz, replace=False))
    m = sp.csr_matrix(
        (np.ones(nnz, dtype=np.float32), (keys // n_items, keys % n_items)),
        shape=(n_users, n_items),
    )
    m.sort_indices()
    return m


_WORDS = (
    "red",
    "blue",
    "green",
    "amber",
    "quiet",
    "loud",
    "small",
    "grand",
    "night",
    "morning",
    "river",
    "stone",
    "glass",
    "paper",
    "silver",
    "golden",
    "wild",
    "gentle",
    "rapid",
    "hidden",
    "open",
    "secret",
    "bright",
    "dark",
    "northern",
    "southern",
)


def random_catalog(n_items: int, *, n_categories: int = 40, seed: int = 0) -> pl.DataFrame:
    """An item catalog with ids ``0..n_items-1``: a title of three words and 1-3 categories.

    Items of the same category share title words more often, so content models find
    structure to learn from.
    """
    rng = np.random.default_rng(seed)
    words = np.asarray(_WORDS)
    cats = rng.integers(0, n_categories, size=(n_items, 3))
    n_cats = rng.integers(1, 4, size=n_items)
    first = words[cats[:, 0] % words.size]
    rest = words[rng.integers(0, words.size, size=(n_items, 2))]
    titles = [f"{a} {b} {c} {i}" for i, (a, (b, c)) in enumerate(zip(first, rest, strict=True))]
    categories = [
        [f"category {c}" for c in dict.fromkeys(row[:n].tolist())]
        for row, n in zip(cats, n_cats, strict=True)
    ]
    return pl.DataFrame(
        {"item_id": np.arange(n_items, dtype=np.int64), "title": titles, "categories": categories}
    )


def random_interactions(
    n_users: int,
    n_items: int,
    nnz: int,
    *,
    seed: int = 0,
    skew: float = 1.0,
    user_skew: float = 0.0,
    start_time: int = 1_600_000_000,
) -> pl.DataFrame:
    """`random_matrix` as a canonical interactions table (user ids from 1, item ids from 0).

    Timestamps increase within each user, so temporal splits have an order to follow.
    """
    m = random_matrix(n_users, n_items, nnz, seed=seed, skew=skew, user_skew=user_skew).tocoo()
    rng = np.random.default_rng(seed + 1)
    return pl.DataFrame(
        {
            "user_id": m.row.astype(np.int64) + 1,
            "item_id": m.col.astype(np.int64),
            "weight": np.ones(m.nnz),
            "timestamp": start_time + rng.integers(0, 86_400 * 365, size=m.nnz),
            "event_type": ["interaction"] * m.nnz,
        }
    )
