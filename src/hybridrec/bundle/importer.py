"""Building a pipeline from loose artifacts another system (or an older setup) left behind.

Files are found by name in one directory (the first extension present wins):

=====================  ==========================================================================
``user_factors.*``     ``.npy`` (rows in ``user_ids`` order), or a Spark ALS export: CSV/Parquet
``item_factors.*``     file or directory of part files with ``id`` and ``features`` columns
``*.npz``              `implicit`'s own saved models: ALS (``user_factors``/``item_factors``) or
                       item-kNN (``data``/``indices``/``indptr``/``shape``); also a scipy sparse
                       similarity saved with ``save_npz``
``similarity.*``       item × item similarity: ``.npy`` (dense) or ``.npz`` (sparse)
``user_ids.*``         ids in row order: ``.csv``/``.parquet`` (one column, or an ``index``
``item_ids.*``         column beside the id), ``.txt`` (one per line), ``.json``, ``.npy``;
                       ``.pkl`` only when pickles are explicitly allowed
``recommendations.*``  precomputed ``user_id,item_id[,rank][,score]`` (CSV/Parquet)
``interactions.*``     ``user_id,item_id[,weight]``: history for exclude-seen and popularity
``items.*``            the catalog (CSV/Parquet)
=====================  ==========================================================================
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from hybridrec.bundle.bundle import TopN
from hybridrec.data.loaders import read_table
from hybridrec.data.matrix import Weighter
from hybridrec.data.vocab import Vocab
from hybridrec.errors import DataError
from hybridrec.models.als import ALS
from hybridrec.models.base import Recommender
from hybridrec.models.itemknn import ItemKNN
from hybridrec.models.popularity import Popularity

__all__ = ["ImportResult", "find_loose", "import_loose"]

log = logging.getLogger(__name__)

_TABLE_EXT = (".parquet", ".pq", ".csv", ".tsv")
_ID_EXT = (".parquet", ".pq", ".csv", ".txt", ".json", ".npy")
_PICKLE_EXT = (".pkl", ".pickle")
_ID_NAMES = {
    "user": ("user_ids", "user_map", "user_mapping", "users"),
    "item": ("item_ids", "item_map", "item_mapping", "items_ids"),
}


@dataclass
class ImportResult:
    """Models and extras rebuilt from loose files, with notes on where each came from."""

    models: dict[str, Recommender]
    top_n: TopN | None = None
    items: pl.DataFrame | None = None
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def default_model(self) -> str:
        """ALS when present, else the first model."""
        return "als" if "als" in self.models else next(iter(self.models))


def _first(root: Path, stem: str, exts: tuple[str, ...]) -> Path | None:
    for ext in exts:
        path = root / f"{stem}{ext}"
        if path.is_file():
            return path
    directory = root / stem
    if directory.is_dir() and any(directory.glob("*.parquet")) | any(directory.glob("*.csv")):
        return directory
    return None


def find_loose(root: str | Path) -> dict[str, Path]:
    """The loose artifacts in ``root`` by role; empty when there are none."""
    root = Path(root)
    if not root.is_dir():
        return {}
    found: dict[str, Path] = {}
    for role, exts in (
        ("user_factors", (".npy", *_TABLE_EXT)),
        ("item_factors", (".npy", *_TABLE_EXT)),
        ("similarity", (".npy", ".npz")),
        ("recommendations", _TABLE_EXT),
        ("interactions", _TABLE_EXT),
        ("items", _TABLE_EXT),
    ):
        path = _first(root, role, exts)
        if path is not None:
            found[role] = path
    for kind, stems in _ID_NAMES.items():
        for stem in stems:
            path = _first(root, stem, _ID_EXT + _PICKLE_EXT)
            if path is not None and path.is_file():
                found[f"{kind}_ids"] = path
                break
    for npz in sorted(root.glob("*.npz")):
        if npz.stem == "similarity":
            continue
        with np.load(npz, allow_pickle=False) as data:
            keys = set(data.files)
        if {"user_factors", "item_factors"} <= keys:
            found.setdefault("implicit_als", npz)
        elif {"data", "indices", "indptr", "shape"} <= keys:
            found.setdefault("implicit_knn", npz)
    return found


# ---- reading pieces ---------------------------------------------------------------------


def _as_ids(values: Any, path: Path) -> NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{path}: ids must be one-dimensional (got shape {arr.shape})")
    if arr.dtype.kind == "O":
        try:
            return arr.astype(np.int64)
        except (TypeError, ValueError):
            return arr.astype(str)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        try:
            return arr.astype(np.int64)
        except ValueError:
            return arr
    raise DataError(f"{path}: ids must be integers or text (got {arr.dtype})")


def _ids_from_mapping(mapping: dict[Any, Any], path: Path) -> NDArray[Any]:
    """Row-ordered ids from ``{id: index}`` or ``{index: id}``."""
    n = len(mapping)
    keys, values = list(mapping), list(mapping.values())

    def is_positions(xs: list[Any]) -> bool:
        try:
            return sorted(int(x) for x in xs) == list(range(n))
        except (TypeError, ValueError):
            return False

    if is_positions(values):
        out = np.empty(n, dtype=object)
        for key, pos in mapping.items():
            out[int(pos)] = key
        return _as_ids(out, path)
    if is_positions(keys):
        return _as_ids(np.asarray([mapping[k] for k in sorted(keys, key=int)], dtype=object), path)
    raise DataError(f"{path}: a mapping must be id → row index 0..{n - 1} (or the reverse)")


def _read_ids(path: Path, kind: str, *, allow_pickle: bool) -> NDArray[Any]:
    suffix = path.suffix.lower()
    if suffix in _PICKLE_EXT:
        if not allow_pickle:
            raise DataError(
                f"{path}: a pickle can run code when loaded; pass --allow-pickle "
                "(allow_pickle=True) only if you trust it, or export the ids as CSV/JSON"
            )
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
        if isinstance(obj, dict):
            return _ids_from_mapping(obj, path)
        if hasattr(obj, "to_numpy"):
            obj = obj.to_numpy()
        return _as_ids(np.asarray(list(obj), dtype=object), path)
    if suffix == ".npy":
        return _as_ids(np.load(path, allow_pickle=False), path)
    if suffix == ".txt":
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        return _as_ids(np.asarray([ln for ln in lines if ln], dtype=object), path)
    if suffix == ".json":
        obj = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(obj, dict):
            return _ids_from_mapping(obj, path)
        return _as_ids(np.asarray(obj, dtype=object), path)
    df = read_table(path)
    id_cols = [c for c in (f"{kind}_id", "id", kind) if c in df.columns]
    if "index" in df.columns:
        df = df.sort("index")
        others = [c for c in df.columns if c != "index"]
        col = id_cols[0] if id_cols else others[0]
    else:
        col = id_cols[0] if id_cols else df.columns[0]
    return _as_ids(df[col].to_numpy(), path)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _read_spark_factors(path: Path) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """``id`` + ``features`` table (file or directory of part files) from Spark ALS."""
    if path.is_dir():
        parts = sorted(path.glob("*.parquet")) or sorted(path.glob("*.csv"))
        df = pl.concat([read_table(p) for p in parts], how="vertical_relaxed")
    else:
        df = read_table(path)
    missing = {"id", "features"} - set(df.columns)
    if missing:
        raise DataError(
            f"{path}: factor table needs columns id and features (missing: "
            f"{', '.join(sorted(missing))}; found: {', '.join(df.columns)})"
        )
    feats = df["features"]
    if feats.dtype == pl.String:
        rows = [[float(x) for x in _NUMBER.findall(v or "")] for v in feats.to_list()]
    else:
        rows = feats.to_list()
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise DataError(f"{path}: rows have different numbers of features ({sorted(lengths)})")
    matrix = np.asarray(rows, dtype=np.float64)
    return _as_ids(df["id"].to_numpy(), path), matrix


def _read_factors(
    path: Path, ids_path: Path | None, kind: str, allow_pickle: bool
) -> tuple[NDArray[Any], NDArray[Any]]:
    if path.suffix.lower() == ".npy":
        factors = np.load(path, allow_pickle=False)
        if factors.ndim != 2:
            raise DataError(f"{path}: factors must be 2-D (got shape {factors.shape})")
        if ids_path is None:
            raise DataError(
                f"{path}: .npy factors need {kind}_ids (csv/parquet/txt/json/npy) beside them"
            )
        ids = _read_ids(ids_path, kind, allow_pickle=allow_pickle)
        if ids.size != factors.shape[0]:
            raise DataError(
                f"{ids_path}: {ids.size} ids for {factors.shape[0]} rows of factors in {path}"
            )
        return ids, factors
    return _read_spark_factors(path)


def _vocab(ids: NDArray[Any], kind: str, path: Path) -> Vocab:
    vocab = Vocab(ids, kind=kind)
    if len(vocab) != ids.size:
        raise DataError(f"{path}: duplicate {kind} ids ({ids.size - len(vocab)} repeated)")
    return vocab


def _reorder(vocab: Vocab, ids: NDArray[Any], rows: NDArray[Any]) -> NDArray[Any]:
    """Rows of ``rows`` (in ``ids`` order) rearranged into vocabulary order."""
    out = np.empty_like(rows)
    out[vocab.index(ids)] = rows
    return out


def _read_pairs(
    path: Path, users: Vocab, items: Vocab
) -> tuple[pl.DataFrame, NDArray[np.int64], NDArray[np.int64]]:
    """A ``user_id,item_id,...`` table and its rows' user and item indices (-1: unknown)."""
    df = read_table(path)
    for col in ("user_id", "item_id"):
        if col not in df.columns:
            raise DataError(f"{path}: missing column {col!r} (found: {', '.join(df.columns)})")
    u = users.index(users.coerce(df["user_id"].to_numpy()), missing="mask")
    i = items.index(items.coerce(df["item_id"].to_numpy()), missing="mask")
    return df, u, i


