"""The model store: one directory per trained version and an atomic ``current`` pointer.

Layout::

    <model-dir>/
      current                 text file naming the live version (replaced atomically)
      history.json            versions in the order they were made current (for rollback),
                              and the retraining decisions (deployed or kept, and why)
      <version>/manifest.json what was trained, on what, with which metrics, file hashes
      <version>/cf.joblib     collaborative part (see `hybridrec.bundle.bundle`)
      <version>/content.joblib content part (when the pipeline has content models)
      <version>/items.parquet the catalog, for titles (when one was loaded)

A version is written under a temporary name and renamed into place when complete, and
``current`` moves only after that, so a crash or a failed training never leaves a
half-written version live: the store keeps serving what it served before. A writer killed
mid-save leaves only a ``.tmp-*`` directory, which `versions` ignores and the next write
removes once its process is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybridrec.bundle.safety import bundle_key, sign
from hybridrec.errors import DataError, StoreConflictError

__all__ = ["ModelStore", "pid_alive"]

_CURRENT = "current"
_HISTORY = "history.json"
_MANIFEST = "manifest.json"
_TMP_PREFIX = ".tmp-"
# Serializes read-modify-write of history.json between processes (promote, rollback and a
# retraining's decision record may run at once).
_HISTORY_LOCK = ".history.lock"
#: Retraining decisions kept in history.json (the oldest go first).
DECISIONS_KEPT = 1000


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ModelStore:
    """Versions of trained pipelines under one directory.

    Args:
        root: The model directory (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        """Complete versions, oldest first (names sort by creation time)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / _MANIFEST).is_file()
        )

    def current(self) -> str | None:
        """The live version's name, or None when nothing was promoted yet."""
        pointer = self.root / _CURRENT
        if not pointer.is_file():
            return None
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except (UnicodeDecodeError, OSError):
            raise DataError(
                f"{pointer}: corrupt (not a version name); repair it with "
                f"'hybridrec bundle promote VERSION --model-dir {self.root}'"
            ) from None
        if name and not _is_version_name(name):
            raise DataError(
                f"{pointer}: corrupt (holds {name[:40]!r}, not a version name); repair it "
                f"with 'hybridrec bundle promote VERSION --model-dir {self.root}'"
            )
        return name or None

    def path(self, version: str | None = None) -> Path:
        """Directory of ``version`` (default: the current one).

        Raises:
            DataError: There is no such version, or no current one.
        """
        name = version or self.current()
        if name is None:
            raise DataError(
                f"{self.root}: no trained model here (run 'hybridrec train --model-dir "
                f"{self.root}')"
            )
        if not _is_version_name(name):
            raise DataError(f"{self.root}: {name[:40]!r} is not a version name")
        path = self.root / name
        if not (path / _MANIFEST).is_file():
            raise DataError(f"{self.root}: no version {name!r} (have: {self.versions()})")
        return path

    def manifest(self, version: str | None = None) -> dict[str, Any]:
        """The manifest of ``version`` (default: current)."""
        data: dict[str, Any] = json.loads(
            (self.path(version) / _MANIFEST).read_text(encoding="utf-8")
        )
        return data

    def write_version(
        self,
        write: Callable[[Path], dict[str, Any]],
        *,
        promote: bool = True,
    ) -> str:
        """Create a new version.

        Args:
            write: Called with an empty directory; writes the artifacts into it and returns
                the manifest (the store adds ``version`` and ``created_at``).
            promote: Make the new version current once it is complete.

        Returns:
            The new version's name.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        # Names sort by creation time (microseconds, so quick successive saves stay ordered).
        version = f"{now:%Y%m%d-%H%M%S-%f}"
        while (self.root / version).exists():
            now = datetime.now(UTC)
            version = f"{now:%Y%m%d-%H%M%S-%f}"
        self._remove_stale_temps()
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f"{_TMP_PREFIX}{os.getpid()}-"))
        try:
            manifest = write(tmp)
            manifest = {"version": version, "created_at": now.isoformat(), **manifest}
            text = json.dumps(manifest, indent=2, default=str, allow_nan=False)
            (tmp / _MANIFEST).write_text(text, encoding="utf-8")
            key = bundle_key()
            if key is not None:
                sign(tmp, text.encode("utf-8"), key)
            # A finished version is immutable: its files are read-only (the store still
            # removes them when pruning; that needs only the directory writable).
            for file in tmp.rglob("*"):
                if file.is_file():
                    file.chmod(0o444)
            # mkdtemp makes the directory private; a serving process may run as another user.
            tmp.chmod(0o755)
            os.replace(tmp, self.root / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if promote:
            self.promote(version)
        return version

    def promote(self, version: str) -> None:
        """Point ``current`` at ``version`` atomically, and record it for `rollback`."""
        self.path(version)
        with self._history_lock():
            history = [v for v in self.history() if v in self.versions()]
            if not history or history[-1] != version:
                history.append(version)
            self._set_current(version, history)

    def history(self) -> list[str]:
        """Versions in the order they were made current (oldest first)."""
        if not (self.root / _HISTORY).is_file():
            current = self.current()
            return [current] if current else []
        return [str(v) for v in self._history_data().get("promoted", [])]

    def rollback(self, expect: str | None = None) -> str:
        """Make the version that was current before this one current again.

        Repeated rollbacks keep going back. Without a recorded history, the newest version
        older than the current one is used. With ``expect``, only while ``expect`` is
        current (checked under the store's lock): a client that showed a version as current
        must not take the store back a second step because another rollback came first.

        Returns:
            The version now current.

        Raises:
            DataError: Nothing is current, or there is no earlier version to go back to.
            StoreConflictError: ``expect`` is not the current version.
        """
        with self._history_lock():
            current = self.current()
            if current is None:
                raise DataError(f"{self.root}: nothing is current, nothing to roll back")
            if expect is not None and current != expect:
                raise StoreConflictError(
                    f"the store's current version is {current}, not {expect} (it moved "
                    "meanwhile); look at the versions again before rolling back"
                )
            existing = set(self.versions())
            history = [v for v in self.history() if v in existing]
            if current in history:
                # Entries after current's last one were never current after it: a process
                # that died between writing history.json and the pointer left them.
                history = history[: len(history) - history[::-1].index(current)]
            while history and history[-1] == current:
                history.pop()
            if not history:
                older = [v for v in self.versions() if v < current]
                if not older:
                    raise DataError(f"{self.root}: no version before {current} to roll back to")
                history = [older[-1]]
            target = history[-1]
            self._set_current(target, history)
        return target

    def record_decision(self, decision: Mapping[str, Any]) -> None:
        """Append a retraining decision to ``history.json`` (`DECISIONS_KEPT` are kept).

        A decision says which candidate was compared with which serving version, whether it
        was deployed and why (`hybridrec.pipeline.retrain`); a candidate that was not is
        still in the store, not current. Nothing else in the file changes.

        Raises:
            DataError: ``history.json`` is not valid JSON.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._history_lock():
            data = self._history_data()
            if "promoted" not in data:
                data["promoted"] = self.history()
            decisions = [*data.get("decisions", []), dict(decision)][-DECISIONS_KEPT:]
            text = json.dumps({**data, "decisions": decisions}, indent=1, allow_nan=False)
            _atomic_write_text(self.root / _HISTORY, text)

    def decisions(self) -> list[dict[str, Any]]:
        """The retraining decisions recorded, oldest first."""
        return [dict(d) for d in self._history_data().get("decisions", [])]

    def _history_data(self) -> dict[str, Any]:
        file = self.root / _HISTORY
        if not file.is_file():
            return {}
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{file}: not valid JSON; fix or delete it") from None
        return dict(data) if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _history_lock(self) -> Iterator[None]:
        with open(self.root / _HISTORY_LOCK, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _set_current(self, version: str, history: list[str]) -> None:
        # Other keys of the file (the retraining decisions) stay as they are.
        data = {**self._history_data(), "promoted": history}
        _atomic_write_text(self.root / _HISTORY, json.dumps(data, indent=1))
        _atomic_write_text(self.root / _CURRENT, version + "\n")

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` versions; current and its rollback target stay.

        Returns:
            The versions deleted.
        """
        if keep < 1:
            raise DataError(f"keep must be at least 1 (got {keep})")
        versions = self.versions()
        protected = {v for v in (self.current(), *self.history()[-2:]) if v}
        removed = []
        for name in versions[: max(0, len(versions) - keep)]:
            if name in protected:
                continue
            shutil.rmtree(self.root / name)
            removed.append(name)
        return removed

    def size(self, version: str) -> int:
        """Bytes on disk of ``version``'s files."""
        return sum(p.stat().st_size for p in self.path(version).rglob("*") if p.is_file())

    def _remove_stale_temps(self) -> None:
        """Remove half-written versions whose writer process no longer runs."""
        for p in self.root.glob(f"{_TMP_PREFIX}*"):
            pid = p.name[len(_TMP_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            shutil.rmtree(p, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_version_name(name: str) -> bool:
    """A directory name inside the store: no separators, no dot-dot, nothing hidden."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")
