"""The on-disk bundle format: joblib part files, their hashes, compression and precision.

A version directory holds one joblib file per *part* — ``cf.joblib`` (vocabularies, the
training matrix, every collaborative model: ALS factors, item-item similarity, popularity,
precomputed top-N) and ``content.joblib`` (content models: embeddings, index, encoder
settings) — plus the catalog (``items.parquet``) and ``manifest.json``, which records the
SHA-256 and size of every file.

Hashes are checked *before* anything is unpickled (a pickle can run code). The manifest
keeps each file's SHA-256 and BLAKE3, and for an uncompressed part the BLAKE3 of every
1 MiB block plus which blocks hold pickle bytes (anything outside the memory-mapped
arrays). Loading checks a file without block hashes whole (BLAKE3, memory-mapped and
parallel); a mapped part's pickle blocks before it is unpickled and an array's blocks
before what uses it is built (`hybridrec.bundle.bundle`), so a first answer hashes the few
megabytes it reads, not 900 MB. ``hybridrec bundle verify`` checks everything: SHA-256,
BLAKE3 and every block.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec.errors import ConfigError, IntegrityError

__all__ = [
    "BLOCK_BYTES",
    "CODECS",
    "Compression",
    "block_entry",
    "blocks_of",
    "cast_float64",
    "describe_file",
    "dump_part",
    "load_part",
    "mapped_extents",
    "verify_blocks",
    "verify_files",
]

FORMAT = 2
_READ_BYTES = 8 * 1024 * 1024
#: Block size of an uncompressed part's block hashes (a 900 MB part: 866 of them).
BLOCK_BYTES = 1 << 20
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
    import scipy.sparse as sp

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
    import joblib  # not on the read path: `load_part` reads uncompressed files without it

    joblib.dump(payload, path, compress=compression.joblib_arg)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    path.chmod(0o644)


def load_part(path: Path, *, mmap: bool, lazy_sparse: bool = False) -> Any:
    """Unpickle a part file (hash already checked); arrays memory-mapped when ``mmap``.

    Compressed files cannot be mapped; joblib reads them whole (and says nothing), which is
    what a compressed bundle is for. ``lazy_sparse``: sparse matrices come back unbuilt
    (`hybridrec.bundle.safety.sparse` builds them).
    """
    from hybridrec.bundle.safety import load_pickle

    return load_pickle(path, mmap=mmap, lazy_sparse=lazy_sparse)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buf = bytearray(_READ_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()


def _blake3(path: Path) -> str:
    import blake3

    # Memory-mapped and hashed on every core: ~5x SHA-256 on one core here.
    digest = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if path.stat().st_size:
        digest.update_mmap(str(path))
    return str(digest.hexdigest())


def describe_file(path: Path) -> dict[str, Any]:
    """Size, SHA-256 and BLAKE3 of a file."""
    return {"size": path.stat().st_size, "sha256": _sha256(path), "blake3": _blake3(path)}


def _block_digests(path: Path, blocks: Iterable[int], block: int) -> dict[int, str]:
    import mmap

    import blake3

    out: dict[int, str] = {}
    with open(path, "rb") as fh:
        if not os.fstat(fh.fileno()).st_size:
            return out
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                for b in blocks:
                    chunk = view[b * block : (b + 1) * block]
                    digest = blake3.blake3(chunk, max_threads=blake3.blake3.AUTO).hexdigest()
                    chunk.release()
                    out[b] = str(digest)
            finally:
                view.release()
    return out


def mapped_extents(obj: Any, path: Path) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of ``path`` that the arrays in ``obj`` are mapped from.

    Walks dicts, lists, tuples and objects' attributes; arrays not memory-mapped from
    ``path`` (read into memory, or empty) are left out.
    """
    target = os.path.realpath(path)
    out: list[tuple[int, int]] = []
    seen: set[int] = set()
    stack = [obj]
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, np.ndarray):
            mapped: Any = value
            while mapped is not None and not isinstance(mapped, np.memmap):
                mapped = mapped.base if isinstance(mapped, np.ndarray) else None
            if mapped is None or not value.nbytes or mapped.filename is None:
                continue
            if os.path.realpath(mapped.filename) != target:
                continue
            start = int(mapped.offset) + (
                value.__array_interface__["data"][0] - mapped.__array_interface__["data"][0]
            )
            out.append((start, start + int(value.nbytes)))
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            stack.extend(vars(value).values())
    return sorted(out)


