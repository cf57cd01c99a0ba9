"""Dataset export (label folders + provenance.csv) and import keeping provenance."""

import csv
import io
import zipfile

from app.models import Image, User
from app.services import catalog, curation, datasets, exports, projects

LIMITS = datasets.Limits(max_pixels=60_000_000, max_zip_members=100, max_zip_bytes=2**28)


def new_project(session, name):
    owner = session.query(User).first()
    return projects.create_project(session=session, owner=owner, name=name,
                                   labels=["black", "grizzly"])


def test_export_then_import_keeps_labels_status_and_provenance(session, storage, data_dir):
    source = new_project(session, "Bears")
    uploads = [datasets.Upload(
        filename=p.name, data=p.read_bytes(), label=label,
        provenance={"image_url": f"https://e.com/{label}/{p.name}", "page_url": "https://e.com/page",
                    "title": "A bear, “quoted”", "provider": "ddgs", "query": f"{label} bear"})
        for label in ("black", "grizzly")
        for p in sorted((data_dir / "bears" / label).glob("*.jpg"))[:2]]
    added = datasets.add_images(session=session, storage=storage, project=source,
                                uploads=uploads, limits=LIMITS, source="search")
    first = added.added[0]["image_id"]
    session.get(Image, first).licence = "cc-by"
    curation.bulk_update(session=session, project=source, image_ids=[first], status="excluded")
    session.commit()

    handle = exports.export_dataset(session=session, storage=storage, project=source)
    data = handle.read()
    archive = zipfile.ZipFile(io.BytesIO(data))
    rows = list(csv.DictReader(io.StringIO(archive.read("provenance.csv").decode())))
    assert len(rows) == 4 and set(rows[0]) == set(exports.COLUMNS)
    assert rows[0]["file"] == f"black/{first}.jpg" and rows[0]["status"] == "excluded"
    assert rows[0]["licence"] == "cc-by" and rows[0]["title"] == "A bear, “quoted”"
    assert sorted(n for n in archive.namelist() if n.endswith(".jpg")) == sorted(
        r["file"] for r in rows)

    target = new_project(session, "Copy")
    result = exports.import_dataset(session=session, storage=storage, project=target,
                                    data=data, filename="bears.zip", limits=LIMITS)
    session.commit()
    assert len(result.added) == 4 and not result.rejected
    images = {i.image_url: i for i in catalog.list_images(session=session, project=target)[0]}
    for row in rows:
        image = images[row["image_url"]]
        assert image.label.name == row["label"] and image.status == row["status"]
        assert (image.image_url, image.title, image.query, image.source) == (
            row["image_url"], row["title"], row["query"], "search")
        assert (image.licence or "") == row["licence"]


def test_import_without_csv_uses_folder_names(session, storage, data_dir):
    project = new_project(session, "Plain")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for p in sorted((data_dir / "bears" / "teddy").glob("*.jpg"))[:2]:
            archive.writestr(f"teddy/{p.name}", p.read_bytes())
    result = exports.import_dataset(session=session, storage=storage, project=project,
                                    data=out.getvalue(), filename="t.zip", limits=LIMITS)
    assert [a["label"] for a in result.added] == ["teddy", "teddy"]


def test_unsafe_label_names_become_safe_folders():
    assert exports.folder_name("../etc/passwd") == "_etc_passwd"
    assert exports.folder_name(None) == "_unlabelled"
    assert exports.folder_name("black bear") == "black bear"


def test_export_api_streams_a_zip(client, admin, data_dir):
    project = client.post("/api/v1/projects", json={"name": "Bears"}, headers=admin).json()
    path = sorted((data_dir / "bears" / "black").glob("*.jpg"))[0]
    client.post(f"/api/v1/projects/{project['id']}/images", headers=admin,
                data={"label": "black"}, files=[("files", (path.name, path.read_bytes()))])
    answer = client.get(f"/api/v1/projects/{project['id']}/export", headers=admin)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(answer.content)).namelist()
    assert "provenance.csv" in names and any(n.startswith("black/") for n in names)
    imported = client.post(f"/api/v1/projects/{project['id']}/imports", headers=admin,
                           files={"file": ("bears.zip", answer.content)})
    assert imported.status_code == 201 and len(imported.json()["duplicates"]) == 1
