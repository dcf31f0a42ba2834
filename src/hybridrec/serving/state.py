"""What one server process holds, and the thread that keeps it in step with the others.

Settings, the model service, the event store and the online history; a background thread
follows the store's ``current`` pointer, its A/B test (``ab.json``) and events other
processes wrote.
"""

from __future__ import annotations

import logging
import threading
import time

from hybridrec.bundle import Bundle
from hybridrec.config import Settings
from hybridrec.errors import HybridrecError
from hybridrec.serving import ab, metrics
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
        # The running A/B test and the service of its arm B, swapped together as one
        # reference so that a request never sees a test without its B bundle.
        self._ab: tuple[ab.ABConfig, ModelService] | None = None
        self._ab_error: str | None = None

    # ---- A/B test -------------------------------------------------------------------------

    @property
    def ab_config(self) -> ab.ABConfig | None:
        """The A/B test being served (None when none runs, or its B failed to load)."""
        running = self._ab
        return running[0] if running is not None else None

    def arm_bundle(self, user_id: str | None) -> tuple[str | None, Bundle]:
        """The user's arm (None without a test) and the bundle that arm serves.

        Raises:
            HybridrecError: No model is loaded yet.
        """
        running = self._ab
        if running is None:
            return None, self.service.bundle
        arm = ab.arm_of(running[0], user_id)
        return arm, (running[1].bundle if arm == "B" else self.service.bundle)

    def arm_of(self, user_id: str | None) -> str | None:
        """The user's arm in the running test (None without one)."""
        return ab.arm_of(self.ab_config, user_id)

    def sync_ab(self) -> None:
        """Follow the store's ``ab.json``: start, change or end the test this process serves.

        Arm B is a `ModelService` pinned to its version, loaded and verified like the
        served one. A test whose file is invalid or whose B cannot be loaded is not run
        (every user gets A), with one error in the log per distinct problem.
        """
        try:
            config = ab.read_config(self.service.model_dir)
        except HybridrecError as exc:
            self._ab_failed(str(exc))
            return
        running = self._ab
        if config is None:
            if running is not None:
                log.info("A/B test ended; serving every user the current version")
                self._ab = None
                running[1].close()
            self._ab_error = None
            return
        if running is not None and running[0] == config:
            running[1].store_changes()
            return
        if running is not None and running[1].pinned_version == config.b_version:
            self._ab = (config, running[1])
            return
        service = ModelService(self.service.model_dir, version=config.b_version)
        result = service.reload()
        if not result.ok:
            service.close()
            self._ab_failed(f"A/B arm B {config.b_version}: {result.error}")
            return
        self._ab = (config, service)
        self._ab_error = None
        if running is not None:
            running[1].close()
        log.info(
            "A/B test: %.0f%% of users get %s (arm B), the rest current (arm A)",
            100 * config.share_b,
            config.b_version,
        )

    def _ab_failed(self, message: str) -> None:
        running, self._ab = self._ab, None
        if running is not None:
            running[1].close()
        if message != self._ab_error:
            self._ab_error = message
            log.error("%s; not running the A/B test (every user gets arm A's version)", message)

    # ---- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Load the model and the event store (neither failure stops the server)."""
        if not self.service.ready:
            self.reload()
        self.sync_ab()
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
        if self._ab is not None:
            self._ab[1].close()

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
        self.sync_ab()
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
