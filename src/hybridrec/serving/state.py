"""What one server process holds, and the thread that keeps it in step with the others.

Settings, the model service, the event store and the online history; a background thread
follows the store's ``current`` pointer and events other processes wrote.
"""

from __future__ import annotations

import logging
import threading
import time

from hybridrec.config import Settings
from hybridrec.serving import metrics
from hybridrec.serving.events import DatabaseUnavailableError, EventStore, database_url
from hybridrec.serving.online import OnlineHistory
from hybridrec.serving.service import ModelService, ReloadResult

__all__ = ["AppState"]

log = logging.getLogger(__name__)

# A failing database is logged at most this often by the background sync.
_LOG_EVERY = 60.0


class AppState:
    """The state of one server process (reached by routes through `deps.get_state`).

    Args:
        settings: Process settings.
        service: The model service (default: one over ``settings.model_dir``).
        store: The event store (default: from ``settings.database_url`` / ``data_dir``).
    """

    def __init__(
        self,
        settings: Settings,
        service: ModelService | None = None,
        store: EventStore | None = None,
    ) -> None:
        self.settings = settings
        self.service = service or ModelService(settings.model_dir, version=settings.model_version)
        self.store = store or EventStore(database_url(settings.database_url, settings.data_dir))
        self.online = OnlineHistory(settings.online_history_seconds, settings.online_history_items)
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_db_log = 0.0

    # ---- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Load the model and the event store (neither failure stops the server)."""
        if not self.service.ready:
            self.reload()
        try:
            self.store.ensure_schema()
            self.online.bootstrap(self.store)
        except DatabaseUnavailableError as exc:
            log.error("%s; events will answer 503 until it is back", exc)
        if self.settings.sync_seconds > 0:
            self._thread = threading.Thread(
                target=self._sync_loop, name="hybridrec-sync", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread and close database connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.dispose()
        self.service.close()

    def reload(self, version: str | None = None) -> ReloadResult:
        """Reload the model (never raises; the old version keeps serving on failure)."""
        result = self.service.reload(version)
        self._after_reload(result)
        return result

    def _after_reload(self, result: ReloadResult) -> None:
        metrics.RELOADS.labels("ok" if result.ok else "refused").inc()
        if result.ok and result.version is not None:
            metrics.set_model_version(result.version)

    # ---- background sync ------------------------------------------------------------------

    def sync_once(self) -> None:
        """Catch up with events and promotions made by other processes."""
        self.service.store_changes()
        result = self.service.follow_current()
        if result is not None:
            self._after_reload(result)
        elif not self.service.ready:
            self.reload()
        try:
            self.store.ensure_schema()
            self.online.sync(self.store)
        except DatabaseUnavailableError as exc:
            now = time.time()
            if now - self._last_db_log > _LOG_EVERY:
                self._last_db_log = now
                log.warning("online sync: %s", exc)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.settings.sync_seconds):
            try:
                self.sync_once()
            except Exception:  # pragma: no cover - the loop must survive anything
                log.exception("online sync failed")
