"""Upload history: every upload's outcome kept per project until dismissed, one record per
Upload click (its batches name it), imports too, and the Failed page and API list them."""

import io
import zipfile

import pytest

from tests.web.test_images import bear_files, upload

ODD = ("not_an_image.jpg", "truncated.jpg", "empty.jpg", "one_pixel.png", "html_error_page.jpg",
       "huge_dims_10000x10000.png", "one_pixel.jpg")


@pytest.fixture
def project(client, admin):
    return client.post("/api/v1/projects", json={"name": "Bears", "labels": ["grizzly", "black"]},
                       headers=admin).json()


def odd_files(data_dir):
    return [(name, (data_dir / "odd" / name).read_bytes()) for name in ODD]


def history(client, headers, project_id, **params):
    answer = client.get(f"/api/v1/projects/{project_id}/uploads", headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["uploads"]


def test_every_rejected_file_is_kept_with_its_reason_not_five(client, admin, project, data_dir):
    files = bear_files(data_dir, "grizzly", 2) + odd_files(data_dir)
    answer = upload(client, admin, project["id"], files, label="grizzly").json()
    assert len(answer["added"]) == 2 and len(answer["rejected"]) == len(ODD)
    [record] = history(client, admin, project["id"])
    assert record["id"] == answer["upload_id"]
    assert (record["added"], record["duplicates"], record["label"]) == (2, 0, "grizzly")
    assert [r["filename"] for r in record["rejected"]] == [
        r["filename"] for r in answer["rejected"]]
    assert {r["filename"] for r in record["rejected"]} == set(ODD)  # all seven, not five
    assert all(r["reason"] for r in record["rejected"])


def test_batches_of_one_click_share_a_record_and_another_click_makes_a_new_one(
        client, admin, project, data_dir):
    bears = bear_files(data_dir, "grizzly", 4)
    first = upload(client, admin, project["id"], bears[:2], label="grizzly").json()
    second = client.post(
        f"/api/v1/projects/{project['id']}/images", headers=admin,
        data={"label": "black", "upload_id": str(first["upload_id"])},
        files=[("files", file) for file in [bears[0], *odd_files(data_dir)[:1]]])
    assert second.json()["upload_id"] == first["upload_id"]
    third = upload(client, admin, project["id"], bears[2:], label="grizzly").json()
    assert third["upload_id"] != first["upload_id"]
    newest, oldest = history(client, admin, project["id"])
    assert newest["id"] == third["upload_id"] and newest["added"] == 2
    assert (oldest["added"], oldest["duplicates"], len(oldest["rejected"])) == (2, 1, 1)
    assert oldest["label"] is None  # two labels in one click


def test_an_upload_id_of_another_project_starts_a_new_record(client, admin, project, data_dir):
    other = client.post("/api/v1/projects", json={"name": "Other", "labels": ["x"]},
                        headers=admin).json()
    theirs = upload(client, admin, other["id"], bear_files(data_dir, "black", 1), label="x")
    mine = client.post(f"/api/v1/projects/{project['id']}/images", headers=admin,
                       data={"label": "grizzly", "upload_id": str(theirs.json()["upload_id"])},
                       files=[("files", ("a.jpg", bear_files(data_dir, "grizzly", 1)[0][1]))])
    assert mine.json()["upload_id"] != theirs.json()["upload_id"]
    [record] = history(client, admin, other["id"])
    assert record["added"] == 1  # the other project's record is untouched


def test_dismissed_uploads_leave_the_history_but_stay_on_the_failed_page(
        client, admin, project, data_dir):
    answer = upload(client, admin, project["id"], odd_files(data_dir)[:2], label="grizzly").json()
    huge = client.post(f"/api/v1/projects/{project['id']}/uploads/dismiss", headers=admin,
                       json={"upload_ids": [2**70]})  # beyond 64 bits: refused, or no such one
    assert huge.status_code == 422 or huge.json() == {"dismissed": 0}
    dismissed = client.post(f"/api/v1/projects/{project['id']}/uploads/dismiss", headers=admin,
                            json={"upload_ids": [answer["upload_id"]]})
    assert dismissed.json() == {"dismissed": 1}
    assert history(client, admin, project["id"]) == []
    [kept] = history(client, admin, project["id"], dismissed="true")
    assert kept["dismissed_at"] is not None
    failed = client.get(f"/api/v1/projects/{project['id']}/failed", headers=admin).json()
    uploads = [row for row in failed if row["source"] == "upload"]
    assert {row["filename"] for row in uploads} == set(ODD[:2])
    assert all(row["reason"] and row["upload_id"] == answer["upload_id"] for row in uploads)
    assert all(set(row) >= {"id", "label", "status", "reason", "image_url", "job_id"}
               for row in failed)  # the search rows' keys, for clients of the old shape


def test_imports_are_recorded_too(client, admin, project, data_dir):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("grizzly/a.jpg", bear_files(data_dir, "grizzly", 1)[0][1])
        archive.writestr("grizzly/notes.jpg", b"not a photo")
    answer = client.post(f"/api/v1/projects/{project['id']}/imports", headers=admin,
                         files=[("file", ("set.zip", buffer.getvalue()))])
    assert answer.status_code == 201, answer.text
    [record] = history(client, admin, project["id"])
    assert record["source"] == "import" and record["added"] == 1
    assert [r["filename"] for r in record["rejected"]] == ["set.zip:grizzly/notes.jpg"]


def test_someone_else_cannot_read_or_dismiss_the_history(client, admin, other_user, project,
                                                         data_dir):
    answer = upload(client, admin, project["id"], odd_files(data_dir)[:1], label="grizzly").json()
    url = f"/api/v1/projects/{project['id']}/uploads"
    assert client.get(url, headers=other_user).status_code == 404
    assert client.post(f"{url}/dismiss", headers=other_user,
                       json={"upload_ids": [answer["upload_id"]]}).status_code == 404
    assert len(history(client, admin, project["id"])) == 1


def test_the_project_page_lists_uploads_and_dismisses_one_or_every_one(
        client, settings, admin, project, data_dir):
    from tests.web.test_pages import sign_in

    pid = project["id"]
    for file in odd_files(data_dir)[:3]:
        upload(client, admin, pid, [file], label="grizzly")
    csrf = sign_in(client)
    page = client.get(f"/projects/{pid}").text
    assert page.count('class="upload"') == 3 and "Dismiss all 3" in page
    assert all(name in page for name in ODD[:3])
    oldest = history(client, admin, pid)[-1]["id"]
    dismissed = client.post(f"/projects/{pid}/uploads/dismiss", follow_redirects=False,
                            data={"csrf_token": csrf, "upload_id": str(oldest)})
    assert dismissed.status_code == 303
    assert dismissed.headers["location"] == f"/projects/{pid}#uploads"
    assert oldest not in [record["id"] for record in history(client, admin, pid)]

    # More than the page shows: it says so, and "Dismiss all" takes every one.
    from app.db import make_engine, make_session_factory
    from app.models import UploadRecord

    with make_session_factory(make_engine(settings.resolved_database_url()))() as session:
        session.add_all(UploadRecord(project_id=pid, added=1, duplicates=0, rejected=[])
                        for _ in range(100))
        session.commit()
    page = client.get(f"/projects/{pid}").text
    assert page.count('class="upload"') == 100 and "2 older uploads not shown here" in page
    client.post(f"/projects/{pid}/uploads/dismiss", data={"csrf_token": csrf, "every": "true"})
    assert history(client, admin, pid) == [] and 'id="uploads"' not in client.get(
        f"/projects/{pid}").text
    assert len(history(client, admin, pid, dismissed="true", limit=1000)) == 103
    assert len(history(client, admin, pid, dismissed="true", offset=100)) == 3
