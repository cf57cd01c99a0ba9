"""Dataset service: near-duplicates grouped by perceptual hash at insert time."""

import io
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image as PILImage
from sqlalchemy import event, func, select

from app.db import make_engine, make_session_factory, session_scope
from app.ml.images import NormalisedImage
from app.models import Image
from app.services import auth, catalog, datasets, projects, training
from app.storage import open_storage

LIMITS = datasets.Limits(max_pixels=60_000_000, max_zip_members=10, max_zip_bytes=2**20)


def smaller_copy(data: bytes) -> bytes:
    """The same photo resized and recompressed: a near-duplicate, not an exact one."""
    image = PILImage.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(out, "JPEG", quality=70)
    return out.getvalue()


def race_hash_lookups(monkeypatch) -> None:
    """Two uploads each look up the stored hashes before either inserts: the race always
    happens."""
    lookups = threading.Barrier(2, timeout=60)
    looked_up = datasets._stored_hashes

    def after_both_looked(**kwargs):
        found = looked_up(**kwargs)
        lookups.wait()
        return found

    monkeypatch.setattr(datasets, "_stored_hashes", after_both_looked)


def test_near_duplicates_share_a_group_and_are_listed(settings, data_dir):
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    storage = open_storage(settings.resolved_storage_url(), settings)
    photo = (data_dir / "bears" / "grizzly" / "0003.jpg").read_bytes()
    other = (data_dir / "bears" / "teddy" / "0007.jpg").read_bytes()
    uploads = [datasets.Upload(filename=name, data=data, label="grizzly") for name, data in [
        ("a.jpg", photo), ("b.jpg", other), ("c.jpg", smaller_copy(photo)), ("d.jpg", photo),
    ]]
    with session_scope(factory) as session:
        user = auth.create_user(session=session, email="d@example.com", password="pw-123456")
        project = projects.create_project(session=session, owner=user, name="p")
        first = datasets.add_images(session=session, storage=storage, project=project,
                                    uploads=uploads[:2], limits=LIMITS)
    with session_scope(factory) as session:  # a later upload joins the existing image's group
        project = session.get(projects.Project, project.id)
        second = datasets.add_images(session=session, storage=storage, project=project,
                                     uploads=uploads[2:], limits=LIMITS)
        assert len(second.added) == 1 and len(second.duplicates) == 1  # d.jpg: exact copy
        images = {i.original_filename: i for i in session.scalars(select(Image))}
        a_id = first.added[0]["image_id"]
        assert images["a.jpg"].duplicate_group == f"g{a_id}"
        assert images["c.jpg"].duplicate_group == f"g{a_id}"
        assert images["b.jpg"].duplicate_group is None
        groups = catalog.duplicate_groups(session=session, project=project)
        assert [[i.original_filename for i in g] for g in groups] == [["a.jpg", "c.jpg"]]


def hashed(name: str, phash: int) -> datasets.Upload:
    """An upload already normalised, with the dHash given."""
    image = NormalisedImage(data=b"jpeg", width=1, height=1, content_hash=name,
                            phash=f"{phash:016x}", format="JPEG")
    return datasets.Upload(filename=name, data=b"", label="bear", prepared=image)


def test_upload_groups_are_the_training_groups(settings):
    """Hashes added batch by batch, some bridging two groups, end in the groups the training
    split finds for the whole set at once, under the same names."""
    rng = random.Random(5)
    hashes = []
    for _ in range(40):
        value = rng.getrandbits(64)
        chain = [value]
        for _ in range(rng.choice([0, 1, 2, 4])):  # copies of copies: 3 bits from the last
            value ^= sum(1 << bit for bit in rng.sample(range(64), 3))
            chain.append(value)
        hashes += chain
    rng.shuffle(hashes)
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    storage = open_storage(settings.resolved_storage_url(), settings)
    with session_scope(factory) as session:
        user = auth.create_user(session=session, email="d@example.com", password="pw-123456")
        project = projects.create_project(session=session, owner=user, name="p")
    for start in range(0, len(hashes), 25):
        with session_scope(factory) as session:
            project = session.get(projects.Project, project.id)
            uploads = [hashed(f"{start + k}.jpg", phash)
                       for k, phash in enumerate(hashes[start:start + 25])]
            result = datasets.add_images(session=session, storage=storage, project=project,
                                         uploads=uploads, limits=LIMITS)
            assert len(result.added) == len(uploads)
    with session_scope(factory) as session:
        images = list(session.scalars(select(Image).order_by(Image.id)))
        at_upload = [image.duplicate_group or f"g{image.id}" for image in images]
        assert at_upload == training.near_duplicate_groups(images)
        assert len(set(at_upload)) < 60 and sum(i.duplicate_group is None for i in images) > 5


def new_project(factory) -> int:
    with session_scope(factory) as session:
        user = auth.create_user(session=session, email="r@example.com", password="pw-123456")
        return projects.create_project(session=session, owner=user, name="p").id


def bear_uploads(data_dir, count: int) -> list[datasets.Upload]:
    return [datasets.Upload(filename=p.name, data=p.read_bytes(), label="grizzly")
            for p in sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[:count]]


def test_a_failing_commit_leaves_no_files(settings, data_dir):
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    storage = open_storage(settings.resolved_storage_url(), settings)
    project_id = new_project(factory)

    def refuse(session):
        if session.info.get(datasets.NEW_FILES):  # the commit of the new rows
            raise RuntimeError("the database went away")

    with factory() as session:
        event.listen(session, "before_commit", refuse)
        project = session.get(projects.Project, project_id)
        with pytest.raises(RuntimeError):
            datasets.upload_images(session=session, storage=storage, project=project,
                                   uploads=bear_uploads(data_dir, 3), limits=LIMITS)
    assert list(storage.list_keys("images")) == []
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 0


def test_racing_uploads_of_the_same_photos_store_each_once(settings, data_dir, monkeypatch):
    """Both look up the stored hashes before either inserts; the later insert finds the
    rows there and reports duplicates (SQLite; tests/integration does it on PostgreSQL)."""
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    storage = open_storage(settings.resolved_storage_url(), settings)
    project_id = new_project(factory)
    race_hash_lookups(monkeypatch)

    def upload():
        with factory() as session:
            project = session.get(projects.Project, project_id)
            return datasets.upload_images(session=session, storage=storage, project=project,
                                          uploads=bear_uploads(data_dir, 4), limits=LIMITS)

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(upload), pool.submit(upload)]]
    assert sorted(len(r.added) for r in results) == [0, 4]
    assert sorted(len(r.duplicates) for r in results) == [0, 4]
    with factory() as session:
        keys = set(session.scalars(select(Image.storage_key)))
        assert len(keys) == 4
    assert {key for key, _ in storage.list_keys("images")} == keys
