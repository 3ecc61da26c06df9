"""The heartbeat: renews the leases of the sagas this process is running, in the background."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

__all__ = ["RENEW_AFTER", "Heartbeat", "renewal_due"]

#: a journal write extends its saga's lease once this share of the lease has passed since the
#: lease was last extended: most writes of a fast saga then leave the lease column, and its
#: index, alone (on PostgreSQL the row update can then be HOT); without the heartbeat, a step
#: shorter than nine tenths of a lease still finds its lease held
RENEW_AFTER = 0.1


def renewal_due(now: datetime, until: datetime | None, lease: timedelta) -> bool:
    """Whether a write at ``now`` should extend a lease that runs ``until`` (None: not known)."""
    return until is None or until - now <= lease * (1 - RENEW_AFTER)


log = logging.getLogger("saga_store")


class Heartbeat:
    """Calls ``renew`` every ``interval`` seconds on a daemon thread, started on demand."""

    def __init__(self, renew: Callable[[], list[str]], interval: float) -> None:
        self._renew = renew
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="saga-store-heartbeat", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                for saga_id in self._renew():
                    log.warning("lease lost on saga %s: another worker took it over", saga_id)
            except Exception:
                log.exception("lease renewal failed; trying again in %.1f s", self._interval)
