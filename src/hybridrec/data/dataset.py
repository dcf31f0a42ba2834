"""`InteractionData`: what a recommender is fit on — matrix, vocabularies, catalog."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from hybridrec.data.matrix import interaction_matrix
from hybridrec.data.vocab import Vocab
from hybridrec.errors import DataError

__all__ = ["InteractionData"]


@dataclass(frozen=True)
class InteractionData:
    """Training interactions in the form models consume.

    Attributes:
        matrix: users × items float32 CSR of implicit weights (duplicates summed).
        users: Row vocabulary.
        items: Column vocabulary (items with at least one training interaction).
        timestamps: Same shape as ``matrix``: the latest timestamp of each (user, item),
            float64 seconds, or None when the data has no times.
        items_table: The item catalog (canonical items table) when one was loaded.
        events: The interactions table the matrix was built from, event by event, for
            models that need what the cell sums lose (time windows over repeated events).
    """

    matrix: sp.csr_matrix
    users: Vocab
    items: Vocab
    timestamps: sp.csr_matrix | None = None
    items_table: pl.DataFrame | None = None
    events: pl.DataFrame | None = None

    @classmethod
    def from_frame(
        cls,
        df: pl.DataFrame,
        *,
        items_table: pl.DataFrame | None = None,
        users: Vocab | None = None,
        items: Vocab | None = None,
    ) -> InteractionData:
        """Build from a canonical interactions table.

        Args:
            df: Canonical interactions (already implicit).
            items_table: Optional catalog to keep alongside.
            users: Fixed user vocabulary (default: the users in ``df``).
            items: Fixed item vocabulary (default: the items in ``df``).
        """
        if df.height == 0:
            raise DataError("no training interactions")
        users = users or Vocab(df["user_id"].to_numpy(), kind="user")
        items = items or Vocab(df["item_id"].to_numpy(), kind="item")
        matrix = interaction_matrix(df, users, items)
        timestamps = None
        if df["timestamp"].null_count() < df.height:
            timestamps = interaction_matrix(df, users, items, column="timestamp", aggregate="max")
        return cls(matrix, users, items, timestamps, items_table, df)

    @property
    def shape(self) -> tuple[int, int]:
        """(number of users, number of items)."""
        return (len(self.users), len(self.items))

    def history_lengths(self) -> np.ndarray:
        """Number of distinct training items per user, in user-index order."""
        return np.diff(self.matrix.indptr)
