"""Gathering jobs, the worker side: store the URL list, download, normalise and file.

A job first stores its URL list as SearchResult rows (a redelivered or retried job finds
them and never searches again), then downloads the pending ones concurrently, normalises
each image in a thread pool as it lands, and files each batch with datasets.add_images,
updating the rows in the same transaction.
"""

import asyncio
import functools
import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import session_scope
from app.models import Job, Project, SearchResult
from app.services import datasets, search
from app.services.downloader import (
    Downloaded,
    DownloadError,
    download_many,
    policy_from_settings,
)
from app.services.errors import InvalidInputError
from app.services.jobs import JobCancelled, JobReporter
from app.storage import Storage, store_failures

log = logging.getLogger(__name__)
BATCH = 64
BATCH_WAIT_S = 0.25  # gather finished downloads this long before filing them together


class StoreFailed(Exception):
    """The store refused a write while a batch was filed (the batch's rows rolled back)."""


def run_gathering(*, factory: sessionmaker[Session], storage: Storage, settings: Settings,
                  job_id: int) -> None:
    """Run a claimed search or URL-import job to its end (idempotent under redelivery)."""
    reporter = JobReporter(factory, job_id)
    job = reporter.claim(stale_seconds=settings.job_stale_seconds)
    if job is None:
        return
    try:
        total = _store_url_list(factory=factory, settings=settings, job=job, reporter=reporter)
        if total == 0:
            raise search.SearchFailed(f"the search for {job.params.get('query')!r} found "
                                      "no images; try another query")
        counts = asyncio.run(_download_and_file(factory=factory, storage=storage,
                                                settings=settings, job=job, reporter=reporter))
    except JobCancelled:
        reporter.finish(status="cancelled", message="cancelled",
                        result=_result(_counts(factory, job_id)))
        return
    except (search.SearchFailed, InvalidInputError) as exc:
        reporter.finish(status="failed", message="failed", error=str(exc))
        return
    except StoreFailed as exc:
        counts = _counts(factory, job_id)
        reporter.finish(status="failed", message="failed", result=_result(counts),
                        error=f"the file store failed ({exc}) after {counts['added']} images "
                              "were added (they stay); search again once it is fixed: the "
                              "images already added count as duplicates")
        return
    except Exception as exc:
        log.exception("gathering job %s failed", job_id)
        reporter.finish(status="failed", message="failed",
                        error=f"unexpected error: {type(exc).__name__}: {exc}")
        return
    if counts is None:
        reporter.finish(status="cancelled", message="cancelled",
                        result=_result(_counts(factory, job_id)))
        return
    result = _result(counts)
    reporter.finish(status="succeeded", message=_summary(counts), result=result)


def _store_url_list(*, factory, settings: Settings, job: Job, reporter: JobReporter) -> int:
    """Store the job's URL list once; a later run finds it. Returns its length."""
    with factory() as session:
        stored = session.scalar(
            select(func.count()).select_from(SearchResult).where(SearchResult.job_id == job.id)
        )
    if stored:
        return stored
    params = job.params
    if job.kind == "search":
        provider = search.get_provider(params["provider"], settings)
        reporter.progress(0.0, f"searching {params['provider']} for {params['query']!r}")
        licence = params.get("licence")
        hits = provider.search(params["query"], max_results=params["max_images"],
                               wait=_cancellable_wait(reporter),
                               **({"licence": licence} if licence else {}))
        rows = [(hit.image_url, hit.page_url, hit.title) for hit in hits]
        provider_name, query = params["provider"], params["query"]
    else:
        rows = [(url, None, None) for url in params["urls"]]
        provider_name, query, licence = "url", "", None
    rows = list({url[:8000]: (url[:8000], page, title) for url, page, title in rows}.values())
    with session_scope(factory) as session:  # one executemany, not an ORM object a row
        session.execute(insert(SearchResult), [
            {"job_id": job.id, "project_id": job.project_id, "label_id": params.get("label_id"),
             "position": i, "image_url": url, "page_url": page, "title": title,
             "provider": provider_name[:50], "query": query[:500], "licence": licence}
            for i, (url, page, title) in enumerate(rows)
        ])
    reporter.update_detail(found=len(rows))
    reporter.progress(0.0, f"found {len(rows)} image URLs; downloading")
    return len(rows)


