"""Search and URL-import jobs in process: filing with provenance, reasons, redelivery, cancel."""

import csv
import io
import random
import zipfile

import pytest
from ddgs.exceptions import DDGSException
from sqlalchemy import select

from app.db import session_scope
from app.models import Image, Job, SearchResult
from app.services import auth, exports, gather_pipeline, gathering, projects, search
from app.services.jobs import JobReporter
from app.services.search import DuckDuckGoProvider
from tests.gather import cases
from tests.gather.loopback import endless_jpeg_server


class ListProvider:
    """A provider at the boundary: returns a fixed list, counts its searches."""

    name = "loopback"

    def __init__(self, hits, on_search=None) -> None:
        self.hits, self.on_search, self.calls, self.licences = hits, on_search, 0, []

    def search(self, query, *, max_results, wait, licence=None):
        self.calls += 1
        self.licences.append(licence)
        if self.on_search:
            self.on_search()
        return self.hits[:max_results]


@pytest.fixture
def project_id(factory):
    with session_scope(factory) as session:
        user = auth.create_user(session=session, email="g@example.com", password="pw-123456")
        return projects.create_project(session=session, owner=user, name="Bears",
                                       labels=["black"]).id


def start(factory, settings, *, kind="search", **kwargs) -> int:
    with factory() as session:
        project = session.get(projects.Project, project_id_of(session))
        if kind == "search":
            job = gathering.start_search(session=session, settings=settings, project=project,
                                         label="black", provider="loopback", **kwargs)
        else:
            job = gathering.start_url_import(session=session, settings=settings,
                                             project=project, label="black", **kwargs)
        return job.id


def project_id_of(session) -> int:
    return session.scalar(select(projects.Project.id))


def run(factory, storage, settings, job_id) -> Job:
    gather_pipeline.run_gathering(factory=factory, storage=storage, settings=settings,
                                  job_id=job_id)
    with factory() as session:
        return session.get(Job, job_id)


@pytest.fixture
def provider(monkeypatch, photo_server):
    base, _ = photo_server
    provider = ListProvider(cases.hits(base))
    monkeypatch.setitem(search.PROVIDERS, "loopback", lambda settings: provider)
    return provider


def test_search_files_every_good_image_once_with_provenance(
    factory, storage, settings, project_id, provider, photo_server
):
    job = run(factory, storage, settings, start(factory, settings, query="black bear"))
    assert job.status == "succeeded", job.error
    found = len(cases.paths())
    assert job.result == {
        "added": len(cases.GOOD), "duplicates": 1, "rejected": len(cases.REJECTED),
        "failed_downloads": len(cases.FAILED), "found": found,
        "reasons": pytest.approx(cases.expected_reasons()),
    }
    assert job.detail["found"] == found and job.detail["reasons"] == cases.expected_reasons()
    assert job.detail["downloaded"] == len(cases.GOOD) + 1 + len(cases.REJECTED)
    with factory() as session:
        images = list(session.scalars(select(Image).order_by(Image.id)))
        rows = {r.image_url.split(":", 2)[2].split("/", 1)[1]: r
                for r in session.scalars(select(SearchResult))}
        labels = {image.label.name for image in images}
    assert labels == {"black"}
    assert len(images) == len(cases.GOOD)
    assert len({image.content_hash for image in images}) == len(images)
    base = photo_server[0]
    for image in images:
        assert image.source == "search" and image.provider == "loopback"
        assert image.query == "black bear"
        assert image.image_url.startswith(base) and image.page_url.startswith("https://pages.")
        assert image.title.startswith("a bear") and image.width >= 32
    for path in cases.GOOD[1:]:
        assert rows[path.lstrip("/")].status == "added", path
    pair = [rows[path.lstrip("/")].status for path in (cases.GOOD[0], cases.DUPLICATE[0])]
    assert sorted(pair) == ["added", "duplicate"]  # the first to arrive is stored
    for path, reason in {**cases.REJECTED, **cases.FAILED}.items():
        row = rows[path.lstrip("/")]
        assert row.status in ("rejected", "failed") and row.reason.startswith(reason), row.reason


def test_a_licence_filter_is_asked_for_kept_on_each_image_and_exported(
    factory, storage, settings, project_id, provider, photo_server
):
    job = run(factory, storage, settings,
              start(factory, settings, query="black bear", licence="ShareCommercially"))
    assert job.status == "succeeded", job.error
    assert provider.licences == ["ShareCommercially"]
    with factory() as session:
        assert {r.licence for r in session.scalars(select(SearchResult))} == {
            "ShareCommercially"}
        images = list(session.scalars(select(Image)))
        assert {i.licence for i in images} == {
            "free to share and use commercially (search filter: ShareCommercially)"}
        project = session.get(projects.Project, project_id)
        archive = zipfile.ZipFile(exports.export_dataset(session=session, storage=storage,
                                                         project=project))
    rows = list(csv.DictReader(io.StringIO(archive.read("provenance.csv").decode())))
    assert len(rows) == len(images) and {r["licence"] for r in rows} == {
        "free to share and use commercially (search filter: ShareCommercially)"}


def test_a_search_without_a_licence_filter_leaves_the_licence_unknown(
    factory, storage, settings, project_id, provider, photo_server
):
    assert run(factory, storage, settings, start(factory, settings)).status == "succeeded"
    assert provider.licences == [None]
    with factory() as session:
        assert {i.licence for i in session.scalars(select(Image))} == {None}