def blocks_of(extents: Iterable[tuple[int, int]], block: int = BLOCK_BYTES) -> set[int]:
    """The blocks that byte ranges ``[start, end)`` touch."""
    out: set[int] = set()
    for start, end in extents:
        if end > start:
            out.update(range(start // block, (end - 1) // block + 1))
    return out


def block_entry(path: Path, block: int | None = None) -> dict[str, Any]:
    """Block hashes of an uncompressed part file, for its manifest entry.

    ``pickle`` lists the blocks holding any byte outside the memory-mapped arrays: what the
    unpickler reads. They are checked before the file is unpickled; an array's blocks are
    checked before the model or precomputed rows that use it are built (`verify_blocks`).
    ``block`` defaults to `BLOCK_BYTES`.
    """
    block = block or BLOCK_BYTES
    size = path.stat().st_size
    extents = mapped_extents(load_part(path, mmap=True, lazy_sparse=True), path)
    # The bytes between (and around) the mapped arrays: pickle opcodes, headers, padding.
    gaps: list[tuple[int, int]] = []
    pos = 0
    for start, end in [*extents, (size, size)]:
        if start > pos:
            gaps.append((pos, start))
        pos = max(pos, end)
    n = -(-size // block)
    digests = _block_digests(path, range(n), block)
    return {
        "bytes": block,
        "blake3": [digests[b] for b in range(n)],
        "pickle": sorted(blocks_of(gaps, block)),
    }


def verify_blocks(path: Path, entry: dict[str, Any], blocks: Iterable[int]) -> None:
    """Check blocks ``blocks`` of ``path`` against its manifest entry's block hashes.

    Raises:
        IntegrityError: A block hash differs (or the file has another size); the message
            names the file and the byte range.
    """
    size = path.stat().st_size
    if size != entry["size"]:
        raise IntegrityError(
            f"{path}: size {size} bytes, manifest says {entry['size']} "
            "(file changed or truncated); refusing to load it"
        )
    spec = entry["blocks"]
    block, hashes = int(spec["bytes"]), spec["blake3"]
    for b, got in _block_digests(path, sorted(blocks), block).items():
        if b >= len(hashes) or got != hashes[b]:
            raise IntegrityError(
                f"{path}: BLAKE3 mismatch in bytes {b * block}-{min((b + 1) * block, size)} "
                "(file changed or corrupted since it was saved); refusing to load it"
            )


def verify_files(
    root: Path,
    files: dict[str, dict[str, Any]],
    *,
    names: Iterable[str] | None = None,
    whole: bool = False,
) -> None:
    """Check sizes and hashes of ``files`` (manifest entries) under ``root``.

    Loading checks BLAKE3 (parallel, fast enough to run at every start-up); ``whole=True``
    (``hybridrec bundle verify``) checks SHA-256 and the block hashes too. Entries without
    a BLAKE3 are checked by SHA-256.

    Args:
        root: The version directory.
        files: Relative path → ``{"size", "sha256", "blake3"}`` from the manifest.
        names: Only these files (default: all).
        whole: Also check SHA-256.

    Raises:
        IntegrityError: A file is missing, has another size, or a hash differs; the message
            names the file.
    """
    selected = list(files) if names is None else list(names)
    checks: list[tuple[str, Path, str, str]] = []
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
        if "blake3" in entry:
            checks.append((name, path, "BLAKE3", entry["blake3"]))
        if whole or "blake3" not in entry:
            checks.append((name, path, "SHA-256", entry["sha256"]))
    for name, path, algo, expected in checks:
        got = _blake3(path) if algo == "BLAKE3" else _sha256(path)
        if got != expected:
            raise IntegrityError(
                f"{root / name}: {algo} mismatch (file changed or corrupted since it was "
                "saved); refusing to load it"
            )
    if whole:
        for name in selected:
            entry = files[name]
            if "blocks" in entry:
                verify_blocks(root / name, entry, range(len(entry["blocks"]["blake3"])))
