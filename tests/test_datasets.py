"""Dataset service: near-duplicates grouped by perceptual hash at insert time."""

import io

from PIL import Image as PILImage
from sqlalchemy import select

from app.db import make_engine, make_session_factory, session_scope
from app.models import Image
from app.services import auth, datasets, projects
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
    storage = open_storage(settings.resolved_storage_url())
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
