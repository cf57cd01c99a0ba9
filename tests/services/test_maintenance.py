"""`kodiak check`, `backup` and `restore`: consistency found and repaired, backups taken while
the app writes restore with every row and file identical."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select, text

from app.cli import main as kodiak
from app.cli import migrate
from app.db import make_engine, make_session_factory, session_scope
from app.models import Image, Job, Project, utcnow
from app.services import jobs, maintenance
from app.storage import open_storage
from tests.conftest import make_settings, s3_env

TABLES = ["user", "project", "label", "image", "job", "model_version", "deployment",
          "search_result", "image_prediction", "prediction_log", "api_key"]


def bear_files(data_dir, label: str, count: int) -> list[tuple]:
    paths = sorted((data_dir / "bears" / label).glob("*.jpg"))[:count]
    return [("files", (path.name, path.read_bytes(), "image/jpeg")) for path in paths]


@pytest.fixture
def project(client, admin, data_dir):
    project = client.post("/api/v1/projects", json={"name": "Bears"}, headers=admin).json()
    for label in ("grizzly", "black"):
        added = client.post(f"/api/v1/projects/{project['id']}/images", headers=admin,
                            data={"label": label}, files=bear_files(data_dir, label, 6))
        assert added.status_code == 201 and len(added.json()["added"]) == 6, added.text
    return project


def test_check_finds_and_repairs_missing_orphan_and_stuck(client, admin, project, settings,
                                                           session, storage):
    assert maintenance.check(session=session, storage=storage, settings=settings).clean
    image = session.scalars(select(Image).order_by(Image.id)).first()
    storage.delete(image.storage_key)
    storage.put("images/999/stray.jpg", b"nobody points here")
    job = jobs.create_job(session=session, project=session.get(Project, project["id"]),
                          kind="search", params={})
    job.status, job.heartbeat_at = "running", utcnow() - timedelta(days=1)
    session.commit()

    young = maintenance.check(session=session, storage=storage, settings=settings)
    assert young.missing_files == [image.storage_key]
    assert young.orphan_files == []  # a file that new may still be waiting for its row
    assert young.stuck_jobs == [job.id]

    report = maintenance.check(session=session, storage=storage, settings=settings,
                               repair=True, grace_s=0)
    assert report.orphan_files == ["images/999/stray.jpg"] and len(report.repaired) == 3
    assert not storage.exists("images/999/stray.jpg")
    session.expire_all()
    assert session.get(Image, image.id) is None
    assert session.get(Job, job.id).status == "failed"
    assert maintenance.check(session=session, storage=storage, settings=settings,
                             grace_s=0).clean
    # the other images, their rows and files, are untouched
    assert len(client.get(f"/api/v1/projects/{project['id']}/images",
                          headers=admin).json()["images"]) == 11


def _rows(url: str) -> dict[str, list]:
    engine = make_engine(url)
    with engine.connect() as connection:
        present = set(inspect(connection).get_table_names())
        rows = {table: [tuple(row) for row in connection.execute(
            text(f'SELECT * FROM "{table}" ORDER BY id'))] for table in TABLES if table in present}
    engine.dispose()
    return rows


def _files(storage) -> dict[str, bytes]:
    return {key: storage.read(key) for key, _ in storage.list_keys()}


def test_backup_while_the_app_writes_restores_identical(client, admin, project, settings,
                                                        storage, data_dir, tmp_path):
    stop = threading.Event()
    uploads = bear_files(data_dir, "teddy", 40)

    def keep_writing():
        for item in uploads:
            if stop.is_set():
                return
            answer = client.post(f"/api/v1/projects/{project['id']}/images", headers=admin,
                                 data={"label": "teddy"}, files=[item])
            assert answer.status_code == 201

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        manifest = maintenance.backup(settings=settings, storage=storage,
                                      target=tmp_path / "backup")
    finally:
        stop.set()
        writer.join()
    assert manifest["database"] == "sqlite" and manifest["files"] >= 12

    fresh = make_settings(tmp_path / "fresh")
    fresh_storage = open_storage(fresh.resolved_storage_url(), fresh)
    maintenance.restore(settings=fresh, storage=fresh_storage, source=tmp_path / "backup")
    restored = _rows(fresh.resolved_database_url())
    snapshot = _rows(f"sqlite:///{tmp_path / 'backup' / 'database.sqlite3'}")
    assert restored == snapshot and len(restored["image"]) >= 12
    live = _rows(settings.resolved_database_url())
    for table, rows in restored.items():  # the snapshot is a prefix of what the app holds now
        assert set(rows) <= set(live[table]) or table in ("api_key", "user_session"), table
    restored_files = _files(fresh_storage)
    live_files = _files(storage)
    for key, data in restored_files.items():
        assert live_files[key] == data, key
    factory = make_session_factory(make_engine(fresh.resolved_database_url()))
    with session_scope(factory) as session:
        report = maintenance.check(session=session, storage=fresh_storage, settings=fresh,
                                   grace_s=0)
        assert report.missing_files == [], report.missing_files
    # restoring twice over the same place is refused, nothing is overwritten
    with pytest.raises(FileExistsError):
        maintenance.restore(settings=fresh, storage=fresh_storage, source=tmp_path / "backup")


def test_backup_and_restore_commands_on_postgres(tmp_path, data_dir, monkeypatch, capsys):
    pytest.importorskip("psycopg")
    import psycopg

    from tests.integration.conftest import PG_ADMIN_URL

    names = [f"kodiak_bk_{i}_{tmp_path.name[-6:].lower()}" for i in range(2)]
    admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    for name in names:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        urls = [f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}" for name in names]
        source = make_settings(tmp_path / "a", database_url=urls[0])
        migrate(source)
        storage = open_storage(source.resolved_storage_url(), source)
        storage.put("images/1/a.jpg", b"photo")
        for key, value in {"home": source.home, "database_url": urls[0],
                           "storage_url": source.resolved_storage_url()}.items():
            monkeypatch.setenv(f"KODIAK_{key.upper()}", str(value))
        for key, value in s3_env(source).items():  # under `make test-s3`
            monkeypatch.setenv(key, value)
        from app import config

        config.get_settings.cache_clear()
        kodiak(["backup", str(tmp_path / "bk")])
        monkeypatch.setenv("KODIAK_HOME", str(tmp_path / "b"))
        monkeypatch.setenv("KODIAK_DATABASE_URL", urls[1])
        monkeypatch.setenv("KODIAK_STORAGE_URL", f"file://{tmp_path / 'b' / 'storage'}")
        config.get_settings.cache_clear()
        kodiak(["restore", str(tmp_path / "bk")])
        config.get_settings.cache_clear()
        assert _rows(urls[1]) == _rows(urls[0])
        assert (tmp_path / "b" / "storage" / "images/1/a.jpg").read_bytes() == b"photo"
        kodiak(["check"])
        assert '"clean": true' in capsys.readouterr().out
    finally:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
