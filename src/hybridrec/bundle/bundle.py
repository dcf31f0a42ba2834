"""Bundles: writing a trained pipeline into a version directory and opening it again.

`write_bundle` groups the models by part (``cf`` or ``content``, from each class's
``bundle_part``), stores the vocabularies and training matrix a part's models share once,
and writes one joblib file per part. `Bundle.open` memory-maps the collaborative part
(start-up reads only what a request touches) and loads the content part on first use, once,
however many threads ask at once.

Hashes are checked before anything is read: every file whole at open, or with ``lazy``
(what `open_bundle` does) an uncompressed, memory-mapped part block by block — the blocks
the unpickler reads before it is unpickled, an array's blocks before the model or
precomputed rows that use it are built, and a known user's factor row before a factor
answer reads it; files without block hashes (compressed parts, the catalog, older bundles)
are still checked whole at open. Either way no byte is used unchecked; lazily, a first
answer hashes the megabytes it reads, not the 900 MB file.

`Bundle.recommend` answers a known user asked with the defaults without building the
model where it can: from precomputed top-N rows, else from the model's own stored ranking
(`hybridrec.models.topk.ranked_rows`) or a factor model's stored vectors
(`Recommender.dot_state`, `hybridrec.models.topk.dot_topk`), as the model answers, so a
first answer imports neither the model's code nor scipy or pydantic.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from hybridrec.bundle.format import (
    FORMAT,
    Compression,
    block_entry,
    blocks_of,
    cast_float64,
    describe_file,
    dump_part,
    load_part,
    mapped_extents,
    verify_blocks,
    verify_files,
)
from hybridrec.bundle.safety import check_signature, sparse
from hybridrec.data.vocab import Vocab
from hybridrec.errors import ConfigError, DataError, HybridrecError, IntegrityError
from hybridrec.models import topk
from hybridrec.models.recommendations import History, ItemFilter, Recommendations
from hybridrec.models.topk import check_k, dot_topk, ranked_rows

if TYPE_CHECKING:
    import polars as pl
    import scipy.sparse as sp

    # Model code (pydantic, scipy) is imported when a model is built, not to read a row.
    from hybridrec.models.base import Recommender

__all__ = ["Bundle", "BundleOptions", "TopN", "part_of", "write_bundle"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ITEMS_FILE = "items.parquet"
PARTS = ("cf", "content")


def part_of(model: Recommender) -> str:
    """The bundle part a model is stored in (``bundle_part`` of its class; default cf)."""
    part = str(getattr(model, "bundle_part", "cf"))
    if part not in PARTS:
        raise ConfigError(f"model {model.name!r}: unknown bundle part {part!r}")
    return part


@dataclass(frozen=True)
class BundleOptions:
    """How a bundle is written.

    Attributes:
        compression: Codec and level, or none (memory-mappable, fastest to load).
        float32: Store float64 arrays (factors, similarities) as float32: half the size.
    """

    compression: Compression = field(default_factory=Compression)
    float32: bool = False


@dataclass(frozen=True)
class TopN:
    """Precomputed top-N recommendations of one model for known users, CSR-style.

    Row ``u`` (a user index) holds ``items[indptr[u]:indptr[u+1]]`` best first, already
    without the user's training items. ``held`` says which users have a row (a batch that
    answered them, even with fewer items); without it (imported lists, older bundles) a user
    has a row when it holds any item. Users without a row are answered by the model.
    """

    model: str
    k: int
    indptr: NDArray[np.int64]
    items: NDArray[np.int32]
    scores: NDArray[np.float32]
    held: NDArray[np.bool_] | None = None

    @classmethod
    def from_recommendations(cls, model: str, recs: Recommendations, users: Vocab) -> TopN:
        """From a batch answered for every user of ``users`` (in any order)."""
        rows = users.index(recs.user_ids)
        counts = np.zeros(len(users), np.int64)
        valid = recs.indices >= 0
        counts[rows] = valid.sum(axis=1)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        order = np.argsort(rows, kind="stable")
        idx, val = recs.indices[order], recs.scores[order]
        keep = idx >= 0
        held = np.zeros(len(users), bool)
        held[rows] = True
        return cls(
            model,
            int(recs.indices.shape[1]),
            indptr,
            idx[keep].astype(np.int32),
            val[keep].astype(np.float32),
            held,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for pickling."""
        return {
            "model": self.model,
            "k": self.k,
            "indptr": self.indptr,
            "items": self.items,
            "scores": self.scores,
            **({} if self.held is None else {"held": self.held}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TopN:
        """Inverse of `to_dict`."""
        return cls(d["model"], int(d["k"]), d["indptr"], d["items"], d["scores"], d.get("held"))

    def holds(self, users: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which user indices have a precomputed row."""
        if self.held is not None:
            return np.asarray(self.held)[users]
        return np.asarray(self.indptr[users + 1] > self.indptr[users])

    @property
    def rows(self) -> int:
        """Number of stored (user, item) rows."""
        return int(self.items.size)

    def lookup(self, users: NDArray[np.int64], k: int) -> tuple[NDArray[np.int64], NDArray[Any]]:
        """Top-k indices and scores for user indices (-1 padding where a row is shorter)."""
        out_idx = np.full((users.size, k), -1, np.int64)
        out_val = np.full((users.size, k), -np.inf, np.float32)
        for r, u in enumerate(users):
            start, end = int(self.indptr[u]), int(self.indptr[u + 1])
            n = min(k, end - start)
            out_idx[r, :n] = self.items[start : start + n]
            out_val[r, :n] = self.scores[start : start + n]
        return out_idx, out_val


def _csr_equal(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (
        a.shape == b.shape
        and a.nnz == b.nnz
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data)
    )


def _part_payload(
    models: Mapping[str, Recommender],
    part: str,
    top_n: TopN | None,
    float32: bool,
    siblings: Mapping[str, Recommender] | None = None,
) -> dict[str, Any]:
    bases: list[dict[str, Any]] = []
    entries: dict[str, Any] = {}
    for name, model in models.items():
        users, items, user_items = model._fitted()
        i = next(
            (
                j
                for j, base in enumerate(bases)
                if base["users"] == users
                and base["items"] == items
                and _csr_equal(base["user_items"], user_items)
            ),
            -1,
        )
        if i < 0:
            bases.append({"users": users, "items": items, "user_items": user_items})
            i = len(bases) - 1
        others = {n: m for n, m in (siblings or models).items() if m is not model}
        state = model.export_state(siblings=others)
        if float32:
            state = cast_float64(state)
        entries[name] = {**state, "base": i}
    return {
        "format": FORMAT,
        "part": part,
        "bases": bases,
        "models": entries,
        "top_n": top_n.to_dict() if top_n is not None and part == "cf" else None,
    }


def _model_summary(model: Recommender) -> dict[str, Any]:
    users, items, user_items = model._fitted()
    out: dict[str, Any] = {"users": len(users), "items": len(items), "nnz": int(user_items.nnz)}
    factors = getattr(model, "item_factors_", None)
    if isinstance(factors, np.ndarray) and factors.ndim == 2:
        out["factors"] = int(factors.shape[1])
    return out


def write_bundle(
    path: Path,
    models: Mapping[str, Recommender],
    *,
    items: pl.DataFrame | None = None,
    top_n: TopN | None = None,
    options: BundleOptions | None = None,
    model_info: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``models`` (and the catalog) as bundle files into the empty directory ``path``.

    Args:
        path: A new, empty version directory (the store renames it into place).
        models: Name → fitted model, in the order to list them.
        items: The item catalog, kept for titles and content.
        top_n: Precomputed recommendations to store in the cf part.
        options: Compression and precision.
        model_info: Extra per-model manifest fields (params, fit seconds).

    Returns:
        The manifest fields the bundle owns: ``format``, ``bundle``, ``parts``, ``models``,
        ``files``. The caller adds the rest and writes ``manifest.json``.
    """
    options = options or BundleOptions()
    by_part = _by_part(models)
    parts: dict[str, Any] = {}
    for part, members in by_part.items():
        file = f"{part}.joblib"
        dump_part(
            _part_payload(members, part, top_n, options.float32, models),
            path / file,
            options.compression,
        )
        parts[part] = {"file": file, "models": list(members)}
    if items is not None:
        items.write_parquet(path / ITEMS_FILE)
        (path / ITEMS_FILE).chmod(0o644)
    files = {
        p.name: describe_file(p)
        for p in sorted(path.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    if options.compression.codec is None:
        for part in parts.values():
            files[part["file"]]["blocks"] = block_entry(path / part["file"])
    return {
        "format": FORMAT,
        "bundle": {
            "compression": str(options.compression),
            "float32": options.float32,
            "top_n": None if top_n is None else {"model": top_n.model, "k": top_n.k},
        },
        "parts": parts,
        "models": _manifest_models(models, model_info),
        "files": files,
    }


def _by_part(models: Mapping[str, Recommender]) -> dict[str, dict[str, Recommender]]:
    if not models:
        raise ConfigError("a bundle needs at least one model")
    by_part: dict[str, dict[str, Recommender]] = {}
    for name, model in models.items():
        by_part.setdefault(part_of(model), {})[name] = model
    return by_part


def _manifest_models(
    models: Mapping[str, Recommender], info: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    info = info or {}
    return {
        name: {
            "model": model.name,
            "part": part_of(model),
            **dict(info.get(name, {})),
            **_model_summary(model),
            # What a visitor may send as attributes (GET /model lists them for clients).
            **({"user_attributes": attrs} if (attrs := model.user_attributes()) else {}),
        }
        for name, model in models.items()
    }


def read_manifest(path: Path, *, check_signed: bool = True) -> dict[str, Any]:
    """The manifest of the version directory ``path`` (nothing else is read).

    With a signing key configured (see `hybridrec.bundle.safety`), the manifest's signature
    is checked on the very bytes parsed, so nothing after this trusts an unsigned version.

    Raises:
        DataError: No manifest, not JSON, or a format this code cannot read.
        IntegrityError: A key is configured and the signature is missing or wrong.
    """
    file = path / MANIFEST
    if not file.is_file():
        raise DataError(f"{path}: no {MANIFEST} (not a bundle)")
    raw = file.read_bytes()
    if check_signed:
        check_signature(path, raw)
    try:
        manifest: dict[str, Any] = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{file}: not valid JSON ({exc})") from None
    fmt = manifest.get("format")
    if fmt != FORMAT:
        raise DataError(
            f"{path}: bundle format {fmt!r}, this hybridrec reads format {FORMAT}; "
            "retrain, or rebuild it with 'hybridrec bundle import'"
        )
    return manifest


class Bundle:
    """An opened version: its manifest, models and catalog.

    Use `Bundle.open`. Parts load at most once each; `load_counts` says how many times each
    part was actually unpickled (the concurrency test holds it to one).
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        *,
        mmap: bool = True,
        parts: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.mmap = mmap
        self.load_counts: dict[str, int] = dict.fromkeys(manifest.get("parts", {}), 0)
        self._parts: dict[str, Mapping[str, Any]] = dict(parts or {})
        self._models: dict[str, Recommender] = {}
        self._items: pl.DataFrame | None = None
        self._lock = threading.RLock()
        self._part_locks = {name: threading.Lock() for name in manifest.get("parts", {})}
        self._stats: dict[str, tuple[int, int]] = {}
        # Files checked block by block as they are used (the rest were checked whole).
        self._lazy: set[str] = set()
        self._checked: dict[str, set[int]] = {}
        self._check_lock = threading.Lock()
        self._top_n: TopN | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        verify: bool = True,
        mmap: bool = True,
        eager: Sequence[str] = ("cf",),
        lazy: bool = False,
    ) -> Bundle:
        """Open the version directory ``path``.

        Args:
            path: A version directory of the model store.
            verify: Check every file's hashes before it is used (refuse the version on any
                mismatch).
            mmap: Memory-map uncompressed arrays read-only.
            eager: Parts to load now; the others load on first use.
            lazy: With ``verify``, check a memory-mapped part that has block hashes block
                by block as it is used (its size now), not whole now; `check_all` checks
                the rest. Without it (``bundle promote``, ``ab start``) a version that opens
                is whole.

        Raises:
            IntegrityError: A file is missing or does not match its hash.
            DataError: Not a bundle, or an unreadable format.
        """
        path = Path(path)
        manifest = read_manifest(path)
        # Compressed files cannot be mapped (joblib would read them whole and warn).
        compressed = manifest.get("bundle", {}).get("compression", "none") != "none"
        bundle = cls(path, manifest, mmap=mmap and not compressed)
        if verify:
            files = manifest["files"]
            parts = {p["file"] for p in manifest["parts"].values()}
            # Read whole when not mapped: then every byte is read at unpickling.
            bundle._lazy = {
                n for n, e in files.items() if lazy and bundle.mmap and n in parts and "blocks" in e
            }
            verify_files(path, files, names=[n for n in files if n not in bundle._lazy])
            for name in bundle._lazy:
                verify_blocks(path / name, files[name], ())
        bundle._stats = {
            name: file_stat(path / name) for name in manifest["files"] if (path / name).is_file()
        }
        for part in eager:
            if part in manifest["parts"]:
                bundle._load(part)
        return bundle

    @classmethod
    def from_models(
        cls,
        path: str | Path,
        models: Mapping[str, Recommender],
        *,
        top_n: TopN | None = None,
        items: pl.DataFrame | None = None,
        default_model: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Bundle:
        """An in-memory bundle of fitted models (loose imports served without saving)."""
        by_part = _by_part(models)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": f"loose:{Path(path).name}",
            **dict(extra or {}),
            "parts": {p: {"file": None, "models": list(m)} for p, m in by_part.items()},
            "models": _manifest_models(models, None),
            "default_model": default_model or next(iter(models)),
            "files": {},
        }
        parts = {p: _part_payload(m, p, top_n, False, models) for p, m in by_part.items()}
        bundle = cls(Path(path), manifest, mmap=False, parts=parts)
        bundle._items = items
        return bundle

    # ---- identity -------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The version name."""
        return str(self.manifest.get("version", self.path.name))

    @property
    def created_at(self) -> str | None:
        """When the version was written (ISO 8601)."""
        value = self.manifest.get("created_at")
        return None if value is None else str(value)

    @property
    def model_names(self) -> list[str]:
        """Models in this version, in training order."""
        return list(self.manifest["models"])

    @property
    def default_model(self) -> str:
        """The model that scored best on the held-out test (or the first one)."""
        return str(self.manifest.get("default_model") or self.model_names[0])

    def loaded_parts(self) -> list[str]:
        """Parts loaded so far."""
        return [p for p in self.manifest.get("parts", {}) if p in self._parts]

    # ---- loading --------------------------------------------------------------------------

    def part(self, name: str) -> Mapping[str, Any]:
        """The payload of part ``name``, loaded on first use (thread-safe, at most once).

        Every array of it is hash-checked and its sparse matrices built (scipy).
        """
        payload = self._load(name)
        with self._lock:
            self._check(name, payload)
            for base in payload["bases"]:
                base["user_items"] = sparse(base["user_items"])
            for model, entry in payload["models"].items():
                payload["models"][model] = sparse(entry)
        return payload

    def _check(self, part: str, used: Any) -> None:
        """Hash-check the blocks of ``part``'s file that the arrays in ``used`` lie in."""
        file = self.manifest["parts"][part]["file"]
        if file in self._lazy:
            block = int(self.manifest["files"][file]["blocks"]["bytes"])
            self._check_blocks(file, blocks_of(mapped_extents(used, self.path / file), block))

    def _check_blocks(self, file: str, wanted: set[int]) -> None:
        with self._check_lock:
            done = self._checked.setdefault(file, set())
            todo = wanted - done
            if todo:
                verify_blocks(self.path / file, self.manifest["files"][file], todo)
                done |= todo

    def check_all(self) -> None:
        """Hash-check every block not checked yet: the whole version, as `open` used to.

        A server calls it before it swaps a version in, so that a corrupted version is
        refused at reload, not at the request that first reads the bad block.

        Raises:
            IntegrityError: A block does not match its hash.
        """
        for file in sorted(self._lazy):
            blocks = len(self.manifest["files"][file]["blocks"]["blake3"])
            self._check_blocks(file, set(range(blocks)))

    def _load(self, name: str) -> Mapping[str, Any]:
        """Part ``name`` unpickled (arrays unchecked, sparse matrices unbuilt)."""
        loaded = self._parts.get(name)
        if loaded is not None:
            return loaded
        if name not in self.manifest.get("parts", {}):
            raise DataError(f"version {self.version} has no {name!r} part")
        with self._part_locks[name]:
            loaded = self._parts.get(name)
            if loaded is not None:
                return loaded
            file = self.manifest["parts"][name]["file"]
            path = self.path / file
            if self._stats and self._stats.get(file) != file_stat(path):
                # Changed since the version was verified at open: check it again.
                verify_files(self.path, self.manifest["files"], names=[file])
                self._lazy.discard(file)
            elif file in self._lazy:
                # What the unpickler reads, before it reads it.
                entry = self.manifest["files"][file]
                pickled = set(entry["blocks"]["pickle"])
                verify_blocks(path, entry, pickled)
                with self._check_lock:
                    self._checked.setdefault(file, set()).update(pickled)
            start = time.perf_counter()
            payload = load_part(path, mmap=self.mmap, lazy_sparse=True)
            if not isinstance(payload, dict) or payload.get("part") != name:
                raise IntegrityError(f"{path}: not a hybridrec {name!r} bundle part")
            self.load_counts[name] = self.load_counts.get(name, 0) + 1
            log.info(
                "loaded %s part of %s in %.3fs", name, self.version, time.perf_counter() - start
            )
            self._parts[name] = payload
            return payload

    def model(self, name: str | None = None) -> Recommender:
        """Model ``name`` (default: `default_model`), built once from its part.

        Raises:
            ConfigError: No model of that name in this version; lists the ones there are.
        """
        name = name or self.default_model
        cached = self._models.get(name)
        if cached is not None:
            return cached
        info = self.manifest["models"].get(name)
        if info is None:
            raise ConfigError(
                f"no model {name!r} in version {self.version}; "
                f"available: {', '.join(self.model_names)}"
            )
        payload = self._load(info["part"])
        with self._lock:
            cached = self._models.get(name)
            if cached is None:
                entry = payload["models"][name]
                base = payload["bases"][entry["base"]]
                self._check_while_importing(info["part"], (entry, base), entry["model"])
                from hybridrec.models.base import Recommender

                # Built once per base: the models sharing it share the matrix.
                base["user_items"] = sparse(base["user_items"])
                entry = payload["models"][name] = sparse(entry)
                # Hybrids refer to the bundle's other models by name (reentrant lock).
                entry = {**entry, "state": {**entry["state"], "_resolve": self.model}}
                cached = Recommender.from_state(
                    entry, base["users"], base["items"], base["user_items"]
                )
                self._models[name] = cached
        return cached

    def _check_while_importing(self, part: str, used: Any, model: str) -> None:
        """`_check` ``used`` on a thread while the model's code is imported here.

        BLAKE3 releases the GIL, so hashing the model's arrays overlaps the imports of its
        module and libraries; nothing of ``used`` is read before both are done.
        """
        failed: list[BaseException] = []

        def check() -> None:
            try:
                self._check(part, used)
            except BaseException as exc:  # re-raised below, in the caller's thread
                failed.append(exc)

        worker = threading.Thread(target=check, name="hybridrec-bundle-check", daemon=True)
        worker.start()
        try:
            from hybridrec.models.registry import get_model_class

            get_model_class(model)
        finally:
            worker.join()
        if failed:
            raise failed[0]

    def _vocabs(self, name: str) -> tuple[Vocab, Vocab]:
        """The user and item vocabularies of model ``name``, without building the model."""
        cached = self._models.get(name)
        if cached is not None:
            users, items, _ = cached._fitted()
            return users, items
        part = self.manifest["models"][name]["part"]
        payload = self._load(part)
        base = payload["bases"][payload["models"][name]["base"]]
        users, items = base["users"], base["items"]
        self._check(part, (users, items))
        return users, items

    def get(self, name: str) -> Recommender | None:
        """Model ``name``, or None when the version lacks it or it cannot be loaded.

        The fallback chain asks for models this way: a missing or broken part means the
        next model answers, not an error.
        """
        if name not in self.manifest["models"]:
            return None
        try:
            return self.model(name)
        except (HybridrecError, OSError, EOFError, ValueError) as exc:
            log.warning("model %s of %s could not be loaded: %s", name, self.version, exc)
            return None

    def models(self) -> dict[str, Recommender]:
        """Every model of the version (loads every part)."""
        return {name: self.model(name) for name in self.model_names}

    @property
    def items(self) -> pl.DataFrame | None:
        """The item catalog saved with the version, if any."""
        if self._items is None and (self.path / ITEMS_FILE).is_file():
            import polars as pl

            self._items = pl.read_parquet(self.path / ITEMS_FILE)
        return self._items

    @property
    def top_n(self) -> TopN | None:
        """Precomputed recommendations, when the version has them."""
        if self._top_n is not None:
            return self._top_n
        if "cf" not in self.manifest.get("parts", {}):
            return None
        raw = self._load("cf").get("top_n")
        if raw is None:
            return None
        self._check("cf", raw)
        self._top_n = TopN.from_dict(raw)
        return self._top_n

    # ---- answering ------------------------------------------------------------------------

    def recommend(
        self,
        user_ids: Sequence[Any] | NDArray[Any],
        k: int = 10,
        *,
        model: str | None = None,
        exclude_seen: bool = True,
        filters: ItemFilter | None = None,
        history: History | None = None,
    ) -> Recommendations:
        """Recommend with model ``model``; precomputed rows answer when they can.

        Precomputed top-N answers the users it holds, asked with the defaults (seen items
        excluded, no filters, no new history) for ``k`` up to N; every other user, and every
        other call, goes to the model. Until the model is built, known users asked with
        those defaults are answered from the model's own stored ranking, or a factor
        model's stored vectors (`Recommender.dot_state`), as the model answers them (to the
        bit), hashing only the rows they read: a first answer needs neither the model's code
        nor its libraries.
        """
        check_k(k)
        name = model or self.default_model
        if exclude_seen and filters is None and not history and name in self.manifest["models"]:
            # Stored answers need the vocabularies only, not the model.
            users, items = self._vocabs(name)
            ids = users.coerce(np.asarray(user_ids).ravel())
            idx = users.index(ids, missing="mask")
            if (idx >= 0).all():
                out_idx, out_val, held = self._stored(name, idx, k, len(items))
                if not held.any():
                    return self.model(name).recommend(ids, k, exclude_seen=True)
                if not held.all():
                    rest = self.model(name).recommend(ids[~held], k, exclude_seen=True)
                    width = rest.indices.shape[1]
                    out_idx, out_val = out_idx[:, :width], out_val[:, :width]
                    out_idx[~held], out_val[~held] = rest.indices, rest.scores
                return Recommendations(ids, out_idx, out_val, items)
        return self.model(model).recommend(
            user_ids, k, exclude_seen=exclude_seen, filters=filters, history=history
        )

    def _stored(
        self, name: str, idx: NDArray[np.int64], k: int, n_items: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.bool_]]:
        """Answers for known users ``idx`` from stored rows or factors; ``held``: answered.

        Precomputed top-N rows first; then, while model ``name`` is not built, its own
        stored ranking (`Recommender.precompute_ranking`, what the model would answer from)
        or else its stored factors (`dot_topk`, when they fit in one block) answer the rest.
        """
        top = self.top_n
        if top is not None and top.model == name and k <= top.k:
            out_idx, out_val = top.lookup(idx, k)
            held = top.holds(idx)
        else:
            out_idx = np.full((idx.size, k), -1, np.int64)
            out_val = np.full((idx.size, k), -np.inf, np.float32)
            held = np.zeros(idx.size, bool)
        rest = np.flatnonzero(~held)
        if rest.size and name not in self._models:
            got = self._model_rows(name, idx[rest], k, n_items)
            if got is not None:
                width = got[0].shape[1]
                out_idx, out_val = out_idx[:, :width], out_val[:, :width]
                out_idx[rest], out_val[rest] = got
                held[rest] = True
        return out_idx, out_val, held

    def _model_rows(
        self, name: str, idx: NDArray[np.int64], k: int, n_items: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]] | None:
        """Model ``name``'s answer to known users ``idx`` from its stored arrays, or None.

        Its stored ranking answers when it has one (and it can: see `ranked_rows`), its
        stored factors when it has those (and no ranking); the blocks read are checked.
        """
        part = self.manifest["models"][name]["part"]
        entry = self._load(part)["models"][name]
        ranking = entry.get("ranking")
        if ranking:
            table, scores = ranking["items"], ranking["scores"]
            if idx.max() >= table.shape[0]:
                return None
            self._check(part, ([table[u : u + 1] for u in idx], [scores[u : u + 1] for u in idx]))
            return ranked_rows(table[idx], scores[idx], k, n_items)
        factors = self._factor_rows(name, idx)
        return None if factors is None else dot_topk(*factors, k)

    def _factor_rows(
        self, name: str, idx: NDArray[np.int64]
    ) -> tuple[NDArray[Any], NDArray[Any], list[NDArray[Any]]] | None:
        """Users ``idx``'s stored vectors, the item vectors and their seen items, checked.

        None when model ``name`` stores no dot-product factors, or the users would not fit
        in one scoring block.
        """
        part = self.manifest["models"][name]["part"]
        payload = self._load(part)
        entry = payload["models"][name]
        dot = entry.get("dot")
        if not dot or not isinstance(entry.get("state"), dict):
            return None
        user_vecs, item_vecs = entry["state"].get(dot[0]), entry["state"].get(dot[1])
        seen = payload["bases"][entry["base"]]["user_items"]
        if not all(
            isinstance(a, np.ndarray) and a.ndim == 2 for a in (user_vecs, item_vecs)
        ) or idx.size > max(1, topk.BLOCK_CELLS // max(item_vecs.shape[0], 1)):
            return None
        indptr, indices = seen.indptr, seen.indices
        # Hash-check what the answer reads before reading it: the users' rows, the item
        # vectors and the seen items' bounds first, then the seen items those bounds name.
        rows = [user_vecs[u : u + 1] for u in idx]
        self._check(part, (rows, item_vecs, [indptr[u : u + 2] for u in idx]))
        seen_items = [indices[int(indptr[u]) : int(indptr[u + 1])] for u in idx]
        self._check(part, seen_items)
        return user_vecs[idx], item_vecs, seen_items

    def summary(self) -> dict[str, Any]:
        """Counts per model (users, items, factors) and the version's identity."""
        return {
            "version": self.version,
            "created_at": self.created_at,
            "models": {
                name: _model_summary(self.model(name))
                | {"model": self.manifest["models"][name]["model"]}
                for name in self.model_names
            },
            "top_n_rows": None if self.top_n is None else self.top_n.rows,
        }


def file_stat(path: Path) -> tuple[int, int]:
    """(size, mtime in ns): what tells a file changed since it was read."""
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)
