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
from app.services.datasets import IMAGE_STATUSES, AddResult, Limits, Upload, add_images
from app.services.errors import InvalidInputError
from app.storage import Storage

PROVENANCE = "provenance.csv"
COLUMNS = ("file", "label", "status", "source", "image_url", "page_url", "title", "provider",
           "query", "licence", "width", "height", "content_hash", "created_at")
UNLABELLED = "_unlabelled"
SOURCES = ("upload", "search", "url", "import")
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
    with archive.open(info) as handle:
        text = handle.read(MAX_PROVENANCE_BYTES + 1).decode("utf-8-sig", errors="replace")
    prefix = name[: -len(PROVENANCE)]
    rows = ({name: unquote_cell(value) if isinstance(value, str) else value
             for name, value in row.items()} for row in csv.DictReader(io.StringIO(text)))
    return {prefix + row.get("file", ""): row for row in rows}


def import_dataset(*, session: Session, storage: Storage, project: Project, data: bytes,
                   filename: str, limits: Limits) -> AddResult:
    """Add a zip of label folders; a provenance.csv inside keeps labels, status and sources."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        result = AddResult()
        result.rejected.append({"filename": filename, "reason": "not a readable zip file"})
        return result
    provenance = read_provenance(archive)
    if not provenance:
        return add_images(session=session, storage=storage, project=project,
                          uploads=[Upload(filename=filename, data=data)], limits=limits)
    result = AddResult()
    uploads, rows = [], {}
    known = dict(session.execute(select(Image.content_hash, Image.id).where(
        Image.project_id == project.id)).all())
    members = [m for m in archive.infolist() if not m.is_dir()
               and PurePosixPath(m.filename).name != PROVENANCE]
    if len(members) > limits.max_zip_members:
        result.rejected.append({"filename": filename, "reason": f"zip has {len(members)} files "
                                f"(limit {limits.max_zip_members})"})
        return result
    if sum(m.file_size for m in members) > limits.max_zip_bytes:
        result.rejected.append({"filename": filename,
                                "reason": "zip expands beyond the size limit"})
        return result
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            result.rejected.append({"filename": member.filename, "reason": "unsafe path in zip"})
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
            continue
        row = provenance.get(member.filename, {})
        if row.get("content_hash") in known:  # re-encoding changes bytes: match the exported hash
            result.duplicates.append({"filename": member.filename,
                                      "image_id": known[row["content_hash"]]})
            continue
        label = row.get("label") or (path.parent.name if path.parent.name != UNLABELLED else "")
        name = f"{filename}:{member.filename}"
        rows[name] = row
        with archive.open(member) as handle:
            uploads.append(Upload(filename=name, data=handle.read(member.file_size + 1),
                                  label=label or None, provenance=row))
    added = add_images(session=session, storage=storage, project=project, uploads=uploads,
                       limits=limits, source="import")
    for item in added.added:
        row = rows.get(item["filename"], {})
        image = session.get(Image, item["image_id"])
        image.licence = (row.get("licence") or None) and row["licence"][:100]
        if row.get("source") in SOURCES:
            image.source = row["source"]
        if row.get("status") in IMAGE_STATUSES:
            image.status = row["status"]
    session.flush()
    result.added += added.added
    result.duplicates += added.duplicates
    result.rejected += added.rejected
    return result
