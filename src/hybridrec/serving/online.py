"""Online updates: each user's interactions since training, kept in memory for fold-in.

Events are written to the event store first; once committed, the worker that took them
applies them here at once, so that user's next recommendation folds them in (and excludes
the items) without retraining. Other workers (and other processes writing to the same
store) catch up with `OnlineHistory.sync`, which reads events past a watermark and re-reads
ids that were still uncommitted the last time (PostgreSQL hands out ids before commit), so
every event is applied exactly once.

A ``dislike`` (thumbs down) removes the item from the user's positive history and denies
it in their recommendations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from hybridrec.serving.events import EventStore, StoredEvent

__all__ = ["OnlineHistory", "UserHistory"]

# Ids still missing below the watermark are re-read for this long, then given up (rolled back).
_GAP_SECONDS = 60.0
_MAX_GAPS = 10_000


@dataclass
class UserHistory:
    """One user's online history.

    Attributes:
        items: Item id → (summed weight, last seen), least recently seen first.
        denied: Item id → when it was disliked.
    """

    items: dict[str, tuple[float, float]] = field(default_factory=dict)
    denied: dict[str, float] = field(default_factory=dict)


class OnlineHistory:
    """Thread-safe per-user history of events received since training.

    Args:
        ttl_seconds: Events older than this (by receive time) are forgotten.
        max_items: Items kept per user (the least recently seen go first).
    """

    def __init__(self, ttl_seconds: float = 7 * 86_400.0, max_items: int = 500) -> None:
        self.ttl = ttl_seconds
        self.max_items = max_items
        self._users: dict[str, UserHistory] = {}
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._watermark: int | None = None
        self._gaps: dict[int, float] = {}
        self._ahead: set[int] = set()
        self.applied = 0
        self._last_forget = 0.0

    # ---- reading --------------------------------------------------------------------------

    def get(self, user_id: str) -> tuple[dict[str, float], list[str]]:
        """The user's recent items (item → weight) and disliked items."""
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                return {}, []
            cutoff = time.time() - self.ttl
            items = {i: w for i, (w, seen) in user.items.items() if seen >= cutoff}
            denied = [i for i, seen in user.denied.items() if seen >= cutoff]
            return items, denied

    def __len__(self) -> int:
        with self._lock:
            return len(self._users)

    @property
    def watermark(self) -> int | None:
        """Every event id up to this one was applied (or is being waited for)."""
        return self._watermark

    # ---- writing --------------------------------------------------------------------------

    def apply(self, events: Iterable[StoredEvent]) -> int:
        """Apply stored events once each (ids already applied are skipped); returns how many."""
        n = 0
        with self._lock:
            for ev in events:
                if not self._claim(ev.id):
                    continue
                self._apply_one(ev)
                n += 1
            self.applied += n
        return n

    def _claim(self, event_id: int) -> bool:
        wm = self._watermark
        if wm is None or event_id > wm:
            if event_id in self._ahead:
                return False
            self._ahead.add(event_id)
            return True
        return self._gaps.pop(event_id, None) is not None

    def _apply_one(self, ev: StoredEvent) -> None:
        user = self._users.setdefault(ev.user_id, UserHistory())
        if ev.event_type == "dislike":
            user.items.pop(ev.item_id, None)
            user.denied[ev.item_id] = ev.received_at
            return
        user.denied.pop(ev.item_id, None)
        weight, _ = user.items.pop(ev.item_id, (0.0, 0.0))
        user.items[ev.item_id] = (weight + ev.weight, ev.received_at)
        while len(user.items) > self.max_items:
            user.items.pop(next(iter(user.items)))

    # ---- catching up with the store --------------------------------------------------------

    def bootstrap(self, store: EventStore) -> int:
        """Load the events received within the TTL and set the watermark; returns the count.

        Raises:
            DatabaseUnavailableError: The store cannot be read (try again later).
        """
        with self._sync_lock:
            top = store.max_event_id()
            since = time.time() - self.ttl
            last, total = 0, 0
            while True:
                batch = store.events_after(last, upto_id=top, received_since=since)
                if not batch:
                    break
                # No watermark yet: every id is claimed as "ahead" and pruned below.
                total += self.apply(batch)
                last = batch[-1].id
            with self._lock:
                self._watermark = top
                self._ahead = {i for i in self._ahead if i > top}
            return total

    def sync(self, store: EventStore, *, limit: int = 10_000) -> int:
        """Apply events other writers committed since the last call; returns how many.

        Raises:
            DatabaseUnavailableError: The store cannot be read.
        """
        if self._watermark is None:
            return self.bootstrap(store)
        with self._sync_lock:
            wm = self._watermark
            now = time.time()
            with self._lock:
                for gid, first in list(self._gaps.items()):
                    if now - first > _GAP_SECONDS:
                        del self._gaps[gid]
                gaps = sorted(self._gaps)[:1000]
            batch = store.events_after(wm, also_ids=gaps, limit=limit)
            n = self.apply(batch)
            new = [ev.id for ev in batch if ev.id > wm]
            if new:
                top = max(new)
                seen = set(new)
                with self._lock:
                    missing = [
                        i
                        for i in range(max(wm + 1, top - 2 * _MAX_GAPS), top)
                        if i not in seen and i not in self._ahead
                    ][:_MAX_GAPS]
                    for i in missing:
                        self._gaps.setdefault(i, now)
                    self._ahead = {i for i in self._ahead if i > top}
                    self._watermark = top
            self._forget_old(now)
            return n

    def _forget_old(self, now: float) -> None:
        if now - self._last_forget < 60.0:
            return
        self._last_forget = now
        cutoff = now - self.ttl
        with self._lock:
            for uid in list(self._users):
                user = self._users[uid]
                user.items = {i: v for i, v in user.items.items() if v[1] >= cutoff}
                user.denied = {i: t for i, t in user.denied.items() if t >= cutoff}
                if not user.items and not user.denied:
                    del self._users[uid]
