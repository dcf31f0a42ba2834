"""What recommenders answer with, and the rules and history they are asked with.

Numpy only (plus the vocabularies), so that an answer read from a bundle's precomputed
rows imports no model code; `hybridrec.models.base` re-exports every name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from hybridrec.data.vocab import Vocab

if TYPE_CHECKING:
    import polars as pl

__all__ = ["History", "ItemFilter", "Recommendations"]

History = Mapping[Any, Sequence[Any] | Mapping[Any, float]]


@dataclass(frozen=True)
class ItemFilter:
    """Business rules applied before ranking.

    Attributes:
        allow: If given, only these item ids may be recommended.
        deny: These item ids are never recommended.
    """

    allow: Sequence[Any] | None = None
    deny: Sequence[Any] | None = None

    def mask(self, items: Vocab) -> NDArray[np.bool_] | None:
        """Boolean mask over the item vocabulary (True = may be recommended), or None."""
        if self.allow is None and self.deny is None:
            return None
        keep = np.ones(len(items), dtype=bool)
        if self.allow is not None:
            keep[:] = False
            idx = items.index(list(self.allow), missing="mask")
            keep[idx[idx >= 0]] = True
        if self.deny is not None:
            idx = items.index(list(self.deny), missing="mask")
            keep[idx[idx >= 0]] = False
        return keep


@dataclass(frozen=True)
class Recommendations:
    """A batch of ranked lists.

    Attributes:
        user_ids: External ids of the query users (or items, for ``similar_items``), shape (n,).
        indices: Item indices, shape (n, k), best first; -1 pads rows with fewer than k items.
        scores: Scores aligned with ``indices``; -inf at padding.
        items: The item vocabulary the indices refer to.
    """

    user_ids: NDArray[Any]
    indices: NDArray[np.int64]
    scores: NDArray[np.float32]
    items: Vocab

    def __len__(self) -> int:
        return int(self.user_ids.size)

    def row(self, i: int) -> tuple[NDArray[Any], NDArray[np.float32]]:
        """External item ids and scores of row ``i``, padding removed."""
        valid = self.indices[i] >= 0
        return self.items.lookup(self.indices[i][valid]), self.scores[i][valid]

    def __iter__(self) -> Iterator[tuple[Any, NDArray[Any], NDArray[np.float32]]]:
        for i in range(len(self)):
            yield (self.user_ids[i], *self.row(i))

    def to_frame(self, id_column: str = "user_id") -> pl.DataFrame:
        """Long format: ``user_id, item_id, rank, score`` (rank from 1), padding dropped."""
        valid = self.indices >= 0
        rows, cols = np.nonzero(valid)
        ids = self.user_ids
        if ids.dtype.kind == "O":
            # Known integer ids next to new text ids: one column type, text.
            ids = ids.astype(str)
        import polars as pl

        return pl.DataFrame(
            {
                id_column: ids[rows],
                "item_id": self.items.lookup(self.indices[rows, cols]),
                "rank": (cols + 1).astype(np.int32),
                "score": self.scores[rows, cols].astype(np.float64),
            }
        )
