"""An on-disk embedding cache keyed by content hash, so re-encoding skips unchanged items.

Each encoder (model + settings) gets its own folder named by its fingerprint; inside, every
`put` appends one ``part-*.npz`` file holding raw SHA-256 keys and float32 vectors, written to
a temporary name and renamed, so a crash never leaves a half-written part. Parts are merged
into one when there are many of them. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["CACHE_DIR_ENV", "EmbeddingCache", "content_key", "default_cache_dir"]

#: Environment variable that moves the cache (default ``~/.cache/hybridrec``).
CACHE_DIR_ENV = "HYBRIDREC_CACHE_DIR"
_KEY_BYTES = 32
_MAX_PARTS = 16


def default_cache_dir() -> Path:
    """``$HYBRIDREC_CACHE_DIR/embeddings``, else ``~/.cache/hybridrec/embeddings``."""
    root = os.environ.get(CACHE_DIR_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "hybridrec"
    return base / "embeddings"


def content_key(fingerprint: str, content: str | bytes) -> bytes:
    """The cache key of one input: SHA-256 over the encoder fingerprint and the content."""
    h = hashlib.sha256(fingerprint.encode("utf-8"))
    h.update(b"\0")
    h.update(content.encode("utf-8") if isinstance(content, str) else content)
    return h.digest()


class EmbeddingCache:
    """Vectors of one encoder, keyed by `content_key`.

    Args:
        directory: The cache root; the encoder's vectors live in a sub-folder of it.
        fingerprint: Identifies the encoder (model and settings); different fingerprints
            never share vectors.
    """

    def __init__(self, directory: str | Path, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        digest = hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()[:20]
        self.directory = Path(directory).expanduser() / digest
        self._index: dict[bytes, int] | None = None
        self._vectors: NDArray[np.float32] | None = None

    def _parts(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("part-*.npz"))

    def _load(self) -> tuple[dict[bytes, int], NDArray[np.float32] | None]:
        if self._index is not None:
            return self._index, self._vectors
        keys: list[NDArray[np.uint8]] = []
        vecs: list[NDArray[np.float32]] = []
        for part in self._parts():
            try:
                with np.load(part) as z:
                    k, v = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError):
                # A damaged part only costs re-encoding; it never blocks training.
                continue
            if (
                k.dtype != np.uint8
                or k.shape[1:] != (_KEY_BYTES,)
                or v.ndim != 2
                or len(k) != len(v)
            ):
                continue
            if vecs and v.shape[1] != vecs[0].shape[1]:
                continue
            keys.append(k)
            vecs.append(v.astype(np.float32, copy=False))
        if not vecs:
            self._index, self._vectors = {}, None
            return self._index, None
        all_keys = np.concatenate(keys)
        # Later parts win when a key repeats (dict keeps the last position).
        self._index = {key.tobytes(): i for i, key in enumerate(all_keys)}
        self._vectors = np.concatenate(vecs)
        return self._index, self._vectors

    def __len__(self) -> int:
        return len(self._load()[0])

    def get(self, keys: list[bytes]) -> tuple[NDArray[np.bool_], NDArray[np.float32] | None]:
        """Which keys are cached, and their vectors (rows of misses are zeros).

        Returns:
            ``(found, vectors)``; ``vectors`` is None when nothing was found.
        """
        index, store = self._load()
        pos = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        found = pos >= 0
        if store is None or not found.any():
            return found, None
        out = np.zeros((len(keys), store.shape[1]), dtype=np.float32)
        out[found] = store[pos[found]]
        return found, out

    def put(self, keys: Iterable[bytes], vectors: NDArray[np.floating]) -> None:
        """Store vectors under their keys (one new part file, written atomically)."""
        # Raw bytes as uint8 rows: numpy's "S" dtype would drop trailing zero bytes.
        key_arr = _key_rows(list(keys))
        vec = np.ascontiguousarray(vectors, dtype=np.float32)
        if key_arr.shape[0] == 0:
            return
        if vec.shape[0] != key_arr.shape[0]:
            raise ValueError("one vector per key")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(key_arr, vec)
        self._index = None
        self._vectors = None
        if len(self._parts()) > _MAX_PARTS:
            self.compact()

    def _write(self, keys: NDArray[np.uint8], vectors: NDArray[np.float32]) -> Path:
        name = f"part-{uuid.uuid4().hex}.npz"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".npz")
        os.close(fd)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=keys, vectors=vectors)
            target = self.directory / name
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    def compact(self) -> None:
        """Merge every part into one (the latest vector of a repeated key wins)."""
        old = self._parts()
        index, store = self._load()
        if store is None or len(old) <= 1:
            return
        keys = _key_rows(list(index.keys()))
        rows = np.fromiter(index.values(), dtype=np.int64, count=len(index))
        self._write(keys, store[rows])
        for part in old:
            part.unlink(missing_ok=True)
        self._index = None
        self._vectors = None

    def clear(self) -> None:
        """Delete this encoder's cached vectors."""
        for part in self._parts():
            part.unlink(missing_ok=True)
        self._index = None
        self._vectors = None


def _key_rows(keys: list[bytes]) -> NDArray[np.uint8]:
    if any(len(k) != _KEY_BYTES for k in keys):
        raise ValueError(f"cache keys must be {_KEY_BYTES} bytes (use content_key)")
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), _KEY_BYTES).copy()
