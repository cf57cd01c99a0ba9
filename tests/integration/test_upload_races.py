"""Two requests upload the same photos to one project at once, on PostgreSQL: both answer
201, every photo and label is stored once, and no file is left without its row."""

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.cli import migrate
from app.models import Image, Label
from app.web.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_key, make_settings
from tests.test_datasets import race_hash_lookups


def test_two_uploads_of_the_same_photos_store_each_once(postgres_url, tmp_path, data_dir,
                                                        monkeypatch):
    settings = make_settings(tmp_path, database_url=postgres_url)
    migrate(settings)
    loose = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[:6]
    folder = io.BytesIO()
    with zipfile.ZipFile(folder, "w") as archive:
        for path in sorted((data_dir / "bears" / "black").glob("*.jpg"))[:6]:
            archive.writestr(f"black/{path.name}", path.read_bytes())
    files = [("files", (p.name, p.read_bytes())) for p in loose]
    files.append(("files", ("black.zip", folder.getvalue())))
    race_hash_lookups(monkeypatch)
    with TestClient(create_app(settings)) as client:
        headers = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        pid = client.post("/api/v1/projects", json={"name": "race"}, headers=headers).json()["id"]

        def send():
            return client.post(f"/api/v1/projects/{pid}/images", headers=headers,
                               data={"label": "grizzly"}, files=files)

        with ThreadPoolExecutor(2) as pool:
            answers = [f.result() for f in [pool.submit(send), pool.submit(send)]]
        factory = client.app.state.session_factory
        storage = client.app.state.storage
        assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
        bodies = [a.json() for a in answers]
        assert all(body["rejected"] == [] for body in bodies)
        added = [entry for body in bodies for entry in body["added"]]
        duplicates = [entry for body in bodies for entry in body["duplicates"]]
        assert len(added) == 12 and len(duplicates) == 12  # each photo: once each way
        assert sorted(e["image_id"] for e in added) == sorted(e["image_id"] for e in duplicates)
        with factory() as session:
            assert session.scalar(select(func.count()).select_from(Image)) == 12
            assert sorted(session.scalars(select(Label.name))) == ["black", "grizzly"]
            keys = set(session.scalars(select(Image.storage_key)))
        stored = {key for key, _ in storage.list_keys(f"images/{pid}")}
        assert stored == keys  # the loser's files were deleted again
