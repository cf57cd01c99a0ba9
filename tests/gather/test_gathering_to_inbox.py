"""Searches and URL imports without a label file their images in the inbox, and queue the
inbox's organize job when they end."""

import pytest
from sqlalchemy import select

from app.models import Image, Job
from app.services import gathering, label_assist, projects, search
from app.services.errors import InvalidInputError
from tests.gather import cases
from tests.gather.test_gather_pipeline import ListProvider, project_id, run  # noqa: F401


def test_search_without_label_fills_the_inbox_and_organizes(
    factory, storage, settings, project_id, photo_server, monkeypatch  # noqa: F811
):
    base, _ = photo_server
    provider = ListProvider(cases.hits(base))
    monkeypatch.setitem(search.PROVIDERS, "loopback", lambda settings: provider)
    with factory() as session:
        project = session.get(projects.Project, project_id)
        with pytest.raises(InvalidInputError, match="query"):
            gathering.start_search(session=session, settings=settings, project=project,
                                   label=None, provider="loopback")
        job_id = gathering.start_search(session=session, settings=settings, project=project,
                                        label=None, query="bears", provider="loopback").id
    job = run(factory, storage, settings, job_id)
    assert job.status == "succeeded", job.error
    label_assist.organize_after(factory=factory, settings=settings, job_id=job_id)
    with factory() as session:
        images = list(session.scalars(select(Image)))
        organize = session.scalars(select(Job).where(Job.kind == "organize")).all()
    assert len(images) == len(cases.GOOD) and all(i.label_id is None for i in images)
    assert [job.status for job in organize] == ["queued"]


def test_url_import_without_label_fills_the_inbox(factory, storage, settings, project_id,  # noqa: F811
                                                  photo_server):
    base, _ = photo_server
    with factory() as session:
        project = session.get(projects.Project, project_id)
        job_id = gathering.start_url_import(session=session, settings=settings,
                                            project=project, label=None,
                                            urls=[base + path for path in cases.GOOD[:2]]).id
    assert run(factory, storage, settings, job_id).status == "succeeded"
    with factory() as session:
        labels = [image.label_id for image in session.scalars(select(Image))]
    assert labels == [None, None]
