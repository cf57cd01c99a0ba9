"""Dataset service: near-duplicates grouped by perceptual hash at insert time."""

import io
import random

from PIL import Image as PILImage
from sqlalchemy import select

from app.db import make_engine, make_session_factory, session_scope
from app.ml.images import NormalisedImage
from app.models import Image
from app.services import auth, datasets, projects, training
from app.storage import open_storage

LIMITS = datasets.Limits(max_pixels=60_000_000, max_zip_members=10, max_zip_bytes=2**20)


def smaller_copy(data: bytes) -> bytes:
    """The same photo resized and recompressed: a near-duplicate, not an exact one."""
    image = PILImage.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(out, "JPEG", quality=70)
    return out.getvalue()


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
        groups = datasets.duplicate_groups(session=session, project=project)
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
