"""Shared fixtures: a small planted-cluster data set every model test can learn from.

In ``planted_clusters`` users and items fall into disjoint clusters and every user touches only
items of their own cluster: user ``u + 1`` is in cluster ``u % n_clusters`` and item
``1000 + i`` in cluster ``i % n_clusters``. `PlantedSpec` turns ids back into clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pytest

from hybridrec.data.dataset import InteractionData
from hybridrec.data.synthetic import planted_clusters


@dataclass(frozen=True)
class PlantedSpec:
    """The parameters of the `planted` fixture and the id → cluster maps they imply."""

    n_users: int = 240
    n_items: int = 60
    n_clusters: int = 3
    per_user: int = 10
    seed: int = 0

    def user_cluster(self, user_ids: Any) -> np.ndarray:
        return (np.asarray(user_ids, dtype=np.int64) - 1) % self.n_clusters

    def item_cluster(self, item_ids: Any) -> np.ndarray:
        return (np.asarray(item_ids, dtype=np.int64) - 1000) % self.n_clusters

    def items_of_cluster(self, c: int) -> list[int]:
        return [1000 + i for i in range(self.n_items) if i % self.n_clusters == c]

    def users_of_cluster(self, c: int) -> list[int]:
        return [u + 1 for u in range(self.n_users) if u % self.n_clusters == c]


@pytest.fixture(scope="session")
def planted_spec() -> PlantedSpec:
    return PlantedSpec()


@pytest.fixture(scope="session")
def planted(planted_spec: PlantedSpec) -> pl.DataFrame:
    """240 users, 60 items, 3 clusters, 10 interactions per user (seed 0)."""
    s = planted_spec
    return planted_clusters(
        n_users=s.n_users,
        n_items=s.n_items,
        n_clusters=s.n_clusters,
        per_user=s.per_user,
        seed=s.seed,
    )


@pytest.fixture(scope="session")
def planted_data(planted: pl.DataFrame) -> InteractionData:
    """`InteractionData` of `planted` (treat as read-only: it is shared by the session)."""
    return InteractionData.from_frame(planted)


@pytest.fixture(scope="session", autouse=True)
def _tracking_off() -> Any:
    """MLflow tracking off for the suite (tests/integration/test_tracking.py turns it on).

    Otherwise every ``train`` of the suite would write runs into ``~/.hybridrec/mlflow`` and
    spend seconds opening that store.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBRIDREC_TRACKING", "false")
        yield
