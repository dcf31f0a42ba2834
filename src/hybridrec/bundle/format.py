"""The on-disk bundle format: joblib part files, their hashes, compression and precision.

A version directory holds one joblib file per *part* — ``cf.joblib`` (vocabularies, the
training matrix, every collaborative model: ALS factors, item-item similarity, popularity,
precomputed top-N) and ``content.joblib`` (content models: embeddings, index, encoder
settings) — plus the catalog (``items.parquet``) and ``manifest.json``, which records the
SHA-256 and size of every file.

Hashes are checked *before* anything is unpickled (a pickle can run code). Besides the
whole-file SHA-256, the manifest keeps one SHA-256 per 64 MiB chunk, so loading can check a
large file on every core at once; ``verify`` checks both.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import scipy.sparse as sp

from hybridrec.errors import ConfigError, IntegrityError

__all__ = [
    "CHUNK_BYTES",
    "CODECS",
    "Compression",
    "cast_float64",
    "describe_file",
    "dump_part",
    "load_part",
    "verify_files",
]

FORMAT = 2
CHUNK_BYTES = 64 * 1024 * 1024
_READ_BYTES = 8 * 1024 * 1024
CODECS = ("zlib", "gzip", "xz", "lz4")
_DEFAULT_LEVEL = {"zlib": 3, "gzip": 3, "xz": 3, "lz4": 3}


@dataclass(frozen=True)
class Compression:
    """How part files are written: uncompressed (memory-mappable) or with a joblib codec.

    Attributes:
        codec: ``None`` for uncompressed, else one of `CODECS`.
        level: Codec level (1 fastest … 9 smallest).
    """

    codec: str | None = None
    level: int = 3

    @classmethod
    def parse(cls, spec: str | None, level: int | None = None) -> Compression:
        """From ``"none"``, ``"lz4"`` or ``"zlib:6"`` (a separate ``level`` wins).

        Raises:
            ConfigError: Unknown codec or a level outside 1-9.
        """
        if spec is None or spec.strip().lower() in ("", "none", "0", "false"):
            return cls()
        name, _, lvl = spec.strip().lower().partition(":")
        if name not in CODECS:
            raise ConfigError(f"unknown compression {name!r}; valid: none, {', '.join(CODECS)}")
        if level is None:
            try:
                level = int(lvl) if lvl else _DEFAULT_LEVEL[name]
            except ValueError:
                raise ConfigError(f"compression level must be an integer (got {lvl!r})") from None
        if not 1 <= level <= 9:
            raise ConfigError(f"compression level must be 1-9 (got {level})")
        if name == "lz4":
            try:
                import lz4  # noqa: F401
            except ImportError:
                raise ConfigError("compression 'lz4' needs the lz4 package") from None
        return cls(name, level)

    def __str__(self) -> str:
        return "none" if self.codec is None else f"{self.codec}:{self.level}"

    @property
    def joblib_arg(self) -> int | tuple[str, int]:
        """The ``compress`` argument for `joblib.dump`."""
        return 0 if self.codec is None else (self.codec, self.level)


def cast_float64(obj: Any) -> Any:
    """A copy of ``obj`` with every float64 array (dense or sparse) stored as float32.

    Walks dicts, lists and tuples; other objects are kept as they are.
    """
    if isinstance(obj, np.ndarray) and obj.dtype == np.float64:
        return obj.astype(np.float32)
    if sp.issparse(obj) and obj.dtype == np.float64:
        return obj.astype(np.float32)
    if isinstance(obj, dict):
        return {k: cast_float64(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cast_float64(v) for v in obj)
    return obj


def dump_part(payload: Any, path: Path, compression: Compression) -> None:
    """Write one part file and flush it to disk (the caller renames the directory)."""
    joblib.dump(payload, path, compress=compression.joblib_arg)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    path.chmod(0o644)


def load_part(path: Path, *, mmap: bool) -> Any:
    """Unpickle a part file (hash already checked); arrays memory-mapped when ``mmap``.

    Compressed files cannot be mapped; joblib reads them whole (and says nothing), which is
    what a compressed bundle is for.
    """
    return joblib.load(path, mmap_mode="r" if mmap else None)


def _hash_range(path: Path, start: int, length: int) -> str:
    digest = hashlib.sha256()
    buf = bytearray(min(_READ_BYTES, max(length, 1)))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(start)
        left = length
        while left > 0:
            n = fh.readinto(view[: min(left, len(buf))])
            if not n:
                break
            digest.update(view[:n])
            left -= n
    return digest.hexdigest()


def describe_file(path: Path) -> dict[str, Any]:
    """SHA-256, size and per-chunk SHA-256 of a file, in one pass."""
    whole = hashlib.sha256()
    chunks: list[str] = []
    buf = bytearray(_READ_BYTES)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as fh:
        chunk = hashlib.sha256()
        in_chunk = 0
        while True:
            n = fh.readinto(view[: min(len(buf), CHUNK_BYTES - in_chunk)])
            if not n:
                break
            whole.update(view[:n])
            chunk.update(view[:n])
            size += n
            in_chunk += n
            if in_chunk == CHUNK_BYTES:
                chunks.append(chunk.hexdigest())
                chunk, in_chunk = hashlib.sha256(), 0
        if in_chunk or not chunks:
            chunks.append(chunk.hexdigest())
    return {"sha256": whole.hexdigest(), "size": size, "chunks": chunks}


def verify_files(
    root: Path,
    files: dict[str, dict[str, Any]],
    *,
    names: Iterable[str] | None = None,
    whole: bool = False,
    threads: int | None = None,
) -> None:
    """Check sizes and hashes of ``files`` (manifest entries) under ``root``.

    Chunks are hashed on all cores in parallel (hashlib releases the GIL).

    Args:
        root: The version directory.
        files: Relative path → ``{"sha256", "size", "chunks"}`` from the manifest.
        names: Only these files (default: all).
        whole: Also check the whole-file SHA-256 (one sequential pass per file).
        threads: Worker threads (default: the number of cores).

    Raises:
        IntegrityError: A file is missing, has another size, or a hash differs; the message
            names the file.
    """
    selected = list(files) if names is None else list(names)
    tasks: list[tuple[str, tuple[Path, int, int], str]] = []
    for name in selected:
        entry = files.get(name)
        if entry is None:
            raise IntegrityError(f"{root / name}: not listed in the manifest")
        path = root / name
        if not path.is_file():
            raise IntegrityError(f"{path}: missing (the manifest lists it)")
        size = path.stat().st_size
        if size != entry["size"]:
            raise IntegrityError(
                f"{path}: size {size} bytes, manifest says {entry['size']} "
                "(file changed or truncated); refusing to load it"
            )
        chunks = entry.get("chunks") or []
        if whole or not chunks:
            tasks.append((name, (path, 0, size), entry["sha256"]))
        for i, expected in enumerate(chunks):
            start = i * CHUNK_BYTES
            length = min(CHUNK_BYTES, size - start)
            tasks.append((name, (path, start, length), expected))
    workers = max(1, min(threads or os.cpu_count() or 1, len(tasks)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda t: _hash_range(*t[1]), tasks))
    for (name, _, expected), got in zip(tasks, results, strict=True):
        if got != expected:
            raise IntegrityError(
                f"{root / name}: SHA-256 mismatch (file changed or corrupted since it was "
                "saved); refusing to load it"
            )