def _cancellable_wait(reporter: JobReporter):
    """A provider's pause between retries: shown on the job, cancellable each second."""

    def wait(seconds: float, message: str) -> None:
        reporter.update_detail(waiting=message)
        reporter.progress(0.0, message)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if reporter.should_stop():
                raise JobCancelled()
            time.sleep(min(1.0, left))
        reporter.update_detail(waiting=None)

    return wait


def _counts(factory, job_id: int) -> dict:
    """The job's results counted by status, and its refusals by reason (one grouped query:
    run after every batch, it must not read every row of a long job each time)."""
    with factory() as session:
        rows = session.execute(
            select(SearchResult.status, SearchResult.reason, func.count())
            .where(SearchResult.job_id == job_id)
            .group_by(SearchResult.status, SearchResult.reason)
        ).all()
    status: Counter = Counter()
    reasons: Counter = Counter()
    for row_status, reason, count in rows:
        status[row_status] += count
        if row_status in ("rejected", "failed") and reason:
            reasons[_reason_key(reason)] += count
    return {
        "found": status.total(),
        "downloaded": status["added"] + status["duplicate"] + status["rejected"],
        "added": status["added"],
        "duplicates": status["duplicate"],
        "rejected": status["rejected"],
        "failed": status["failed"],
        "reasons": dict(reasons.most_common()),
    }


def _reason_key(reason: str) -> str:
    """A reason without its particulars ('image too small: 1x1 ...' -> 'image too small')."""
    return reason.split(":")[0].strip() if not reason.startswith("refused") else "refused"


def _result(counts: dict) -> dict:
    return {"added": counts["added"], "duplicates": counts["duplicates"],
            "rejected": counts["rejected"], "failed_downloads": counts["failed"],
            "found": counts["found"], "reasons": counts["reasons"]}


def _summary(counts: dict) -> str:
    return (f"{counts['added']} added, {counts['duplicates']} duplicates, "
            f"{counts['rejected']} rejected, {counts['failed']} failed downloads "
            f"of {counts['found']} found")


def _filename(url: str) -> str:
    name = PurePosixPath(urlsplit(url).path).name
    return (name or urlsplit(url).netloc or "download")[:200]


async def _download_and_file(*, factory, storage: Storage, settings: Settings, job: Job,
                             reporter: JobReporter) -> dict | None:
    """Download the pending URLs and file them in batches; None when cancelled."""
    with factory() as session:
        pending = [tuple(row) for row in session.execute(
            select(SearchResult.id, SearchResult.image_url)
            .where(SearchResult.job_id == job.id, SearchResult.status == "pending")
            .order_by(SearchResult.position)
        )]
    counts = await asyncio.to_thread(_counts, factory, job.id)
    _report(reporter, counts)
    if not pending:
        return counts
    limits = datasets.Limits.from_settings(settings)
    policy = policy_from_settings(settings)
    label = job.params.get("label")  # None: the inbox
    # Decoding and re-encoding happen in threads as each download lands (Pillow releases the
    # GIL), overlapping the network; the filing thread only stores. The queue bounds how
    # many finished downloads wait, each in its spooled temp file (at most spool_bytes of
    # memory; a larger body waits on disk), so memory does not grow with the job.
    finished: asyncio.Queue = asyncio.Queue(maxsize=max(policy.concurrency, BATCH))
    loop = asyncio.get_running_loop()
    cpu = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="normalise")

    async def produce() -> None:
        async for key, outcome in download_many(pending, policy=policy):
            if isinstance(outcome, DownloadError):
                await finished.put((key, outcome))
                continue
            prepared = loop.run_in_executor(
                cpu, functools.partial(_prepared, outcome, label=label, ref=key, limits=limits))
            await finished.put((key, prepared))
        await finished.put(None)

    producer = asyncio.create_task(produce())
    try:
        done = False
        while not done:
            batch, done = await _next_batch(finished)
            if batch:
                batch = [(key, await outcome if isinstance(outcome, asyncio.Future) else outcome)
                         for key, outcome in batch]
                counts = await asyncio.to_thread(
                    _file_batch, factory=factory, storage=storage, job=job, batch=batch,
                    limits=limits,
                )
                stop = await asyncio.to_thread(_report, reporter, counts)
                if stop:
                    return None
        await producer
    finally:
        if not producer.done():
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        cpu.shutdown(wait=False, cancel_futures=True)
    return counts


