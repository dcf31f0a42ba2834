"""Bundles that cannot be forged into running code: signed manifests and a guarded unpickler.

Hashes in the manifest catch corruption, but anyone who can write the store can recompute
them. Two defences close that gap:

- **Signatures.** With a key configured (``HYBRIDREC_BUNDLE_KEY``, or a file named by
  ``HYBRIDREC_BUNDLE_KEY_FILE``), every version the store writes gets ``manifest.sig``: an
  HMAC-SHA256 of the manifest's exact bytes. Since the manifest holds every file's hashes,
  the signature covers the whole version. With a key configured, a version whose signature
  is missing or wrong is refused by `check_signature` before any file is hashed or unpickled.
- **An allow-list unpickler**, whatever the key. Part files are joblib pickles; `load_pickle`
  resolves only the classes a bundle holds (numpy arrays and dtypes, joblib's array wrapper,
  scipy sparse matrices, hybridrec's own classes, a few builtins). Anything else — a planted
  ``os.system`` in a ``__reduce__`` — raises `UnsafePickleError` before it is called.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from hybridrec.errors import IntegrityError

__all__ = [
    "KEY_ENV",
    "KEY_FILE_ENV",
    "SIGNATURE",
    "SparseState",
    "UnsafePickleError",
    "bundle_key",
    "check_signature",
    "load_pickle",
    "sign",
    "sparse",
]

KEY_ENV = "HYBRIDREC_BUNDLE_KEY"
KEY_FILE_ENV = "HYBRIDREC_BUNDLE_KEY_FILE"
SIGNATURE = "manifest.sig"
_ALGORITHM = "hmac-sha256"

# (module, name) pairs a bundle's pickles may refer to; modules under hybridrec. may name
# their own classes (vocabularies, weighters), never functions.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("collections", "OrderedDict"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy", "memmap"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
    }
)
#: joblib's array wrapper, read by `_ArrayWrapper` (joblib itself is not imported).
_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
# Sparse matrices a bundle may hold: unpickled as `SparseState` (scipy.sparse costs more to
# import than the rest of an answer) and made scipy objects by `sparse` when a model is built.
_SPARSE: frozenset[tuple[str, str]] = frozenset(
    {
        ("scipy.sparse._csr", "csr_matrix"),
        ("scipy.sparse._csc", "csc_matrix"),
        ("scipy.sparse._coo", "coo_matrix"),
        ("scipy.sparse._csr", "csr_array"),
    }
)


class SparseState:
    """A pickled scipy sparse matrix, unbuilt: its class name and attributes (arrays).

    scipy pickles its matrices as ``cls.__new__(cls)`` plus an attribute dict, so `build`
    does exactly what unpickling them would have done, later.
    """

    #: The scipy class: (module, name).
    origin: ClassVar[tuple[str, str]]

    def build(self) -> Any:
        """The scipy matrix (scipy.sparse is imported now)."""
        module, name = self.origin
        cls = getattr(importlib.import_module(module), name)
        out = cls.__new__(cls)
        out.__dict__.update(self.__dict__)
        return out


@functools.cache
def _sparse_state(module: str, name: str) -> type[SparseState]:
    # Pickle's NEWOBJ needs a class: one per scipy class.
    return type(name, (SparseState,), {"origin": (module, name), "__module__": __name__})


def sparse(value: Any) -> Any:
    """``value`` with every `SparseState` in it built into its scipy matrix.

    Walks dicts, lists and tuples (new containers where something was built) and the
    attributes of hybridrec's own objects (in place); anything else is returned as it is.
    """
    if isinstance(value, SparseState):
        return value.build()
    if isinstance(value, dict):
        built = {k: sparse(v) for k, v in value.items()}
        return value if all(built[k] is v for k, v in value.items()) else built
    if isinstance(value, list | tuple):
        items = [sparse(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    if type(value).__module__.startswith("hybridrec.") and hasattr(value, "__dict__"):
        for k, v in list(vars(value).items()):
            built = sparse(v)
            if built is not v:
                vars(value)[k] = built
    return value


class UnsafePickleError(IntegrityError):
    """A pickle names something a bundle never holds (it is not loaded, nothing runs)."""


def bundle_key() -> bytes | None:
    """The signing key from the environment, or None when none is configured.

    Raises:
        IntegrityError: ``HYBRIDREC_BUNDLE_KEY_FILE`` names a file that cannot be read.
    """
    text = os.environ.get(KEY_ENV, "")
    if text.strip():
        return text.strip().encode("utf-8")
    file = os.environ.get(KEY_FILE_ENV, "").strip()
    if not file:
        return None
    try:
        key = Path(file).read_bytes().strip()
    except OSError as exc:
        raise IntegrityError(f"{KEY_FILE_ENV}={file}: cannot read the key ({exc})") from None
    if not key:
        raise IntegrityError(f"{KEY_FILE_ENV}={file}: the key file is empty")
    return key


def _mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sign(version_dir: Path, manifest_bytes: bytes, key: bytes) -> None:
    """Write ``manifest.sig`` for a version whose manifest is ``manifest_bytes``."""
    body = {"algorithm": _ALGORITHM, "mac": _mac(key, manifest_bytes)}
    (version_dir / SIGNATURE).write_text(json.dumps(body), encoding="utf-8")


def check_signature(version_dir: Path, manifest_bytes: bytes) -> str:
    """Check a version's signature against the configured key.

    Returns:
        ``"signed"`` (checked), ``"unsigned"`` or ``"signed, not checked (no key)"``.

    Raises:
        IntegrityError: A key is configured and the signature is missing, malformed or
            does not match the manifest.
    """
    key = bundle_key()
    file = version_dir / SIGNATURE
    if key is None:
        return "signed, not checked (no key)" if file.is_file() else "unsigned"
    if not file.is_file():
        raise IntegrityError(
            f"{version_dir}: unsigned version refused ({KEY_ENV} is set: only versions "
            "signed with that key are loaded)"
        )
    try:
        body = json.loads(file.read_text(encoding="utf-8"))
        mac = str(body["mac"])
        algorithm = body["algorithm"]
    except (OSError, ValueError, KeyError, TypeError):
        raise IntegrityError(f"{file}: not a signature file; version refused") from None
    if algorithm != _ALGORITHM or not hmac.compare_digest(mac, _mac(key, manifest_bytes)):
        raise IntegrityError(
            f"{version_dir}: signature does not match the manifest (forged, altered, or "
            "signed with another key); version refused"
        )
    return "signed"


#: Bytes per read of an array that is not memory-mapped.
_READ_CHUNK = 16 << 20
#: The pure-Python unpickler, whose opcodes can be overridden (typeshed omits its internals).
_PyUnpickler: Any = pickle._Unpickler


class _ArrayWrapper:
    """joblib's ``NumpyArrayWrapper`` as `_GuardedUnpickler` reads it: an array's metadata.

    joblib writes each array as this wrapper's pickle followed by the array's raw bytes
    (after one byte giving the alignment padding); the attributes come from the pickle's
    BUILD (``subclass``, ``shape``, ``order``, ``dtype``, ``allow_mmap`` and
    ``numpy_array_alignment_bytes``). Reading them here, not through joblib's own
    unpickler, keeps joblib (its parallel machinery, some 30 ms to import) off the start-up
    path of an uncompressed bundle; compressed files still go through joblib's decompressors.
    """

    shape: tuple[int, ...]
    order: str
    dtype: np.dtype[Any]
    allow_mmap: bool = False
    numpy_array_alignment_bytes: int | None = None


class _GuardedUnpickler(_PyUnpickler):  # type: ignore[misc]
    """An unpickler of joblib files that resolves only allow-listed classes.

    Memory-mapped arrays come back as plain ndarray views of the map: `numpy.memmap`
    runs Python code on every index and slice (about a microsecond each, a dozen per
    request), a plain view of the same pages does not. The pure-Python unpickler, as in
    joblib: the array bytes lie between pickle opcodes, and it reads exactly what it uses.
    """

    dispatch = _PyUnpickler.dispatch.copy()

    def __init__(self, filename: str, fh: Any, *, mmap: bool, lazy_sparse: bool) -> None:
        super().__init__(fh)
        self.filename, self.fh, self.mmap, self.lazy_sparse = filename, fh, mmap, lazy_sparse

    def load_build(self) -> None:
        _PyUnpickler.load_build(self)
        top = self.stack[-1]
        if isinstance(top, _ArrayWrapper):
            self.stack[-1] = self._read_array(top)

    dispatch[pickle.BUILD[0]] = load_build

    def _read_array(self, wrapper: _ArrayWrapper) -> NDArray[Any]:
        """The array whose bytes follow ``wrapper`` in the file (mapped when allowed)."""
        dtype, shape, order = wrapper.dtype, tuple(wrapper.shape), wrapper.order
        if dtype.hasobject:
            # Object arrays are a nested pickle stream, resolved by the same allow-list.
            inner = _GuardedUnpickler(
                self.filename, self.fh, mmap=False, lazy_sparse=self.lazy_sparse
            )
            out: NDArray[Any] = inner.load()
            return out
        if wrapper.numpy_array_alignment_bytes is not None:
            padding = int.from_bytes(self.fh.read(1), "little")
            self.fh.read(padding)
        count = math.prod(int(x) for x in shape)
        nbytes = count * dtype.itemsize
        if self.mmap and wrapper.allow_mmap and nbytes:
            offset = self.fh.tell()
            mapped = np.memmap(
                self.filename,
                dtype=dtype,
                mode="r",
                offset=offset,
                shape=shape,
                order="F" if order == "F" else "C",
            )
            self.fh.seek(offset + nbytes)
            view: NDArray[Any] = mapped.view(np.ndarray)
            return view
        # Read in place, in chunks: a decompressing stream gives no more than it has
        # buffered, and the array is never held twice.
        flat = np.empty(count, dtype=dtype)
        raw = flat.view(np.uint8).reshape(-1).data
        done = 0
        while done < nbytes:
            got = self.fh.readinto(raw[done : done + _READ_CHUNK])
            if not got:
                raise IntegrityError(f"{self.filename}: truncated (an array's bytes end early)")
            done += got
        if order == "F":
            return flat.reshape(shape[::-1]).transpose()
        return flat.reshape(shape)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _WRAPPER:
            return _ArrayWrapper
        if (module, name) in _SPARSE:
            return (
                _sparse_state(module, name)
                if self.lazy_sparse
                else super().find_class(module, name)
            )
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "hybridrec" or module.startswith("hybridrec."):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise UnsafePickleError(
            f"{self.filename}: refers to {module}.{name}, which a bundle never holds; "
            "refused before anything ran (a tampered or foreign file)"
        )


def load_pickle(path: str | Path, *, mmap: bool = False, lazy_sparse: bool = False) -> Any:
    """`joblib.load` through the allow-list unpickler (memory-mapped arrays when ``mmap``).

    An uncompressed file (it starts with pickle's PROTO opcode) is read without importing
    joblib; a compressed one through joblib's decompressor for its codec, arrays read into
    memory. With ``lazy_sparse``, scipy sparse matrices come back as `SparseState` (scipy is
    not imported); `sparse` builds them.

    Raises:
        UnsafePickleError: The file names a class or function outside the allow-list, or
            is not a joblib file of this format.
    """
    filename = os.fspath(path)
    with open(filename, "rb") as fh:
        if fh.peek(1)[:1] == pickle.PROTO:
            return _GuardedUnpickler(filename, fh, mmap=mmap, lazy_sparse=lazy_sparse).load()
        from joblib import numpy_pickle

        with numpy_pickle._validate_fileobject_and_memmap(fh, filename, None) as (fobj, _):
            if isinstance(fobj, str):
                raise UnsafePickleError(f"{filename}: a pre-0.10 joblib file; not loaded")
            return _GuardedUnpickler(filename, fobj, mmap=False, lazy_sparse=lazy_sparse).load()
