"""Rate limits in Redis: one bucket shared by every web replica, on the real Redis."""

import time

import pytest

from app.services.ratelimit import RedisRateLimiter, SignInThrottle, rate_limiter
from tests.integration.conftest import empty_redis

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def client():
    with empty_redis(REDIS_URL) as client:
        yield client


def test_two_replicas_share_one_bucket(client):
    first = rate_limiter(REDIS_URL, name="t", rate=0.5, burst=4)
    second = rate_limiter(REDIS_URL, name="t", rate=0.5, burst=4)
    assert isinstance(first, RedisRateLimiter)
    taken = [limiter.take("key:a") for limiter in (first, second, first, second)]
    assert taken == [0, 0, 0, 0]
    wait = second.take("key:a")
    assert 1.5 < wait <= 2.0  # the fifth request, whichever replica sees it, waits
    assert first.take("key:b") == 0  # buckets are per key
    first.give_back("key:a")
    assert second.take("key:a") == 0


def test_buckets_refill_on_the_servers_clock_and_expire(client):
    limiter = rate_limiter(REDIS_URL, name="r", rate=20, burst=2)
    assert limiter.take("k") == 0 and limiter.take("k") == 0 and limiter.take("k") > 0
    time.sleep(0.12)
    assert limiter.take("k") == 0
    assert 0 < client.ttl("kodiak:rl:r:k") <= 2


def test_sign_in_throttle_in_redis_holds_across_replicas(client):
    replicas = [SignInThrottle(failures_per_account=3, failures_per_ip=100, window_s=900,
                               redis_url=REDIS_URL) for _ in range(2)]
    waits = [replicas[i % 2].attempt(account="a@example.com", ip=f"10.0.0.{i}")
             for i in range(4)]
    assert waits[:3] == [0, 0, 0] and waits[3] > 0


def test_a_redis_that_does_not_answer_lets_requests_through():
    limiter = rate_limiter("redis://127.0.0.1:1/0", name="down", rate=1, burst=1)
    assert [limiter.take("k") for _ in range(3)] == [0, 0, 0]
