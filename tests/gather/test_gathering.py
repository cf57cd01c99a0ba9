"""Starting gathering jobs (the web side): labels, cleaned parameters, listing."""

import pytest

from app.models import Job, User
from app.services import auth, gathering, jobs, projects
from app.services.errors import InvalidInputError, NotFoundError


@pytest.fixture
def session(factory):
    with factory() as session:
        yield session


@pytest.fixture
def project(session):
    user = auth.create_user(session=session, email="g@example.com", password="pw-123456")
    project = projects.create_project(session=session, owner=user, name="Bears",
                                      labels=["black"])
    session.commit()
    return project


def import_urls(session, settings, project, urls=("https://a.example/1.jpg",)) -> Job:
    return gathering.start_url_import(session=session, settings=settings, project=project,
                                      label="black", urls=list(urls))


def test_url_import_keeps_each_url_once_in_order_under_the_existing_label(
        session, settings, project):
    job = gathering.start_url_import(
        session=session, settings=settings, project=project, label="BLACK",
        urls=[" https://a.example/1.jpg", "https://a.example/1.jpg", "", "HTTP://b.example/2"])
    assert job.kind == "url_import" and job.status == "queued"
    assert job.params["urls"] == ["https://a.example/1.jpg", "HTTP://b.example/2"]
    assert job.params["label"] == "black"
    assert [label.name for label in project.labels] == ["black"]


def test_a_search_makes_its_label_and_queries_the_label_unless_told(session, settings,
                                                                     project):
    default = gathering.start_search(session=session, settings=settings, project=project,
                                     label="grizzly")
    told = gathering.start_search(session=session, settings=settings, project=project,
                                  label="teddy", query="  teddy \n bear  ", max_images=7)
    assert default.params["query"] == "grizzly"
    assert default.params["max_images"] == settings.search_max_images
    assert default.params["provider"] == settings.search_provider
    assert told.params["query"] == "teddy bear" and told.params["max_images"] == 7
    assert sorted(label.name for label in project.labels) == ["black", "grizzly", "teddy"]


def test_a_search_takes_a_known_licence_filter_only(session, settings, project):
    job = gathering.start_search(session=session, settings=settings, project=project,
                                 label="black", licence="Public")
    assert job.params["licence"] == "Public"
    assert gathering.start_search(session=session, settings=settings, project=project,
                                  label="black", licence="").params["licence"] is None
    with pytest.raises(InvalidInputError, match="unknown licence"):
        gathering.start_search(session=session, settings=settings, project=project,
                               label="black", licence="cc-by-sa")


def test_results_are_listed_only_for_gathering_jobs_of_the_project(session, settings,
                                                                   project):
    job = import_urls(session, settings, project)
    assert gathering.search_results(session=session, project=project, job_id=job.id) == []
    owner = session.get(User, project.owner_id)
    other = projects.create_project(session=session, owner=owner, name="Cats")
    training = jobs.create_job(session=session, project=project, kind="train", params={})
    session.commit()
    for asked, job_id in ((other, job.id), (project, training.id), (project, 999)):
        with pytest.raises(NotFoundError):
            gathering.search_results(session=session, project=asked, job_id=job_id)
