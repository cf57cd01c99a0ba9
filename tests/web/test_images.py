"""Image upload: files, zips of label folders, duplicates, and every odd file answered."""

import csv
import hashlib
import io
import zipfile

import pytest

ACCEPT = {
    "alpha_rgba.png", "png_named_jpg.jpg", "webp_named_jpg.jpg", "real.webp", "grayscale.jpg",
    "gray16.png", "cmyk.jpg", "palette_transparent.png", "animated.gif", "exif_rotate6.jpg",
    "progressive.jpg", "trailing_garbage.jpg", "large_7487x4991.jpg", "bitmap.bmp",
    "tiff_lzw.tif",
}
REJECT = {
    "truncated.jpg", "empty.jpg", "not_an_image.jpg", "html_error_page.jpg", "one_pixel.jpg",
    "one_pixel.png", "huge_dims_100000x100000.png", "huge_dims_65000x65000.jpg",
    "huge_dims_10000x10000.png",
}


@pytest.fixture
def project(client, admin):
    return client.post("/api/v1/projects", json={"name": "Bears", "labels": ["grizzly", "black"]},
                       headers=admin).json()


def upload(client, headers, project_id, files, label=None):
    data = {"label": label} if label else {}
    return client.post(f"/api/v1/projects/{project_id}/images", headers=headers, data=data,
                       files=[("files", (name, content)) for name, content in files])


def bear_files(data_dir, label, count):
    paths = sorted((data_dir / "bears" / label).glob("*.jpg"))[:count]
    return [(p.name, p.read_bytes()) for p in paths]


def stored_state(client, headers, project_id):
    """Every image row and the hash of its stored bytes."""
    rows = client.get(f"/api/v1/projects/{project_id}/images?limit=1000", headers=headers).json()
    return {
        image["id"]: (image["label"], image["status"], hashlib.sha256(
            client.get(image["file_url"], headers=headers).content).hexdigest())
        for image in rows["images"]
    }


def test_upload_files_with_label_and_duplicates(client, admin, project, data_dir):
    files = bear_files(data_dir, "grizzly", 3)
    first = upload(client, admin, project["id"], files, label="grizzly")
    assert first.status_code == 201
    body = first.json()
    assert len(body["added"]) == 3 and body["duplicates"] == [] and body["rejected"] == []
    again = upload(client, admin, project["id"], files[:2], label="black").json()
    assert again["added"] == [] and len(again["duplicates"]) == 2
    assert {d["image_id"] for d in again["duplicates"]} <= {a["image_id"] for a in body["added"]}
    assert client.get(f"/api/v1/projects/{project['id']}", headers=admin).json()[
        "image_counts"] == {"grizzly": 3, "black": 0}
    listed = client.get(f"/api/v1/projects/{project['id']}/images?label=grizzly",
                        headers=admin).json()
    assert listed["total"] == 3
    image = listed["images"][0]
    assert image["source"] == "upload" and image["width"] <= 1024
    served = client.get(image["file_url"], headers=admin)
    assert served.headers["content-type"] == "image/jpeg" and served.content[:2] == b"\xff\xd8"


def test_zip_of_label_folders_creates_labels(client, admin, project, data_dir):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in ("grizzly", "teddy"):
            for name, content in bear_files(data_dir, label, 2):
                archive.writestr(f"bears/{label}/{name}", content)
        archive.writestr("__MACOSX/._junk", b"junk")
        archive.writestr("../escape.jpg", bear_files(data_dir, "black", 1)[0][1])
    answer = upload(client, admin, project["id"], [("bears.zip", buffer.getvalue())]).json()
    assert sorted(a["label"] for a in answer["added"]) == ["grizzly", "grizzly", "teddy", "teddy"]
    assert [r["reason"] for r in answer["rejected"]] == ["unsafe path in zip"]
    labels = client.get(f"/api/v1/projects/{project['id']}", headers=admin).json()["labels"]
    assert [label["name"] for label in labels] == ["grizzly", "black", "teddy"]


def test_loose_file_without_label_goes_to_the_inbox(client, admin, project, data_dir):
    answer = upload(client, admin, project["id"], bear_files(data_dir, "black", 1)).json()
    assert answer["rejected"] == [] and answer["added"][0]["label"] is None
    inbox = client.get(f"/api/v1/projects/{project['id']}/inbox", headers=admin).json()
    assert [item["id"] for item in inbox["items"]] == [answer["added"][0]["image_id"]]


def test_every_odd_file_gets_an_answer_and_stored_images_are_untouched(
    client, admin, project, data_dir
):
    upload(client, admin, project["id"], bear_files(data_dir, "black", 4), label="black")
    before = stored_state(client, admin, project["id"])
    with open(data_dir / "odd" / "manifest.csv") as handle:
        names = [row["file"] for row in csv.DictReader(handle)]
    assert set(names) == ACCEPT | REJECT | {"corrupt_scan.jpg", "extreme_aspect_2000x12.jpg"}
    for name in names:
        answer = upload(client, admin, project["id"],
                        [(name, (data_dir / "odd" / name).read_bytes())], label="grizzly")
        assert answer.status_code == 201, (name, answer.text)
        body = answer.json()
        outcome = len(body["added"]) + len(body["duplicates"]) + len(body["rejected"])
        assert outcome == 1, (name, body)
        if name in ACCEPT:
            assert body["added"] or body["duplicates"], (name, body)
        if name in REJECT:
            assert body["rejected"] and body["rejected"][0]["reason"], (name, body)
    after = stored_state(client, admin, project["id"])
    assert {k: v for k, v in after.items() if k in before} == before


def test_upload_to_someone_elses_project_is_404(client, admin, other_user, project, data_dir):
    answer = upload(client, other_user, project["id"], bear_files(data_dir, "black", 1),
                    label="black")
    assert answer.status_code == 404


def test_relabel_and_exclude(client, admin, project, data_dir):
    added = upload(client, admin, project["id"], bear_files(data_dir, "black", 1),
                   label="black").json()["added"][0]
    patched = client.patch(f"/api/v1/images/{added['image_id']}",
                           json={"label": "grizzly", "status": "excluded"}, headers=admin)
    assert patched.status_code == 200
    assert patched.json()["label"] == "grizzly" and patched.json()["status"] == "excluded"
    wrong = client.patch(f"/api/v1/images/{added['image_id']}", json={"label": "panda"},
                         headers=admin)
    assert wrong.status_code == 404 and "panda" in wrong.json()["detail"]


def test_body_over_the_limit_is_413(tmp_path):
    from fastapi.testclient import TestClient

    from app.cli import migrate
    from app.web.main import create_app
    from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_key, make_settings

    settings = make_settings(tmp_path, max_upload_mb=1)
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        headers = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        pid = client.post("/api/v1/projects", json={"name": "p"}, headers=headers).json()["id"]
        answer = client.post(f"/api/v1/projects/{pid}/images", headers=headers,
                             files=[("files", ("big.jpg", b"\0" * (2 * 2**20)))])
        assert answer.status_code == 413
        assert "too large" in answer.json()["detail"]
