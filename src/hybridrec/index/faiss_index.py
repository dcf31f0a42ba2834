"""`VectorIndex`: FAISS inner-product search, exact or approximate, that pickles as numpy.

Vectors are expected L2-normalized, so inner product is cosine similarity. ``kind``:

- ``flat``: exact search (``IndexFlatIP``); no training, every query scans every vector.
- ``ivf``: inverted lists (``IVF<nlist>,Flat``): k-means cells, a query scans ``nprobe`` of
  them. Builds fast; new vectors go to their nearest cell without retraining.
- ``hnsw``: a graph (``HNSW<M>,Flat``); no training, slower to build, ``ef_search`` trades
  speed for recall. New vectors are linked into the graph.
- ``auto``: ``flat`` below ``threshold`` vectors, else ``approximate`` (``ivf`` by default).

Persistence: `save`/`load` use FAISS's own writer; `to_array`/`from_array` give the same bytes
as a numpy uint8 array, which is how models keep an index in their pickled state.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hybridrec.errors import ConfigError, DataError

__all__ = ["IndexKind", "IndexParams", "VectorIndex", "recall_of"]

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
_KINDS = ("auto", "flat", "ivf", "hnsw")
# FAISS pads missing results with -FLT_MAX for inner-product indexes.
_FAISS_PAD = -3.0e38


def recall_of(found: NDArray[np.int64], exact: NDArray[np.int64]) -> float:
    """Share of ``exact`` (each query's true top k ids, n × k) that ``found`` holds (-1: none)."""
    hits = sum(np.intersect1d(e, f[f >= 0]).size for e, f in zip(exact, found, strict=True))
    return float(hits / max(exact.size, 1))


@dataclass(frozen=True)
class IndexParams:
    """How to build and search an index (see the module docstring for the kinds).

    Attributes:
        kind: ``auto``, ``flat``, ``ivf`` or ``hnsw``.
        threshold: With ``auto``: below this many vectors the index is exact.
        approximate: The approximate kind ``auto`` picks at or above the threshold.
        nlist: IVF cells; None: ``4·√n``, at most n/39 (FAISS wants 39 points per cell).
        nprobe: IVF cells scanned per query; None: ``max(8, nlist/64)``.
        train_size: IVF: at most this many vectors train k-means (a random sample).
        hnsw_m: HNSW links per node.
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW query-time beam width.
        seed: Random seed for the k-means sample and initialization.
    """

    kind: IndexKind = "auto"
    threshold: int = 100_000
    approximate: Literal["ivf", "hnsw"] = "ivf"
    nlist: int | None = None
    nprobe: int | None = None
    train_size: int = 200_000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"index kind must be one of {', '.join(_KINDS)} (got {self.kind!r})")
        if self.approximate not in ("ivf", "hnsw"):
            raise ConfigError(
                f"approximate index must be 'ivf' or 'hnsw' (got {self.approximate!r})"
            )
        for name in ("threshold", "train_size", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"index {name} must be positive (got {getattr(self, name)})")
        for name in ("nlist", "nprobe"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"index {name} must be positive (got {value})")

    def resolve(self, n: int) -> Literal["flat", "ivf", "hnsw"]:
        """The concrete kind for ``n`` vectors."""
        if self.kind == "auto":
            return "flat" if n < self.threshold else self.approximate
        return self.kind


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "vector indexes need faiss (pip install 'hybridrec[content]' or faiss-cpu)"
        ) from None
    return faiss


def _as_matrix(x: NDArray[Any], dim: int | None, what: str) -> NDArray[np.float32]:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise DataError(f"{what} must be a 2-d array (got shape {arr.shape})")
    if dim is not None and arr.shape[1] != dim:
        raise DataError(f"{what} have dimension {arr.shape[1]}; the index has {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{what} contain NaN or infinite values")
    return arr


