"""Bulk relabel/exclude with undo, the review queue, duplicates, failures and thumbnails."""

import io

import pytest
from PIL import Image as PILImage

from app.models import Image, ImagePrediction, Job, ModelVersion, SearchResult, User
from app.services import catalog, curation, datasets, projects
from app.services.errors import InvalidInputError, NotFoundError

LIMITS = datasets.Limits(max_pixels=60_000_000, max_zip_members=100, max_zip_bytes=2**28)


@pytest.fixture
def project(session, storage, data_dir):
    owner = session.query(User).first()
    project = projects.create_project(session=session, owner=owner, name="Bears",
                                      labels=["black", "grizzly"])
    uploads = [datasets.Upload(filename=p.name, data=p.read_bytes(), label=label)
               for label in ("black", "grizzly")
               for p in sorted((data_dir / "bears" / label).glob("*.jpg"))[:3]]
    result = datasets.add_images(session=session, storage=storage, project=project,
                                 uploads=uploads, limits=LIMITS)
    assert len(result.added) == 6
    session.commit()
    return project


def ids_of(session, project, label):
    return [i.id for i in catalog.list_images(session=session, project=project, label=label)[0]]


def state(session, ids):
    session.expire_all()
    return {i: (session.get(Image, i).label.name, session.get(Image, i).status) for i in ids}


def test_bulk_relabel_and_exclude_then_undo_restores_everything(session, project):
    black, grizzly = ids_of(session, project, "black"), ids_of(session, project, "grizzly")
    before = state(session, black + grizzly)
    first = curation.bulk_update(session=session, project=project, image_ids=black[:2],
                                 label="grizzly")
    assert first["changed"] == black[:2]
    second = curation.bulk_update(session=session, project=project,
                                  image_ids=[black[0], grizzly[0]], status="excluded")
    assert state(session, [black[0], grizzly[0]]) == {black[0]: ("grizzly", "excluded"),
                                                      grizzly[0]: ("grizzly", "excluded")}
    for undo in (second["undo"], first["undo"]):
        for batch in undo["batches"]:
            curation.bulk_update(session=session, project=project, **batch)
    assert state(session, black + grizzly) == before


def test_bulk_skips_unchanged_images_and_refuses_bad_input(session, project):
    black = ids_of(session, project, "black")
    result = curation.bulk_update(session=session, project=project, image_ids=black,
                                  label="black")
    assert result == {"changed": [], "undo": {"batches": []}}
    with pytest.raises(InvalidInputError):
        curation.bulk_update(session=session, project=project, image_ids=black)
    with pytest.raises(NotFoundError):
        curation.bulk_update(session=session, project=project, image_ids=[10_000],
                             status="excluded")
    with pytest.raises(NotFoundError):
        curation.bulk_update(session=session, project=project, image_ids=black, label="panda")


def add_model(session, project, losses: dict[int, float]) -> ModelVersion:
    model = ModelVersion(project_id=project.id, backbone="b", labels=["black", "grizzly"],
                         storage_prefix="models/x")
    session.add(model)
    session.flush()
    for image_id, loss in losses.items():
        session.add(ImagePrediction(model_id=model.id, image_id=image_id, given_label="black",
                                    predicted_label="grizzly", confidence=0.8, loss=loss,
                                    probabilities={}))
    session.flush()
    return model


def test_review_queue_uses_the_latest_model_and_skips_excluded(session, project):
    black = ids_of(session, project, "black")
    add_model(session, project, {black[0]: 9.0, black[1]: 8.0})
    latest = add_model(session, project, {black[0]: 0.1, black[1]: 2.0, black[2]: 1.0})
    curation.bulk_update(session=session, project=project, image_ids=[black[2]],
                         status="excluded")
    model, items, total = curation.review_queue(session=session, project=project)
    assert model.id == latest.id and total == 2
    assert [item.image.id for item in items] == [black[1], black[0]]
    assert items[0].prediction.predicted_label == "grizzly" and items[0].current_label == "black"


def test_duplicate_groups_and_failed_verifications(session, project):
    black = ids_of(session, project, "black")
    for image_id in black[:2]:
        session.get(Image, image_id).duplicate_group = "g1"
    session.get(Image, black[2]).duplicate_group = "g2"  # alone: not a group
    job = Job(project_id=project.id, kind="search", params={})
    session.add(job)
    session.flush()
    for n, status in enumerate(("rejected", "failed", "added")):
        session.add(SearchResult(job_id=job.id, project_id=project.id,
                                 label_id=project.labels[0].id, position=n,
                                 image_url=f"https://e.com/{n}.jpg", provider="ddgs",
                                 query="black bear", status=status, reason=f"reason {n}"))
    session.flush()
    groups = catalog.duplicate_groups(session=session, project=project)
    assert [[i.id for i in g] for g in groups] == [black[:2]]
    failed = curation.failed_verifications(session=session, project=project)
    assert {(f["status"], f["reason"], f["label"]) for f in failed} == {
        ("rejected", "reason 0", "black"), ("failed", "reason 1", "black")}


def test_thumbnail_is_small_and_cached(session, storage, project):
    image = session.get(Image, ids_of(session, project, "black")[0])
    key = curation.thumbnail(storage=storage, image=image, size=150)
    assert key == f"thumbs/{image.storage_key}-160.jpg"
    with PILImage.open(io.BytesIO(storage.read(key))) as thumb:
        assert min(thumb.size) == 160 and thumb.format == "JPEG"
    storage.put(key, b"cached")
    assert storage.read(curation.thumbnail(storage=storage, image=image, size=160)) == b"cached"


def test_a_group_where_a_person_kept_one_leaves_the_duplicates(session, project):
    black = ids_of(session, project, "black")
    for image_id in black:
        session.get(Image, image_id).duplicate_group = "g1"
    session.flush()
    curation.bulk_update(session=session, project=project, image_ids=[black[0]],
                         status="excluded")
    groups = catalog.duplicate_groups(session=session, project=project)
    assert [[i.id for i in g] for g in groups] == [black]  # two still active: still a group
    curation.bulk_update(session=session, project=project, image_ids=[black[1]],
                         status="excluded")
    assert catalog.duplicate_groups(session=session, project=project) == []


def test_label_history_records_patch_bulk_and_undo(session, project):
    image = session.get(Image, ids_of(session, project, "black")[0])
    assert catalog.image_history(session=session, image=image) == []
    catalog.update_image(session=session, project=project, image=image, label="grizzly",
                         status=None)
    catalog.update_image(session=session, project=project, image=image, label="grizzly",
                         status=None)  # no change, no entry
    done = curation.bulk_update(session=session, project=project, image_ids=[image.id],
                                label="black", status="excluded")
    for batch in done["undo"]["batches"]:
        curation.bulk_update(session=session, project=project, **batch)
    history = [(e.kind, e.before, e.after)
               for e in catalog.image_history(session=session, image=image)]
    assert history == [("label", "black", "grizzly"),
                       ("label", "grizzly", "black"), ("status", "active", "excluded"),
                       ("label", "black", "grizzly"), ("status", "excluded", "active")]
