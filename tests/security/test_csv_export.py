"""provenance.csv never hands a spreadsheet a formula, and an import gets the values back."""

import csv
import io
import zipfile

from app.models import Project
from app.services import datasets, exports

FORMULAS = ["=HYPERLINK(\"https://evil.example\",\"click\")", "+1+1", "-2+3", "@SUM(A1)",
            "\tTAB", "\rCR", "'already quoted"]
LABEL = "=cmd|' /C calc'!A0"


def test_cells_a_spreadsheet_would_run_are_quoted():
    for value in FORMULAS:
        safe = exports.spreadsheet_safe(value)
        assert safe == "'" + value
        assert exports.unquote_cell(safe) == value
    for value in ["A bear", "https://e.com/=x", "", "2024-01-01T00:00:00", 12]:
        assert exports.spreadsheet_safe(value) == value


def test_export_quotes_formulas_and_import_restores_them(client, admin, data_dir):
    project = client.post("/api/v1/projects", json={"name": "Formulas"}, headers=admin).json()
    photos = sorted((data_dir / "bears" / "black").glob("*.jpg"))[:len(FORMULAS)]
    app = client.app
    with app.state.session_factory() as session:
        owned = session.get(Project, project["id"])
        added = datasets.add_images(
            session=session, storage=app.state.storage, project=owned,
            uploads=[datasets.Upload(filename=p.name, data=p.read_bytes(), label=LABEL,
                                     provenance={"title": title, "query": "-bear",
                                                 "image_url": f"https://e.com/{p.name}"})
                     for p, title in zip(photos, FORMULAS, strict=True)],
            limits=datasets.Limits.from_settings(app.state.settings), source="search")
        session.commit()
    assert len(added.added) == len(FORMULAS)

    exported = client.get(f"/api/v1/projects/{project['id']}/export", headers=admin)
    assert exported.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    text = archive.read("provenance.csv").decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        for name, value in row.items():
            assert not value.startswith(exports.FORMULA_STARTS), (name, value)
    assert {row["title"] for row in rows} == {"'" + title for title in FORMULAS}
    assert {row["label"] for row in rows} == {"'" + LABEL}
    assert {row["query"] for row in rows} == {"'-bear"}

    copy = client.post("/api/v1/projects", json={"name": "Copy"}, headers=admin).json()
    imported = client.post(f"/api/v1/projects/{copy['id']}/imports", headers=admin,
                           files={"file": ("formulas.zip", exported.content, "application/zip")})
    assert imported.status_code == 201, imported.text
    assert len(imported.json()["added"]) == len(FORMULAS)
    items = client.get(f"/api/v1/projects/{copy['id']}/images", headers=admin).json()["images"]
    assert {item["title"] for item in items} == set(FORMULAS)
    assert {item["label"] for item in items} == {LABEL}
