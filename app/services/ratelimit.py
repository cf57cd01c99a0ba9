"""Token-bucket rate limits kept in the web process (one bucket per API key or client IP)."""

import math
import threading
import time


class RateLimiter:
    """`rate` tokens per second refill each bucket up to `burst`; a request takes `cost`.

    A rate of 0 turns the limit off. Buckets that have refilled completely carry no state,
    so they are dropped when the table grows past `max_keys`.
    """

    def __init__(self, *, rate: float, burst: float, max_keys: int = 100_000,
                 clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1.0) -> float:
        """0 when allowed (tokens taken), else the seconds until `cost` tokens are there."""
        if self.rate <= 0:
            return 0.0
        cost = min(cost, self.burst)
        now = self.clock()
        with self._lock:
            tokens, stamp = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - stamp) * self.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                if len(self._buckets) > self.max_keys:
                    self._prune(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [key for key, (tokens, stamp) in self._buckets.items()
                if tokens + (now - stamp) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
