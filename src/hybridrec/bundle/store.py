"""The model store: one directory per trained version and an atomic ``current`` pointer.

Layout::

    <model-dir>/
      current                 text file naming the live version (replaced atomically)
      <version>/manifest.json what was trained, on what, with which metrics
      <version>/models/<name>.joblib
      <version>/items.parquet the catalog, for titles (when one was loaded)

A version is written under a temporary name and renamed into place when complete, and
``current`` moves only after that, so a crash or a failed training never leaves a
half-written version live: the store keeps serving what it served before.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybridrec.errors import DataError

__all__ = ["ModelStore"]

_CURRENT = "current"
_MANIFEST = "manifest.json"


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
        name = pointer.read_text(encoding="utf-8").strip()
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
        version = f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-{version}-"))
        try:
            manifest = write(tmp)
            manifest = {"version": version, "created_at": now.isoformat(), **manifest}
            text = json.dumps(manifest, indent=2, default=str, allow_nan=False)
            (tmp / _MANIFEST).write_text(text, encoding="utf-8")
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
        """Point ``current`` at ``version`` atomically."""
        self.path(version)
        _atomic_write_text(self.root / _CURRENT, version + "\n")
