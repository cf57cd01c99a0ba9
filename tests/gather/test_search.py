"""The DuckDuckGo provider with a fake DDGS at its constructor: paging, backoff, failures."""

import random

import pytest
from ddgs import cli as ddgs_cli
from ddgs.exceptions import DDGSException, TimeoutException

from app.services.search import (
    LICENCES,
    DuckDuckGoProvider,
    SearchFailed,
    backoff_delay,
    get_provider,
)


class FakeDDGS:
    """Answers `images(query, page=...)` from a script: a list of rows or an exception."""

    def __init__(self, script: list) -> None:
        self.script = script
        self.calls: list[dict] = []

    def __call__(self):
        return self

    def images(self, query, **kwargs):
        self.calls.append({"query": query, **kwargs})
        step = self.script.pop(0) if self.script else []
        if isinstance(step, BaseException):
            raise step
        return step


def rows(start: int, count: int) -> list[dict]:
    return [{"image": f"https://img{i % 7}.example/{i}.jpg", "url": f"https://page.example/{i}",
             "title": f"bear {i}", "thumbnail": "https://t.example/x.jpg"}
            for i in range(start, start + count)]


class Waits:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, seconds: float, message: str) -> None:
        self.calls.append((seconds, message))


def provider(fake: FakeDDGS, **kwargs) -> DuckDuckGoProvider:
    return DuckDuckGoProvider(make_ddgs=fake, rng=random.Random(1), **kwargs)


def test_pages_until_max_results_with_provenance():
    fake = FakeDDGS([rows(0, 100), rows(100, 100), rows(200, 100)])
    hits = provider(fake).search("grizzly bear", max_results=250, wait=Waits())
    assert len(hits) == 250 and len({h.image_url for h in hits}) == 250
    assert [c["page"] for c in fake.calls] == [1, 2, 3]
    assert all(c["query"] == "grizzly bear" for c in fake.calls)
    assert hits[0].page_url == "https://page.example/0" and hits[0].title == "bear 0"


def test_a_licence_filter_reaches_ddgs_on_every_page_and_none_asks_for_any():
    fake = FakeDDGS([rows(0, 100), rows(100, 100)])
    provider(fake).search("bear", max_results=150, wait=Waits(), licence="Modify")
    assert [c["license_image"] for c in fake.calls] == ["Modify", "Modify"]
    plain = FakeDDGS([rows(0, 10)])
    provider(plain).search("bear", max_results=5, wait=Waits())
    assert "license_image" not in plain.calls[0]


def test_the_offered_licences_are_those_the_installed_ddgs_knows():
    option = next(p for p in ddgs_cli.images.params if p.name == "license_image")
    assert set(LICENCES) == set(option.type.choices)


def test_stops_at_the_end_of_results_and_skips_repeats_and_junk():
    junk = [{"image": "data:image/png;base64,xx"}, {"title": "no url"}, "not a dict"]
    fake = FakeDDGS([rows(0, 30) + junk, rows(0, 30), DDGSException("No results found.")])
    hits = provider(fake).search("bear", max_results=100, wait=Waits())
    assert len(hits) == 30
    assert len(fake.calls) == 2  # the second page brought nothing new
    fake = FakeDDGS([rows(0, 40), DDGSException("No results found.")])
    assert len(provider(fake).search("bear", max_results=100, wait=Waits())) == 40


def test_rate_limits_back_off_with_jitter_and_a_message_then_succeed():
    fake = FakeDDGS([DDGSException("https://duckduckgo.com/i.js 403 Ratelimit"),
                     TimeoutException("timed out"), rows(0, 10)])
    waits = Waits()
    hits = provider(fake, base_delay=10, max_delay=120).search("bear", max_results=10,
                                                                  wait=waits)
    assert len(hits) == 10
    (first, first_msg), (second, second_msg) = waits.calls
    assert 5 <= first <= 10 and 10 <= second <= 20
    assert first_msg == f"image search rate limited, retrying in {first:.0f} s (try 2 of 5)"
    assert second_msg.startswith("image search timed out, retrying in ")


def test_gives_up_with_a_readable_error_after_its_tries():
    fake = FakeDDGS([RuntimeError("boom")] * 3)
    waits = Waits()
    with pytest.raises(SearchFailed) as caught:
        provider(fake, attempts=3).search("bear", max_results=10, wait=waits)
    assert str(caught.value).startswith("image search answered with an error after 3 tries")
    assert "upload images or paste a list of URLs" in str(caught.value)
    assert "boom" not in str(caught.value) and "boom" not in waits.calls[0][1]
    assert len(waits.calls) == 2


# What ddgs 9 raises here without a network (primp's DNSError and ConnectError, re-wrapped).
NO_DNS = DDGSException(DDGSException(
    "DNSError: DNSError('error sending request for url (https://duckduckgo.com/?q=bear) > "
    "error resolving DNS > DNS error: no records found for Query')"))
NO_ROUTE = DDGSException("ConnectError: ConnectError('error sending request for url "
                         "(https://duckduckgo.com/?q=bear) > client error (Connect) > tcp "
                         "connect error > Network is unreachable (os error 101)')")


@pytest.mark.parametrize("offline", [NO_DNS, NO_ROUTE], ids=["dns", "connect"])
def test_no_network_fails_at_once_with_a_plain_message(offline):
    waits = Waits()
    with pytest.raises(SearchFailed) as caught:
        provider(FakeDDGS([offline] * 5)).search("bear", max_results=10, wait=waits)
    assert str(caught.value).startswith(
        "Kodiak cannot reach the image search service from this server")
    assert "Error" not in str(caught.value) and waits.calls == []


def test_no_network_on_a_later_page_keeps_the_earlier_results():
    hits = provider(FakeDDGS([rows(0, 100), NO_ROUTE])).search("bear", max_results=300,
                                                               wait=Waits())
    assert len(hits) == 100


def test_a_failing_later_page_keeps_the_earlier_results():
    fake = FakeDDGS([rows(0, 100)] + [DDGSException("403 Ratelimit")] * 2)
    hits = provider(fake, attempts=2).search("bear", max_results=300, wait=Waits())
    assert len(hits) == 100


def test_backoff_grows_and_is_capped():
    rng = random.Random(0)
    delays = [backoff_delay(n, base=10, cap=60, rng=rng) for n in range(6)]
    assert 5 <= delays[0] <= 10 and 20 <= delays[2] <= 40
    assert all(30 <= d <= 60 for d in delays[3:])


def test_unknown_provider_is_a_readable_error(settings):
    with pytest.raises(SearchFailed, match="unknown search provider 'bing'"):
        get_provider("bing", settings)
    assert get_provider("duckduckgo", settings).name == "duckduckgo"
