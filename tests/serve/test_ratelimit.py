from app.services.ratelimit import RateLimiter, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_at_the_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    wait = limiter.take("a")
    assert abs(wait - 0.5) < 1e-9
    assert limiter.take("b") == 0  # buckets are per key
    clock.now += 0.5
    assert limiter.take("a") == 0 and limiter.take("a") > 0


def test_costs_above_the_burst_are_capped_and_zero_rate_disables():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=4, clock=clock)
    assert limiter.take("k", cost=10) == 0
    assert limiter.take("k", cost=10) == 4
    assert RateLimiter(rate=0, burst=1).take("k", cost=1000) == 0
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


def test_full_buckets_are_pruned():
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=1, max_keys=2, clock=clock)
    for key in "abc":
        limiter.take(key)
    assert set(limiter._buckets) == {"a", "b", "c"}  # drained buckets are kept past max_keys
    clock.now += 1
    limiter.take("d")
    assert set(limiter._buckets) == {"d"}  # a, b and c had refilled completely