def _interactions(path: Path, users: Vocab, items: Vocab, sources: dict[str, str]) -> sp.csr_matrix:
    df, u, i = _read_pairs(path, users, items)
    w = (
        df["weight"].cast(pl.Float32).fill_null(1.0).to_numpy()
        if "weight" in df.columns
        else np.ones(df.height, np.float32)
    )
    ok = (u >= 0) & (i >= 0)
    if not ok.all():
        log.warning("%s: %d rows name users/items without factors; skipped", path, (~ok).sum())
    m = sp.csr_matrix((w[ok], (u[ok], i[ok])), shape=(len(users), len(items)), dtype=np.float32)
    m.sum_duplicates()
    sources["interactions"] = f"{path.name} ({int(ok.sum())} rows)"
    return m


def _top_n(path: Path, model: str, users: Vocab, items: Vocab) -> TopN:
    df, u, i = _read_pairs(path, users, items)
    if "rank" in df.columns:
        order_key = df["rank"].cast(pl.Float64).to_numpy()
    elif "score" in df.columns:
        order_key = -df["score"].cast(pl.Float64).to_numpy()
    else:
        order_key = np.arange(df.height, dtype=np.float64)
    scores = (
        df["score"].cast(pl.Float32).to_numpy()
        if "score" in df.columns
        else -order_key.astype(np.float32)
    )
    ok = (u >= 0) & (i >= 0)
    if not ok.all():
        log.warning("%s: %d rows name unknown users/items; skipped", path, (~ok).sum())
    u, i, order_key, scores = u[ok], i[ok], order_key[ok], scores[ok]
    order = np.lexsort((order_key, u))
    u, i, scores = u[order], i[order], scores[order]
    counts = np.bincount(u, minlength=len(users))
    k = int(counts.max()) if counts.size else 0
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return TopN(model, max(k, 1), indptr, i.astype(np.int32), scores.astype(np.float32))


