"""ID vocabularies: external ids at the edges, contiguous integer indices inside."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hybridrec.errors import UnknownIdError

__all__ = ["Vocab"]


class Vocab:
    """A sorted, immutable map between external ids (ints or strings) and indices 0..n-1.

    Ids are kept sorted so lookups are a vectorized binary search; index ``i`` is the i-th
    smallest id.

    Args:
        ids: External ids; duplicates are removed and the rest sorted.
        kind: What the ids name ("user", "item"), for error messages.
    """

    def __init__(self, ids: Iterable[Any] | NDArray[Any], kind: str = "item") -> None:
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind in "OU":
            arr = arr.astype(str)
        elif arr.size:
            raise TypeError(f"{kind} ids must be integers or strings, got dtype {arr.dtype}")
        else:
            arr = arr.astype(np.int64)
        self.ids: NDArray[Any] = np.unique(arr)
        self.kind = kind

    def __len__(self) -> int:
        return int(self.ids.size)

    def __contains__(self, external_id: object) -> bool:
        return bool(self.index([external_id], missing="mask")[0] >= 0)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab)
            and self.ids.dtype.kind == other.ids.dtype.kind
            and np.array_equal(self.ids, other.ids)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Vocab({self.kind}, n={len(self)})"

    @property
    def is_integer(self) -> bool:
        """Whether the external ids are integers (else strings)."""
        return self.ids.dtype.kind == "i"

    def coerce(self, values: Sequence[Any] | NDArray[Any]) -> NDArray[Any]:
        """Convert ids given as text (CLI, HTTP) to this vocabulary's id type when possible.

        Values that cannot be converted (text that is not an integer, out-of-range numbers)
        come back as an object array holding the original values, so `index` reports them
        as unknown instead of crashing.
        """
        arr = np.asarray(values)
        if self.is_integer:
            if arr.dtype.kind == "i":
                return arr.astype(np.int64)
            if arr.dtype.kind == "u":
                if arr.size and arr.max() > np.iinfo(np.int64).max:
                    return _mixed(arr)
                return arr.astype(np.int64)
            parsed = [_parse_int(v) for v in arr.ravel()]
            if all(p is not None for p in parsed):
                return np.asarray(parsed, dtype=np.int64).reshape(arr.shape)
            return _mixed(arr, parsed)
        if arr.dtype.kind != "U":
            return arr.astype(str)
        return arr

    def index(
        self, values: Sequence[Any] | NDArray[Any], *, missing: str = "raise"
    ) -> NDArray[np.int64]:
        """Map external ids to indices.

        Args:
            values: External ids.
            missing: ``"raise"`` to raise `UnknownIdError` for ids not in the vocabulary, or
                ``"mask"`` to return -1 for them.

        Returns:
            An int64 array of indices, same length as ``values``.
        """
        arr = self.coerce(values)
        if arr.size == 0:
            return np.empty(0, dtype=np.int64)
        # An object array from `coerce` holds ints where parsing worked, text elsewhere.
        comparable = np.ones(arr.shape, dtype=bool)
        keys = arr
        if arr.dtype.kind == "O":
            comparable = np.asarray([isinstance(v, int) for v in arr.ravel()]).reshape(arr.shape)
            keys = np.where(comparable, arr, 0).astype(np.int64)
        if len(self) == 0 or keys.dtype.kind != self.ids.dtype.kind:
            pos = np.zeros(arr.shape, dtype=np.int64)
            found = np.zeros(arr.shape, dtype=bool)
        else:
            pos = np.minimum(np.searchsorted(self.ids, keys), len(self) - 1).astype(np.int64)
            found = (self.ids[pos] == keys) & comparable
        if not found.all():
            if missing == "raise":
                raise UnknownIdError(self.kind, [_py(v) for v in arr[~found]])
            pos = np.where(found, pos, -1)
        return pos

    def lookup(self, indices: Sequence[int] | NDArray[np.integer[Any]]) -> NDArray[Any]:
        """Map indices back to external ids (no bounds forgiveness: -1 is an error)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.kind} index out of range 0..{len(self) - 1}")
        return self.ids[idx]

    def to_list(self) -> list[Any]:
        """External ids as plain Python values, in index order."""
        return [_py(v) for v in self.ids]


def _parse_int(value: Any) -> int | None:
    """``value`` as an int64-range integer, or None when it is not one."""
    try:
        out = int(str(value).strip())
    except (ValueError, OverflowError):
        return None
    return out if -(2**63) <= out < 2**63 else None


def _mixed(arr: NDArray[Any], parsed: list[int | None] | None = None) -> NDArray[Any]:
    """Object array: parsed ints where available, the original values elsewhere."""
    flat = arr.ravel()
    parsed = parsed or [None] * flat.size
    out = np.empty(flat.size, dtype=object)
    out[:] = [p if p is not None else _py(v) for p, v in zip(parsed, flat, strict=True)]
    return out.reshape(arr.shape)


def _py(value: Any) -> Any:
    """A numpy scalar as the plain Python value a user would type."""
    return value.item() if isinstance(value, np.generic) else value
