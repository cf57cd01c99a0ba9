"""Dataset export (a zip of label folders plus provenance.csv) and import of such a zip."""

import csv
import io
import re
import tempfile
import zipfile
from pathlib import PurePosixPath
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Image, Project
from app.services.archives import (
    DAMAGED_ZIP,
    Limits,
    RequestBudget,
    open_zip,
    read_member,
    zip_files,
)
from app.services.catalog import IMAGE_STATUSES
from app.services.datasets import AddResult, Upload, add_images, prepared_upload
from app.services.errors import InvalidInputError
from app.storage import Storage

PROVENANCE = "provenance.csv"
COLUMNS = ("file", "label", "status", "source", "image_url", "page_url", "title", "provider",
           "query", "licence", "width", "height", "content_hash", "created_at")
UNLABELLED = "_unlabelled"
SOURCES = ("upload", "search", "url", "import", "prediction log")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell


def spreadsheet_safe(value: object) -> object:
    """A text cell that a spreadsheet shows as text: a leading quote before a formula start
    (and before a leading quote, so that unquote_cell gets every value back)."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, "'")):
        return "'" + value
    return value


def unquote_cell(value: str) -> str:
    """The value spreadsheet_safe() quoted."""
    return value[1:] if value.startswith("'") and value[1:].startswith(
        (*FORMULA_STARTS, "'")) else value


def folder_name(label: str | None) -> str:
    """A label as a safe zip folder name (labels come from the web)."""
    if not label:
        return UNLABELLED
    name = re.sub(r"[\\/\x00-\x1f]+", "_", label).strip().strip(".") or "_"
    return name[:120]


def export_dataset(*, session: Session, storage: Storage, project: Project,
                   include_excluded: bool = True) -> IO[bytes]:
    """A temporary file holding the project's images by label folder and provenance.csv."""
    query = select(Image).where(Image.project_id == project.id).order_by(Image.id)
    if not include_excluded:
        query = query.where(Image.status == "active")
    out = tempfile.SpooledTemporaryFile(max_size=32 * 2**20)
    rows = io.StringIO()
    writer = csv.DictWriter(rows, fieldnames=COLUMNS)
    writer.writeheader()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for image in session.scalars(query):
            label = image.label.name if image.label else None
            path = f"{folder_name(label)}/{image.id}.jpg"
            archive.writestr(path, storage.read(image.storage_key))
            row = {
                "file": path, "label": label or "", "status": image.status,
                "source": image.source, "image_url": image.image_url or "",
                "page_url": image.page_url or "", "title": image.title or "",
                "provider": image.provider or "", "query": image.query or "",
                "licence": image.licence or "", "width": image.width, "height": image.height,
                "content_hash": image.content_hash, "created_at": image.created_at.isoformat(),
            }
            writer.writerow({name: spreadsheet_safe(value) for name, value in row.items()})
        archive.writestr(PROVENANCE, rows.getvalue())
    out.seek(0)
    return out


MAX_PROVENANCE_BYTES = 32 * 2**20
IN_CHUNK = 5000  # values per IN (...) of a query: SQLite binds at most 32,766 at once


def read_provenance(archive: zipfile.ZipFile) -> dict[str, dict]:
    """provenance.csv's rows by file path, or {} when the zip has none."""
    info = next((i for i in archive.infolist()
                 if PurePosixPath(i.filename).name == PROVENANCE
                 and i.filename.count("/") <= 1), None)
    if info is None:
        return {}
    if info.file_size > MAX_PROVENANCE_BYTES:
        raise InvalidInputError(
            f"{PROVENANCE} is larger than {MAX_PROVENANCE_BYTES // 2**20} MB"
        )
    name = info.filename
    try:
        with archive.open(info) as handle:
            raw = handle.read(MAX_PROVENANCE_BYTES + 1)
    except DAMAGED_ZIP as exc:
        raise InvalidInputError(f"{PROVENANCE} cannot be read ({type(exc).__name__})") from exc
    if len(raw) > MAX_PROVENANCE_BYTES:
        raise InvalidInputError(
            f"{PROVENANCE} is larger than {MAX_PROVENANCE_BYTES // 2**20} MB"
        )
    text = raw.decode("utf-8-sig", errors="replace")
    prefix = name[: -len(PROVENANCE)]
    rows = ({name: unquote_cell(value) if isinstance(value, str) else value
             for name, value in row.items()} for row in csv.DictReader(io.StringIO(text)))
    return {prefix + row.get("file", ""): row for row in rows}


def import_dataset(*, session: Session, storage: Storage, project: Project,
                   data: bytes | IO[bytes], filename: str, limits: Limits) -> AddResult:
    """Add a zip of label folders and commit; a provenance.csv inside keeps labels, status
    and sources. Its files are read and normalised one at a time under one budget for the
    request (archives.RequestBudget), then stored in one short transaction."""
    result, budget = AddResult(), RequestBudget(limits)
    archive = open_zip(data, filename=filename, budget=budget, rejected=result.rejected)
    if archive is None:
        return result
    with archive:
        try:
            provenance = read_provenance(archive)
        except InvalidInputError as exc:
            result.rejected.append({"filename": f"{filename}:{PROVENANCE}",
                                    "reason": str(exc)})
            return result
        known = _stored(session=session, project=project, hashes={
            row["content_hash"] for row in provenance.values() if row.get("content_hash")})
        session.commit()  # only reads so far: hold no transaction while decoding
        uploads = []
        for info, path in zip_files(
            archive, filename=filename, budget=budget, rejected=result.rejected,
            skip=lambda info: PurePosixPath(info.filename).name == PROVENANCE,
        ):
            row = provenance.get(info.filename, {})
            if row.get("content_hash") in known:  # re-encoding changes bytes: the export's hash
                result.duplicates.append({"filename": info.filename,
                                          "image_id": known[row["content_hash"]]})
                continue
            label = row.get("label") or (path.parent.name if path.parent.name != UNLABELLED
                                         else "")
            upload = Upload(
                filename=f"{filename}:{info.filename}", data=b"", label=label or None,
                provenance=row, source=row.get("source") if row.get("source") in SOURCES
                else None,
                status=row.get("status") if row.get("status") in IMAGE_STATUSES else None,
            )
            uploads.append(prepared_upload(
                upload, lambda info=info: read_member(archive, info, budget=budget),
                budget=budget))
    added = add_images(session=session, storage=storage, project=project, uploads=uploads,
                       limits=limits, source="import")
    session.commit()
    result.added += added.added
    result.duplicates += added.duplicates
    result.rejected += added.rejected
    return result


def _stored(*, session: Session, project: Project, hashes: set[str]) -> dict[str, int]:
    """content hash -> image id of the project's images among these hashes."""
    ordered, found = sorted(hashes), {}
    for start in range(0, len(ordered), IN_CHUNK):
        found.update(session.execute(select(Image.content_hash, Image.id).where(
            Image.project_id == project.id,
            Image.content_hash.in_(ordered[start:start + IN_CHUNK]))).all())
    return found
