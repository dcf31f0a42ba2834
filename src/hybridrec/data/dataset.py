"""`InteractionData`: what a recommender is fit on — matrix, vocabularies, catalog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import scipy.sparse as sp

from hybridrec.data.matrix import interaction_matrix
from hybridrec.data.vocab import Vocab
from hybridrec.errors import DataError

if TYPE_CHECKING:
    import polars as pl

__all__ = ["InteractionData", "TimestampSource"]

#: A timestamp matrix, None (no times), or what builds it (or None) on first read.
TimestampSource: TypeAlias = sp.csr_matrix | Callable[[], sp.csr_matrix | None] | None


class _Deferred:
    """A dataclass field that may be given a builder: called on the first read, then kept.

    A descriptor, so the dataclass ``__init__`` (and ``dataclasses.replace``) pass values
    through `__set__`, and a read goes through `__get__`.
    """

    def __init__(self, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, objtype: Any = None) -> sp.csr_matrix | None:
        if obj is None:
            return None  # the field's default
        value = obj.__dict__[self.slot]
        if callable(value):
            value = value()
            obj.__dict__[self.slot] = value
        return value

    def __set__(self, obj: Any, value: TimestampSource) -> None:
        obj.__dict__[self.slot] = value


@dataclass(frozen=True)
class InteractionData:
    """Training interactions in the form models consume.

    Attributes:
        matrix: users × items float32 CSR of implicit weights (duplicates summed).
        users: Row vocabulary.
        items: Column vocabulary (items with at least one training interaction).
        timestamps: Same shape as ``matrix``: the latest timestamp of each (user, item),
            float64 seconds, or None when the data has no times. Given as a builder (a
            function of no arguments), it is built on first read: `from_frame` defers it,
            as few models read it and at scale it costs as much as ``matrix``.
        items_table: The item catalog (canonical items table) when one was loaded.
        events: The interactions table the matrix was built from, event by event, for
            models that need what the cell sums lose (time windows over repeated events).
        users_table: User attributes (``user_id`` plus attribute columns) when loaded; it
            may hold users with no interaction (the two-tower model answers them).
    """

    matrix: sp.csr_matrix
    users: Vocab
    items: Vocab
    timestamps: _Deferred = _Deferred("timestamps")
    items_table: pl.DataFrame | None = None
    events: pl.DataFrame | None = None
    users_table: pl.DataFrame | None = None

    @property
    def timestamps_built(self) -> bool:
        """Whether `timestamps` is at hand (given as a matrix or None, or read before)."""
        return not callable(self.__dict__["_timestamps"])

    @classmethod
    def from_frame(
        cls,
        df: pl.DataFrame,
        *,
        items_table: pl.DataFrame | None = None,
        users: Vocab | None = None,
        items: Vocab | None = None,
        users_table: pl.DataFrame | None = None,
    ) -> InteractionData:
        """Build from a canonical interactions table (the timestamp matrix on first read).

        Args:
            df: Canonical interactions (already implicit).
            items_table: Optional catalog to keep alongside.
            users: Fixed user vocabulary (default: the users in ``df``).
            items: Fixed item vocabulary (default: the items in ``df``).
            users_table: Optional user attributes to keep alongside.
        """
        if df.height == 0:
            raise DataError("no training interactions")
        # Distinct ids first: the vocabulary then sorts thousands of ids, not every row.
        users = users or Vocab(df["user_id"].unique().to_numpy(), kind="user")
        items = items or Vocab(df["item_id"].unique().to_numpy(), kind="item")
        matrix = interaction_matrix(df, users, items)

        def timestamps() -> sp.csr_matrix | None:
            if df["timestamp"].null_count() == df.height:
                return None
            return interaction_matrix(df, users, items, column="timestamp", aggregate="max")

        return cls(matrix, users, items, timestamps, items_table, df, users_table)

    @property
    def shape(self) -> tuple[int, int]:
        """(number of users, number of items)."""
        return (len(self.users), len(self.items))

    def history_lengths(self) -> np.ndarray:
        """Number of distinct training items per user, in user-index order."""
        return np.diff(self.matrix.indptr)