def _fitted(
    model: Recommender, users: Vocab, items: Vocab, user_items: sp.csr_matrix
) -> Recommender:
    model.users_, model.items_, model.user_items_ = users, items, user_items
    return model


# ---- the import ---------------------------------------------------------------------------


def import_loose(root: str | Path, *, allow_pickle: bool = False) -> ImportResult:
    """Rebuild models from the loose artifacts in ``root`` (see the module docstring).

    Raises:
        DataError: Nothing usable is there, or a file is malformed (the message names it).
    """
    root = Path(root)
    found = find_loose(root)
    sources: dict[str, str] = {}
    users = items = None
    user_f = item_f = None
    if "user_factors" in found and "item_factors" in found:
        uids, user_f = _read_factors(
            found["user_factors"], found.get("user_ids"), "user", allow_pickle
        )
        iids, item_f = _read_factors(
            found["item_factors"], found.get("item_ids"), "item", allow_pickle
        )
        sources["als"] = f"{found['user_factors'].name} + {found['item_factors'].name}"
    elif "implicit_als" in found:
        with np.load(found["implicit_als"], allow_pickle=False) as data:
            user_f, item_f = data["user_factors"], data["item_factors"]
        for kind in ("user", "item"):
            if f"{kind}_ids" not in found:
                raise DataError(
                    f"{found['implicit_als']}: implicit's model has no ids; put {kind}_ids "
                    "(csv/parquet/txt/json/npy) beside it"
                )
        uids = _read_ids(found["user_ids"], "user", allow_pickle=allow_pickle)
        iids = _read_ids(found["item_ids"], "item", allow_pickle=allow_pickle)
        for ids, f, what in ((uids, user_f, "user"), (iids, item_f, "item")):
            if ids.size != f.shape[0]:
                raise DataError(
                    f"{found[what + '_ids']}: {ids.size} ids for {f.shape[0]} {what} factor rows"
                )
        sources["als"] = found["implicit_als"].name
    if user_f is not None and item_f is not None:
        if user_f.shape[1] != item_f.shape[1]:
            raise DataError(
                f"{root}: user factors have {user_f.shape[1]} columns, item factors "
                f"{item_f.shape[1]}"
            )
        users = _vocab(uids, "user", root)
        items = _vocab(iids, "item", root)
        user_f, item_f = _reorder(users, uids, user_f), _reorder(items, iids, item_f)
    similarity: Any = None
    sim_path = found.get("similarity") or found.get("implicit_knn")
    if sim_path is not None:
        if sim_path.suffix.lower() == ".npy":
            similarity = np.load(sim_path, allow_pickle=False)
        else:
            with np.load(sim_path, allow_pickle=False) as data:
                similarity = sp.csr_matrix(
                    (data["data"], data["indices"], data["indptr"]), shape=tuple(data["shape"])
                )
        # Rows follow the item_ids file (else the item factors' order).
        if "item_ids" in found:
            iids = _read_ids(found["item_ids"], "item", allow_pickle=allow_pickle)
        elif items is None:
            raise DataError(f"{sim_path}: a similarity matrix needs item_ids beside it")
        if items is None:
            items = _vocab(iids, "item", found["item_ids"])
        elif len(items) != iids.size or not np.isin(iids, items.ids).all():
            raise DataError(f"{sim_path}: its item ids differ from the item factors' ids")
        n = len(items)
        if similarity.shape != (n, n):
            raise DataError(f"{sim_path}: shape {similarity.shape}, expected ({n}, {n}) items")
        perm = items.index(iids)
        if not np.array_equal(perm, np.arange(n)):
            inverse = np.argsort(perm)
            similarity = similarity[inverse][:, inverse]
        sources["itemknn"] = sim_path.name
    if items is None:
        raise DataError(
            f"{root}: no model artifacts found (looked for user_factors/item_factors, "
            "implicit .npz models, similarity.npy/.npz)"
        )
    if users is None:
        if "interactions" not in found:
            raise DataError(f"{root}: an item-only model needs interactions.* for its users")
        df = read_table(found["interactions"])
        users = Vocab(df["user_id"].to_numpy(), kind="user")
    user_items = (
        _interactions(found["interactions"], users, items, sources)
        if "interactions" in found
        else sp.csr_matrix((len(users), len(items)), dtype=np.float32)
    )
    models: dict[str, Recommender] = {}
    if user_f is not None and item_f is not None:
        als = ALS(factors=int(user_f.shape[1]), use_gpu=False)
        _fitted(als, users, items, user_items)
        als._set_state(
            {
                "user_factors": user_f,
                "item_factors": item_f,
                "weighter": Weighter("none").fit(user_items),
                "trained_on_gpu": False,
            }
        )
        models["als"] = als
    if similarity is not None:
        knn = _fitted(ItemKNN(), users, items, user_items)
        knn._set_state({"similarity": similarity})
        models["itemknn"] = knn
    if user_items.nnz:
        pop = _fitted(Popularity(), users, items, user_items)
        pop._set_state(
            {
                "item_scores": np.bincount(user_items.indices, minlength=len(items)).astype(
                    np.float32
                )
            }
        )
        models["popularity"] = pop
    result = ImportResult(models, sources=sources)
    if "recommendations" in found:
        result.top_n = _top_n(found["recommendations"], result.default_model, users, items)
        sources["top_n"] = f"{found['recommendations'].name} ({result.top_n.rows} rows)"
    if "items" in found:
        result.items = read_table(found["items"])
        sources["items"] = found["items"].name
    return result
