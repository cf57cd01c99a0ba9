"""Operator commands: consistency check and repair, backup and restore (app running or not)."""

import json
import logging
import shutil
import sqlite3
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Image, Job, ModelVersion, PredictionLog, utcnow
from app.services import jobs
from app.services.deployments import model_files
from app.storage import LocalStorage, Storage, StorageError, copy_all

log = logging.getLogger(__name__)
BACKUP_DATABASE = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}


@dataclass
class CheckReport:
    """What `check` found; `repaired` lists what `--repair` changed."""

    missing_files: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    stuck_jobs: list[int] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing_files or self.orphan_files or self.stuck_jobs)

    def as_dict(self) -> dict:
        return {**asdict(self), "clean": self.clean}


def check(*, session: Session, storage: Storage, settings: Settings, repair: bool = False,
          grace_s: float = 3600) -> CheckReport:
    """Rows pointing at missing files, files no row points at, jobs that will never end.

    Repair deletes orphan files, drops image rows whose file is gone (nothing could show or
    train on them), forgets logged prediction photos that are gone, and sweeps stuck jobs.
    Model versions with missing files are reported, never deleted: a person decides. A file
    younger than `grace_s` is not an orphan yet: uploads and trainings write files just
    before the rows that point at them commit.
    """
    report = CheckReport()
    stored = dict(storage.list_keys())
    wanted: set[str] = set()
    images = session.execute(select(Image.id, Image.storage_key)).all()
    image_keys = {key for _, key in images}
    for image_id, key in images:
        wanted.add(key)
        if key not in stored:
            report.missing_files.append(key)
            if repair:
                session.delete(session.get(Image, image_id))
                report.repaired.append(f"dropped image {image_id} (its file {key} is gone)")
    for model in session.scalars(select(ModelVersion)):
        prefix = model.storage_prefix
        if not prefix:
            continue  # a training is exporting it right now
        for name in model_files(model):
            key = f"{prefix}/{name}"
            wanted.add(key)
            if key not in stored:
                report.missing_files.append(key)
        wanted.update(key for key in stored if key.startswith(f"{prefix}/"))
    for row in session.scalars(select(PredictionLog).where(PredictionLog.image_key.is_not(None))):
        wanted.add(row.image_key)
        if row.image_key not in stored:
            report.missing_files.append(row.image_key)
            if repair:
                report.repaired.append(f"forgot logged photo {row.image_key} (gone)")
                row.image_key = None
    for key in stored:
        if key in wanted or _is_thumbnail_of(key, image_keys):
            continue
        try:
            if storage.age_s(key) >= grace_s:
                report.orphan_files.append(key)
        except StorageError:
            continue  # deleted while we looked
    stale_before = utcnow().timestamp() - settings.job_stale_seconds
    for job in session.scalars(select(Job).where(Job.status == "running")):
        beat = job.heartbeat_at or job.started_at
        if beat is None or beat.timestamp() < stale_before:
            report.stuck_jobs.append(job.id)
    if repair:
        session.commit()
        for key in report.orphan_files:
            storage.delete(key)
            report.repaired.append(f"deleted orphan file {key}")
        swept = jobs.sweep(session=session, settings=settings)
        if any(swept.values()):
            report.repaired.append(f"swept jobs: {swept}")
    return report


def _is_thumbnail_of(key: str, image_keys: set[str]) -> bool:
    """Thumbnails are `thumbs/<image key>-<size>.jpg`, a cache of a stored image."""
    if not key.startswith("thumbs/"):
        return False
    stem = key.removeprefix("thumbs/").rsplit("-", 1)[0]
    return stem in image_keys


def backup(*, settings: Settings, storage: Storage, target: Path) -> dict:
    """Copy the database and the store into `target` (a new folder), while the app runs.

    The store is copied before and after the database snapshot: files only ever appear
    before their rows commit and disappear after, so every row of the snapshot finds its
    file (at worst the backup holds a few files no row needs; `check --repair` drops them).
    """
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty; back up into a new folder")
    target.mkdir(parents=True, exist_ok=True)
    files = LocalStorage(target / "storage")
    copy_all(storage, files)
    url = make_url(settings.resolved_database_url())
    kind = url.get_backend_name()
    database = target / BACKUP_DATABASE[kind]
    if kind == "sqlite":
        source = sqlite3.connect(url.database)
        destination = sqlite3.connect(database)
        try:
            source.backup(destination)  # SQLite's online backup: a consistent snapshot
        finally:
            destination.close()
            source.close()
    else:
        subprocess.run(["pg_dump", "--format=custom", "--no-owner", f"--file={database}",
                        _libpq_url(url)], check=True, capture_output=True)
    copied, _ = copy_all(storage, files)
    manifest = {"created_at": utcnow().isoformat(), "database": kind,
                "files": sum(1 for _ in files.list_keys()), "late_files": copied}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def restore(*, settings: Settings, storage: Storage, source: Path) -> dict:
    """Restore a backup folder into this (empty) database and store."""
    manifest = json.loads((source / "manifest.json").read_text())
    url = make_url(settings.resolved_database_url())
    kind = url.get_backend_name()
    if kind != manifest["database"]:
        raise ValueError(f"the backup holds a {manifest['database']} database; "
                         f"this Kodiak uses {kind}")
    if any(True for _ in storage.list_keys()):
        raise FileExistsError("the store is not empty; restore into a new one")
    database = source / BACKUP_DATABASE[kind]
    if kind == "sqlite":
        path = Path(url.database)
        if path.exists() and path.stat().st_size > 0:
            raise FileExistsError(f"{path} exists; restore into a new home")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(database, path)
    else:
        subprocess.run(["pg_restore", "--no-owner", "--exit-on-error",
                        f"--dbname={_libpq_url(url)}", str(database)],
                       check=True, capture_output=True)
    copied, _ = copy_all(LocalStorage(source / "storage"), storage)
    return {"database": kind, "files": copied}


def _libpq_url(url) -> str:
    """The SQLAlchemy URL as libpq tools read it (no `+driver`)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
