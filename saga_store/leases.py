"""The heartbeat: renews the leases of the sagas this process is running, in the background."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Heartbeat"]

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
