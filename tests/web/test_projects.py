"""Projects and labels, and that no one sees or changes another user's project."""


def test_create_project_with_labels(client, admin):
    made = client.post("/api/v1/projects", json={"name": "Bears", "labels": ["grizzly", "black"]},
                       headers=admin)
    assert made.status_code == 201
    project = made.json()
    assert [label["name"] for label in project["labels"]] == ["grizzly", "black"]
    assert project["image_counts"] == {"grizzly": 0, "black": 0}
    label = client.post(f"/api/v1/projects/{project['id']}/labels",
                        json={"name": "teddy", "query": "teddy bear"}, headers=admin)
    assert label.status_code == 201
    assert label.json()["query"] == "teddy bear"
    duplicate = client.post(f"/api/v1/projects/{project['id']}/labels", json={"name": "Teddy"},
                            headers=admin)
    assert duplicate.status_code == 409
    listed = client.get("/api/v1/projects", headers=admin).json()
    assert [p["name"] for p in listed] == ["Bears"]


def test_blank_names_are_refused_with_detail(client, admin):
    answer = client.post("/api/v1/projects", json={"name": "   "}, headers=admin)
    assert answer.status_code == 422
    assert "must not be empty" in answer.json()["detail"]


def test_other_user_cannot_see_or_change_project(client, admin, other_user):
    project = client.post("/api/v1/projects", json={"name": "Mine"}, headers=admin).json()
    pid = project["id"]
    assert client.get(f"/api/v1/projects/{pid}", headers=other_user).status_code == 404
    assert client.post(f"/api/v1/projects/{pid}/labels", json={"name": "x"},
                       headers=other_user).status_code == 404
    assert client.delete(f"/api/v1/projects/{pid}", headers=other_user).status_code == 404
    assert client.get("/api/v1/projects", headers=other_user).json() == []
    assert client.get(f"/api/v1/projects/{pid}", headers=admin).status_code == 200


def test_delete_project(client, admin):
    pid = client.post("/api/v1/projects", json={"name": "Gone"}, headers=admin).json()["id"]
    assert client.delete(f"/api/v1/projects/{pid}", headers=admin).status_code == 204
    assert client.get(f"/api/v1/projects/{pid}", headers=admin).status_code == 404


def test_delete_project_removes_its_files(client, admin, settings, data_dir):
    pid = client.post("/api/v1/projects", json={"name": "Gone"}, headers=admin).json()["id"]
    photo = sorted((data_dir / "bears" / "black").glob("*.jpg"))[0]
    added = client.post(f"/api/v1/projects/{pid}/images", headers=admin, data={"label": "b"},
                        files=[("files", (photo.name, photo.read_bytes()))]).json()["added"]
    assert client.get(f"/api/v1/images/{added[0]['image_id']}/thumb?size=96",
                      headers=admin).status_code == 200
    storage = client.app.state.storage  # a folder, or S3 under `make test-s3`
    assert list(storage.list_keys(f"images/{pid}"))
    assert list(storage.list_keys(f"thumbs/images/{pid}"))
    assert client.delete(f"/api/v1/projects/{pid}", headers=admin).status_code == 204
    assert not list(storage.list_keys(f"images/{pid}"))
    assert not list(storage.list_keys(f"thumbs/images/{pid}"))
