"""The service object: which bundle is being served, and swapping it safely.

A reload opens the new version completely (hashes checked, collaborative part mapped)
beside the old one and swaps a single reference; requests that already hold the old bundle
finish on it. A version that fails verification or loading is refused and the old one keeps
serving. The HTTP layer reaches the bundle only through this object.

With several server processes, each holds its own `ModelService`; `follow_current` lets a
process notice a promotion made elsewhere (another worker's reload, ``bundle promote``).

A store version is served from a *private copy* (``private_copy``, on by default): its files
are copied into a directory only this process uses, verified there, and memory-mapped from
there. Memory-mapped arrays over a file that someone truncates kill a process with SIGBUS
(the pages behind the new end of file are gone), and a hash check before use cannot prevent
that — only not mapping the store's own inodes can. `store_changes` (called by the sync
loop) compares the store's files with what was copied and logs a change once; the process
keeps serving its copy. A copy costs one sequential read of the version at reload.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from hybridrec.bundle import Bundle, ModelStore, open_bundle
from hybridrec.bundle.bundle import file_stat
from hybridrec.errors import HybridrecError

__all__ = ["ModelService", "ReloadResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: the version now served, and the error when it was refused."""

    ok: bool
    version: str | None
    previous: str | None
    seconds: float
    error: str | None = None


class ModelService:
    """Holds the served `Bundle` of a model directory.

    Args:
        model_dir: The model store (or a directory of loose artifacts).
        version: Serve this version instead of ``current``.
        verify: Check file hashes on every load (on by default; off only for trusted
            local experiments).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        version: str | None = None,
        verify: bool = True,
        private_copy: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.private_copy = private_copy
        # Private copies: the served one and the one before (requests may still hold it).
        self._copies: list[Path] = []
        # The store's files of the served version, as they were when copied.
        self._watched: tuple[Path, dict[str, tuple[int, int]]] | None = None
        self._reported: set[str] = set()
        _SERVICES.add(self)
        self.pinned_version = version
        self.verify = verify
        self._bundle: Bundle | None = None
        self._reload_lock = threading.Lock()
        self.started = time.time()
        #: The last result of `reload`, and how many reloads were refused.
        self.last_result: ReloadResult | None = None
        self.refused = 0
        # A pointer target that failed to load: not retried until the pointer moves.
        self._refused_target: str | None = None

    @property
    def ready(self) -> bool:
        """Whether a bundle is loaded."""
        return self._bundle is not None

    @property
    def bundle(self) -> Bundle:
        """The bundle being served (hold the reference for the length of a request).

        Raises:
            HybridrecError: Nothing is loaded yet.
        """
        bundle = self._bundle
        if bundle is None:
            raise HybridrecError(f"{self.model_dir}: no model loaded yet")
        return bundle

    def reload(self, version: str | None = None) -> ReloadResult:
        """Load ``version`` (default: the pinned one, else ``current``) and swap it in.

        Never raises for a bad version: the result says why it was refused, the log too,
        and the bundle that was being served stays.
        """
        with self._reload_lock:
            previous = self._bundle.version if self._bundle is not None else None
            start = time.perf_counter()
            try:
                bundle = self._open(version or self.pinned_version)
            except (HybridrecError, OSError, EOFError, ValueError) as exc:
                elapsed = time.perf_counter() - start
                log.error("reload refused, still serving %s: %s", previous, exc)
                self.refused += 1
                self.last_result = ReloadResult(False, previous, previous, elapsed, str(exc))
                return self.last_result
            self._bundle = bundle
            elapsed = time.perf_counter() - start
            log.info("serving %s (was %s), loaded in %.3fs", bundle.version, previous, elapsed)
            self.last_result = ReloadResult(True, bundle.version, previous, elapsed)
            return self.last_result

    def _open(self, version: str | None) -> Bundle:
        store = ModelStore(self.model_dir)
        if not self.private_copy or (version is None and store.current() is None):
            bundle = open_bundle(self.model_dir, version, verify=self.verify)
            if self.verify:
                # Refused now, not at the request that first reads a bad block.
                bundle.check_all()
            return bundle
        source = store.path(version)
        copy = Path(tempfile.mkdtemp(prefix=f"hybridrec-serving-{source.name}-"))
        try:
            stats = {}
            for file in sorted(source.iterdir()):
                if file.is_file():
                    stats[file.name] = file_stat(file)
                    shutil.copyfile(file, copy / file.name)
            bundle = Bundle.open(copy, verify=self.verify)
        except BaseException:
            shutil.rmtree(copy, ignore_errors=True)
            raise
        self._copies.append(copy)
        while len(self._copies) > 2:
            shutil.rmtree(self._copies.pop(0), ignore_errors=True)
        self._watched = (source, stats)
        self._reported = set()
        return bundle

    def store_changes(self) -> list[str]:
        """Files of the served version that changed in the store since they were loaded.

        Each change is logged once; the process keeps serving its private copy.
        """
        if self._watched is None:
            return []
        source, stats = self._watched
        changed = []
        for name, before in stats.items():
            try:
                now = file_stat(source / name)
            except OSError:
                now = None
            if now != before:
                changed.append(name)
                if name not in self._reported:
                    self._reported.add(name)
                    log.error(
                        "%s: %s changed on disk since it was loaded (size %s -> %s); still "
                        "serving the copy verified at load",
                        source,
                        name,
                        before[0],
                        now[0] if now else "missing",
                    )
        return changed

    def __del__(self) -> None:
        for copy in getattr(self, "_copies", []):
            shutil.rmtree(copy, ignore_errors=True)

    def close(self) -> None:
        """Remove the private copies (at shutdown)."""
        for copy in self._copies:
            shutil.rmtree(copy, ignore_errors=True)
        self._copies = []

    def follow_current(self) -> ReloadResult | None:
        """Reload when the store's ``current`` pointer names another version than the served.

        Nothing happens (None) when they agree or a version is pinned.

        A target that was refused once is not retried until the pointer moves again.
        """
        if self.pinned_version is not None:
            return None
        target = ModelStore(self.model_dir).current()
        served = self._bundle.version if self._bundle is not None else None
        if target is None or target in (served, self._refused_target):
            return None
        result = self.reload(target)
        self._refused_target = None if result.ok else target
        return result


_SERVICES: weakref.WeakSet[ModelService] = weakref.WeakSet()


@atexit.register
def _remove_copies() -> None:  # pragma: no cover - at interpreter exit
    for service in list(_SERVICES):
        service.close()
