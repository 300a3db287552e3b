"""A thread-safe requests-per-minute limiter: requests are spaced evenly, 60/rpm seconds apart.

Each `acquire()` books the next free slot (never earlier than now) under a lock and then sleeps until it,
so threads sharing one limiter never send two requests closer than the spacing, and an idle limiter
grants no burst. The clock and sleep are injectable so tests measure spacing without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rpm: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if not rpm > 0:
            raise ValueError(f"rate limit must be a positive number of requests per minute, got {rpm}")
        self.interval = 60.0 / rpm
        self._clock, self._sleep = clock, sleep
        self._next = -float("inf")
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for this caller's slot; returns the slot time (on the limiter's clock)."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)
        return slot


_SHARED: dict[tuple, RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_rate_limiter(key: tuple, rpm: float) -> RateLimiter:
    """The one limiter of this process for `key` (e.g. endpoint and model) at `rpm`: captioners built
    separately in several threads still share the budget."""
    with _SHARED_LOCK:
        limiter = _SHARED.get((key, rpm))
        if limiter is None:
            limiter = _SHARED[(key, rpm)] = RateLimiter(rpm)
        return limiter