class VectorIndex:
    """Inner-product nearest-neighbour search over vectors with ids 0..n-1 (insertion order).

    Build with `build`; grow with `add` (no rebuild); query with `search`.
    """

    def __init__(self, index: Any, kind: Literal["flat", "ivf", "hnsw"], params: IndexParams):
        self._index = index
        self.kind = kind
        self.params = params
        self._apply_search_params()

    # ---- building -------------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: NDArray[Any], params: IndexParams | None = None) -> VectorIndex:
        """Build an index over ``vectors`` (n × d, L2-normalized for cosine similarity).

        Raises:
            DataError: The vectors are not a finite 2-d array or are empty.
        """
        params = params or IndexParams()
        x = _as_matrix(vectors, None, "vectors")
        n, d = x.shape
        if d == 0:
            raise DataError("cannot index vectors of dimension 0")
        faiss = _faiss()
        kind = params.resolve(n)
        if kind == "ivf" and n == 0:
            raise DataError("an IVF index needs vectors to train on")
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = params.ef_construction
        else:
            nlist = params.nlist or int(np.clip(4 * np.sqrt(n), 1, max(1, n // 39)))
            nlist = min(nlist, n)
            params = replace(params, nlist=nlist)
            index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(params.seed)
            train = (
                x
                if n <= params.train_size
                else x[np.sort(rng.choice(n, params.train_size, replace=False))]
            )
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.seed = params.seed
            # Fewer points per cell than FAISS likes only warns; keep the log quiet.
            ivf.cp.min_points_per_centroid = 1
            ivf.verbose = False
            index.train(train)
        out = cls(index, kind, params)
        if n:
            out.add(x)
        return out

    def _apply_search_params(self) -> None:
        faiss = _faiss()
        if self.kind == "ivf":
            ivf = faiss.extract_index_ivf(self._index)
            nprobe = self.params.nprobe or max(8, int(ivf.nlist) // 64)
            ivf.nprobe = min(nprobe, int(ivf.nlist))
        elif self.kind == "hnsw":
            faiss.downcast_index(self._index).hnsw.efSearch = self.params.ef_search

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the query-time speed/recall trade-off (IVF ``nprobe``, HNSW ``ef_search``)."""
        changes: dict[str, Any] = {}
        if nprobe is not None:
            changes["nprobe"] = nprobe
        if ef_search is not None:
            changes["ef_search"] = ef_search
        self.params = replace(self.params, **changes)
        self._apply_search_params()

    def recall(self, queries: NDArray[Any], exact: NDArray[np.int64]) -> float:
        """Share of ``exact`` (each query's true top k ids, n × k) this index finds in its k."""
        k = exact.shape[1]
        return recall_of(self.search(queries, k)[1] if k else np.zeros_like(exact), exact)

    def calibrate(
        self, vectors: NDArray[Any], queries: NDArray[Any], k: int = 100, target: float = 0.98
    ) -> float:
        """Widen the search until recall@k of exact search reaches ``target``.

        IVF ``nprobe`` or HNSW ``ef_search`` doubles until the index finds ``target`` of
        each query's exact top k over ``vectors`` (the indexed ones). The queries should
        look like the real ones (user vectors for an item index); a flat index is exact
        already. Returns the recall reached (the search stays at the widest setting tried
        when the target is out of reach).
        """
        if self.kind == "flat" or len(self) == 0 or len(queries) == 0:
            return 1.0
        x = _as_matrix(vectors, self.dim, "vectors")
        q = _as_matrix(queries, self.dim, "queries")
        k = min(k, x.shape[0])
        exact = np.argpartition(-(q @ x.T), k - 1, axis=1)[:, :k]
        got = self.recall(q, exact)
        while got < target:
            if self.kind == "ivf":
                nlist = int(_faiss().extract_index_ivf(self._index).nlist)
                now = int(_faiss().extract_index_ivf(self._index).nprobe)
                if now >= nlist:
                    break
                self.set_search_params(nprobe=min(nlist, now * 2))
            else:
                if self.params.ef_search >= 8 * max(k, 64):
                    break
                self.set_search_params(ef_search=self.params.ef_search * 2)
            got = self.recall(q, exact)
        return got

    # ---- using ----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._index.d)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, n={len(self)}, dim={self.dim})"

    def add(self, vectors: NDArray[Any]) -> NDArray[np.int64]:
        """Add vectors without rebuilding; returns their ids (continuing from `len`)."""
        x = _as_matrix(vectors, self.dim, "vectors")
        start = len(self)
        if x.shape[0]:
            self._index.add(x)
        return np.arange(start, start + x.shape[0], dtype=np.int64)

    def search(
        self, queries: NDArray[Any], k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The ``k`` best ids per query by inner product, best first.

        Returns:
            ``(scores, ids)``, both (n_queries × k); rows with fewer hits are padded with
            ``-inf`` scores and ``-1`` ids.
        """
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k <= 0:
            raise ConfigError(f"k must be a positive integer (got {k!r})")
        q = _as_matrix(queries, self.dim, "queries")
        if q.shape[0] == 0 or len(self) == 0:
            return (
                np.full((q.shape[0], k), -np.inf, np.float32),
                np.full((q.shape[0], k), -1, np.int64),
            )
        scores, ids = self._index.search(q, int(k))
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        pad = (ids < 0) | (scores <= _FAISS_PAD)
        scores[pad] = -np.inf
        ids[pad] = -1
        return scores, ids

    def reconstruct(self) -> NDArray[np.float32]:
        """All stored vectors, in id order (flat and HNSW; IVF needs a direct map)."""
        if self.kind == "ivf":
            _faiss().extract_index_ivf(self._index).make_direct_map()
        return np.asarray(self._index.reconstruct_n(0, len(self)), dtype=np.float32)

    # ---- persistence ----------------------------------------------------------------------

    def to_array(self) -> NDArray[np.uint8]:
        """The index as FAISS's serialized bytes in a numpy uint8 array."""
        return np.asarray(_faiss().serialize_index(self._index), dtype=np.uint8)

    @classmethod
    def from_array(cls, data: NDArray[np.uint8], params: IndexParams | None = None) -> VectorIndex:
        """Rebuild an index from `to_array` output."""
        faiss = _faiss()
        try:
            index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise DataError(f"not a serialized FAISS index ({_first_line(exc)})") from None
        return cls._wrap(index, params)

    @classmethod
    def _wrap(cls, index: Any, params: IndexParams | None) -> VectorIndex:
        faiss = _faiss()
        down = faiss.downcast_index(index)
        if down is not index and index.thisown:
            # The downcast wrapper does not own the C++ object; hand ownership over so the
            # index lives as long as the wrapper we keep.
            index.thisown = False
            down.thisown = True
        index = down
        if isinstance(index, faiss.IndexFlat):
            kind: Literal["flat", "ivf", "hnsw"] = "flat"
        elif isinstance(index, faiss.IndexHNSW):
            kind = "hnsw"
        elif isinstance(index, faiss.IndexIVF):
            kind = "ivf"
        else:
            raise DataError(f"unsupported FAISS index type {type(index).__name__}")
        if params is None:
            if kind == "ivf":
                ivf = faiss.extract_index_ivf(index)
                params = IndexParams(kind="ivf", nlist=int(ivf.nlist), nprobe=int(ivf.nprobe))
            elif kind == "hnsw":
                params = IndexParams(kind="hnsw", ef_search=int(index.hnsw.efSearch))
            else:
                params = IndexParams(kind="flat")
        return cls(index, kind, params)

    def save(self, path: str | Path) -> Path:
        """Write the index with FAISS's writer (temp file + rename, so never half-written)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            _faiss().write_index(self._index, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, params: IndexParams | None = None) -> VectorIndex:
        """Read an index written by `save` (or any FAISS flat / IVF / HNSW index file)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no index file there")
        try:
            index = _faiss().read_index(str(path))
        except RuntimeError as exc:
            raise DataError(f"{path}: not a FAISS index ({_first_line(exc)})") from None
        return cls._wrap(index, params)

    def params_dict(self) -> dict[str, Any]:
        """The build/search parameters as a plain dict."""
        return asdict(self.params)

    # Pickling goes through FAISS's serialization, so a model holding an index pickles.
    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.to_array(), "kind": self.kind, "params": asdict(self.params)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = VectorIndex.from_array(state["data"], IndexParams(**state["params"]))
        self.__dict__.update(other.__dict__)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