def _prepared(downloaded: Downloaded, *, label: str, ref: int,
              limits: datasets.Limits) -> datasets.Upload:
    """A download read from its spooled temp file and normalised (in a worker thread): the
    whole body is in memory only here, one per thread, and the file is gone after."""
    with downloaded.body:
        upload = datasets.Upload(filename=_filename(downloaded.final_url),
                                 data=downloaded.data, label=label, ref=ref)
    return datasets.prepare_upload(upload=upload, limits=limits)


async def _next_batch(finished: asyncio.Queue) -> tuple[list, bool]:
    """Up to BATCH finished downloads, waiting at most BATCH_WAIT_S after the first (one
    timer for the batch, not one a download)."""
    batch = [await finished.get()]
    try:
        async with asyncio.timeout(BATCH_WAIT_S):
            while batch[-1] is not None and len(batch) < BATCH:
                batch.append(await finished.get())
    except TimeoutError:  # a cancelled get() leaves its item in the queue
        while batch[-1] is not None and len(batch) < BATCH and not finished.empty():
            batch.append(finished.get_nowait())
    if batch[-1] is None:
        return batch[:-1], True
    return batch, False


def _report(reporter: JobReporter, counts: dict) -> bool:
    """Write progress and counters; True when a person asked to cancel."""
    reporter.update_detail(**counts)
    processed = counts["downloaded"] + counts["failed"]
    fraction = processed / counts["found"] if counts["found"] else 0.0
    reporter.progress(min(fraction, 0.99),
                      f"processed {processed} of {counts['found']}: {_summary(counts)}")
    return reporter.should_stop()


def _file_batch(*, factory, storage: Storage, job: Job, batch: list,
                limits: datasets.Limits) -> dict:
    """File one batch of finished downloads and mark their rows, in one transaction.

    The rows are read as plain tuples and marked with one executemany by primary key: the
    filing thread holds the GIL for less, so the download loop waits less for it."""
    with session_scope(factory) as session:
        project = session.get(Project, job.project_id)
        rows = {row.id: row for row in session.execute(
            select(SearchResult.id, SearchResult.image_url, SearchResult.page_url,
                   SearchResult.title, SearchResult.provider, SearchResult.query,
                   SearchResult.licence)
            .where(SearchResult.id.in_([key for key, _ in batch]))
        )}
        marks: dict[int, dict] = {}
        uploads = []
        for key, upload in batch:
            row = rows[key]
            if isinstance(upload, DownloadError):
                marks[key] = _mark(key, "failed", reason=str(upload))
                continue
            upload.provenance = {"image_url": row.image_url, "page_url": row.page_url,
                                 "title": row.title, "provider": row.provider,
                                 "query": row.query or None,
                                 "licence": search.licence_text(row.licence)}
            uploads.append(upload)
        if uploads:
            try:
                added = datasets.add_images(session=session, storage=storage, project=project,
                                            uploads=uploads, limits=limits,
                                            source="search" if job.kind == "search" else "url")
            except store_failures() as exc:
                log.exception("job %s: the store refused a write", job.id)
                raise StoreFailed(getattr(exc, "strerror", None)
                                  or f"{type(exc).__name__}: {exc}") from exc
            for entry in added.added:
                marks[entry["ref"]] = _mark(entry["ref"], "added", image_id=entry["image_id"])
            for entry in added.duplicates:
                marks[entry["ref"]] = _mark(entry["ref"], "duplicate", image_id=entry["image_id"],
                                            reason=f"same image as image {entry['image_id']}")
            for entry in added.rejected:
                marks[entry["ref"]] = _mark(entry["ref"], "rejected", reason=entry["reason"])
        if marks:
            session.execute(update(SearchResult), list(marks.values()))
    return _counts(factory, job.id)


def _mark(key: int, status: str, *, image_id: int | None = None,
          reason: str | None = None) -> dict:
    """A search result's new state, as one row of the batch's UPDATE by primary key."""
    return {"id": key, "status": status, "image_id": image_id,
            "reason": reason[:1000] if reason else None}
