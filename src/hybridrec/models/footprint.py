"""What fitting a model will cost, estimated from the data's shape before anything is fit.

Each recommender class answers `Recommender.footprint` (peak bytes while fitting, and rough
seconds on one core) from a `DataShape`. The pipeline compares the peak with its memory
budget (by default 60% of the memory available when the run starts) and skips, up front
and with one line saying what setting would make it fit, a model that would not fit, so a
run always ends with a model instead of failing after the others were trained.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DataShape", "Footprint", "available_memory", "human_bytes", "memory_budget"]

# Rough sustained rates on one core, for time estimates: dense BLAS and sparse work.
DENSE_FLOPS = 2.0e10
SPARSE_OPS = 5.0e7


@dataclass(frozen=True)
class DataShape:
    """The sizes a model's cost depends on.

    Attributes:
        users: Users with training interactions.
        items: Items with training interactions.
        nnz: Distinct (user, item) cells.
        catalog: Items in the catalog (content models score all of them); ``items`` when
            there is no catalog.
    """

    users: int
    items: int
    nnz: int
    catalog: int

    @property
    def mean_history(self) -> float:
        """Average items per user."""
        return self.nnz / max(self.users, 1)


@dataclass(frozen=True)
class Footprint:
    """Estimated peak memory (bytes) and time (seconds) of fitting one model."""

    bytes: float
    seconds: float

    def describe(self) -> str:
        """E.g. ``~1.2 GB, ~10 s``."""
        return f"~{human_bytes(self.bytes)}, ~{_human_seconds(self.seconds)}"


def human_bytes(n: float) -> str:
    """Bytes in B/KB/MB/GB, one decimal."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover - the loop always returns


def _human_seconds(s: float) -> str:
    if s < 60:
        return f"{max(s, 0.1):.1f} s" if s < 10 else f"{s:.0f} s"
    return f"{s / 60:.0f} min"


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable; else physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def memory_budget(fraction: float, limit_gb: float | None = None) -> int:
    """The bytes one model may use: ``limit_gb`` when given, else a share of what is free."""
    if limit_gb is not None:
        return int(limit_gb * (1 << 30))
    return int(fraction * available_memory())