def test_a_redelivered_job_never_searches_again_and_resumes(
    factory, storage, settings, project_id, provider, photo_server
):
    _, stats = photo_server
    job_id = start(factory, settings)
    assert run(factory, storage, settings, job_id).status == "succeeded"
    requests = stats["requests"]
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        job.status, job.heartbeat_at = "running", None  # the worker died; the task comes back
        rows = list(session.scalars(select(SearchResult).where(SearchResult.status == "added")
                                    .order_by(SearchResult.id).limit(2)))
        for row in rows:
            session.delete(session.get(Image, row.image_id))
            row.status, row.image_id = "pending", None
    job = run(factory, storage, settings, job_id)
    assert job.status == "succeeded" and provider.calls == 1
    assert stats["requests"] == requests + 2
    assert job.result["added"] == len(cases.GOOD)
    with factory() as session:
        assert len(session.scalars(select(Image)).all()) == len(cases.GOOD)
    assert run(factory, storage, settings, job_id).status == "succeeded"  # finished: no-op
    assert provider.calls == 1


def test_cancel_stops_the_downloads(factory, storage, settings, project_id, monkeypatch,
                                    photo_server):
    base, stats = photo_server
    hits = [search.Hit(image_url=f"{base}/slow/0.2/photo/bears/grizzly/{i:04d}.jpg?{i}")
            for i in range(1, 60)]

    def ask_to_cancel():
        with session_scope(factory) as session:
            session.scalars(select(Job)).one().cancel_requested = True

    monkeypatch.setitem(search.PROVIDERS, "loopback",
                        lambda s: ListProvider(hits, on_search=ask_to_cancel))
    job = run(factory, storage, settings, start(factory, settings))
    assert job.status == "cancelled"
    assert stats["requests"] < len(hits)
    with factory() as session:
        pending = session.scalars(select(SearchResult).where(SearchResult.status == "pending"))
        assert len(pending.all()) > 0


class Refusing:
    def images(self, query, **kwargs):
        raise DDGSException("https://duckduckgo.com/i.js 403 Ratelimit")


def test_a_provider_that_keeps_refusing_fails_the_job_with_a_readable_error(
    factory, storage, settings, project_id, monkeypatch
):
    messages = []
    real_progress = JobReporter.progress

    def spy(self, fraction, message, extra=None):
        messages.append(message)
        return real_progress(self, fraction, message, extra)

    monkeypatch.setattr(JobReporter, "progress", spy)
    monkeypatch.setitem(search.PROVIDERS, "loopback", lambda s: DuckDuckGoProvider(
        make_ddgs=Refusing, attempts=2, base_delay=0.02, rng=random.Random(0)))
    job = run(factory, storage, settings, start(factory, settings))
    assert job.status == "failed"
    assert job.error.startswith("image search rate limited after 2 tries")
    assert any(m.startswith("image search rate limited, retrying in 0 s (try 2 of 2)")
               for m in messages)


def test_url_import_uses_the_same_downloader(factory, storage, settings, project_id,
                                             photo_server):
    base, _ = photo_server
    urls = [f"{base}/photo/bears/teddy/0020.jpg", f"{base}/missing/x.jpg",
            "http://10.0.0.8/bear.jpg", f"{base}/photo/bears/teddy/0020.jpg"]
    job = run(factory, storage, settings, start(factory, settings, kind="url_import",
                                                urls=urls))
    assert job.status == "succeeded"
    assert job.result["added"] == 1 and job.result["failed_downloads"] == 2
    assert job.result["reasons"] == {"HTTP 404": 1, "refused": 1}
    with factory() as session:
        image = session.scalars(select(Image)).one()
    assert image.source == "url" and image.provider == "url" and image.image_url == urls[0]


def test_a_download_over_the_cap_stops_early_and_stores_nothing(factory, storage, settings,
                                                                project_id, photo_server):
    sent: list = []
    capped = settings.model_copy(update={"download_max_mb": 1})
    with endless_jpeg_server(sent) as endless:
        urls = [f"{endless}/forever.jpg", f"{photo_server[0]}/photo/bears/teddy/0020.jpg"]
        job = run(factory, storage, capped, start(factory, capped, kind="url_import",
                                                  urls=urls))
    assert job.status == "succeeded", job.error
    assert job.result["added"] == 1 and job.result["failed_downloads"] == 1
    assert job.result["reasons"] == {"too large (over 1 MB)": 1}
    assert sent and sent[0] < 64 * 2**20  # hung up near the cap, not at the server's 1 GB
    with factory() as session:
        stored = session.scalars(select(Image.storage_key)).all()
    assert [key for key, _ in storage.list_keys()] == stored  # one image, no partial files


def test_batches_wait_for_stragglers_briefly_and_lose_nothing(monkeypatch):
    import asyncio

    monkeypatch.setattr(gather_pipeline, "BATCH", 3)
    monkeypatch.setattr(gather_pipeline, "BATCH_WAIT_S", 0.05)

    async def go():
        queue: asyncio.Queue = asyncio.Queue()
        for item in (1, 2, 3, 4):
            queue.put_nowait(item)
        full = await gather_pipeline._next_batch(queue)  # BATCH at most
        late = asyncio.get_running_loop().call_later(0.2, queue.put_nowait, 5)
        partial = await gather_pipeline._next_batch(queue)  # 4, then the wait runs out
        await asyncio.sleep(0.25)
        queue.put_nowait(None)
        last = await gather_pipeline._next_batch(queue)  # 5 came late; None ends
        late.cancel()
        return full, partial, last

    assert asyncio.run(go()) == (([1, 2, 3], False), ([4], False), ([5], True))
