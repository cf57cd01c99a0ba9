"""Token-bucket rate limits (one bucket per API key, account or client IP): in the web process
on the embedded default, in Redis when Redis is configured (shared by every replica)."""

import logging
import math
import threading
import time

log = logging.getLogger(__name__)


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

    def give_back(self, key: str, cost: float = 1.0) -> None:
        """Return tokens taken for something that turned out not to count (up to burst)."""
        if self.rate <= 0:
            return
        now = self.clock()
        with self._lock:
            tokens, stamp = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - stamp) * self.rate + cost)
            self._buckets[key] = (tokens, now)

    def _prune(self, now: float) -> None:
        full = [key for key, (tokens, stamp) in self._buckets.items()
                if tokens + (now - stamp) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]


class SignInThrottle:
    """Failed sign-ins per account and per client IP: `failures` per `window_s` each.

    An attempt takes a token from both buckets before the password is checked (so parallel
    guesses cannot all slip in) and gives them back when it succeeds; an empty bucket turns
    every attempt away, the right password too, until a token refills.
    """

    def __init__(self, *, failures_per_account: int, failures_per_ip: int, window_s: float,
                 clock=time.monotonic, redis_url: str | None = None) -> None:
        if redis_url:
            self.by_account = rate_limiter(redis_url, name="sign-in-account",
                                           burst=failures_per_account,
                                           rate=failures_per_account / window_s)
            self.by_ip = rate_limiter(redis_url, name="sign-in-ip", burst=failures_per_ip,
                                      rate=failures_per_ip / window_s)
            return
        self.by_account = RateLimiter(rate=failures_per_account / window_s,
                                      burst=failures_per_account, clock=clock)
        self.by_ip = RateLimiter(rate=failures_per_ip / window_s, burst=failures_per_ip,
                                 clock=clock)

    def attempt(self, *, account: str, ip: str) -> float:
        """0 when this attempt may go ahead (its tokens taken), else the seconds to wait."""
        wait = self.by_ip.take(f"ip:{ip}")
        if wait:
            return wait
        wait = self.by_account.take(f"account:{account}")
        if wait:
            self.by_ip.give_back(f"ip:{ip}")
        return wait

    def give_back(self, *, account: str, ip: str) -> None:
        """The attempt does not count (it signed in, or never got to check the password)."""
        self.by_account.give_back(f"account:{account}")
        self.by_ip.give_back(f"ip:{ip}")


# One token bucket in a Redis hash, refilled and taken atomically on the server's clock, so
# every web replica shares it. A negative cost gives tokens back.
_BUCKET_SCRIPT = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(v[1]) or burst
local stamp = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if cost < 0 then
  tokens = math.min(burst, tokens - cost)
elseif tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RedisRateLimiter:
    """The same token buckets as `RateLimiter`, kept in Redis for all web replicas at once.

    A Redis that does not answer lets requests through (logged): a limiter must not turn
    an outage of its store into an outage of predictions and sign-ins.
    """

    def __init__(self, client, *, name: str, rate: float, burst: float) -> None:
        self.client = client
        self.name = name
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._script = client.register_script(_BUCKET_SCRIPT)

    def take(self, key: str, cost: float = 1.0) -> float:
        if self.rate <= 0:
            return 0.0
        return self._run(key, min(cost, self.burst))

    def give_back(self, key: str, cost: float = 1.0) -> None:
        if self.rate > 0:
            self._run(key, -cost)

    def _run(self, key: str, cost: float) -> float:
        try:
            return float(self._script(keys=[f"kodiak:rl:{self.name}:{key}"],
                                      args=[self.rate, self.burst, cost]))
        except Exception:
            log.warning("rate limit store not answering; letting %s through", key, exc_info=True)
            return 0.0


def rate_limiter(redis_url: str | None, *, name: str, rate: float, burst: float):
    """Buckets shared through Redis when there is one (scaled out), else in this process."""
    if not redis_url:
        return RateLimiter(rate=rate, burst=burst)
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return RedisRateLimiter(client, name=name, rate=rate, burst=burst)


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
