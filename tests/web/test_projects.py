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


def test_rename_a_project_and_rename_or_delete_its_labels(client, admin, data_dir):
    project = client.post("/api/v1/projects", json={"name": "Bears", "labels": [
        "grizzly", "black", "teddy"]}, headers=admin).json()
    pid = project["id"]
    grizzly, black, teddy = (label["id"] for label in project["labels"])
    photo = sorted((data_dir / "bears" / "teddy").glob("*.jpg"))[0].read_bytes()
    added = client.post(f"/api/v1/projects/{pid}/images", data={"label": "teddy"},
                        files=[("files", ("t.jpg", photo))], headers=admin)
    assert added.status_code == 201, added.text
    image_id = added.json()["added"][0]["image_id"]

    renamed = client.patch(f"/api/v1/projects/{pid}", json={"name": "  Ursidae "},
                           headers=admin)
    assert renamed.json()["name"] == "Ursidae"
    assert client.patch(f"/api/v1/projects/{pid}", json={"name": " "},
                        headers=admin).status_code == 422
    labels = f"/api/v1/projects/{pid}/labels"
    toy = client.patch(f"{labels}/{teddy}", json={"name": "toy"}, headers=admin).json()
    assert toy == {"id": teddy, "name": "toy", "query": "toy"}  # a default query follows
    assert client.patch(f"{labels}/{grizzly}", json={"query": "grizzly bear"},
                        headers=admin).json()["query"] == "grizzly bear"
    assert client.patch(f"{labels}/{grizzly}", json={"name": "Grizzly bear"},
                        headers=admin).json()["query"] == "grizzly bear"  # its own: kept
    assert client.patch(f"{labels}/{black}", json={"name": "TOY"},
                        headers=admin).status_code == 409
    assert client.patch(f"{labels}/999999", json={"name": "x"}, headers=admin).status_code == 404

    assert client.delete(f"{labels}/{teddy}", headers=admin).json() == {"unlabelled": 1}
    image = client.get(f"/api/v1/projects/{pid}/images", headers=admin).json()["images"][0]
    assert (image["id"], image["label"], image["status"]) == (image_id, None, "active")
    names = [label["name"] for label in client.get(f"/api/v1/projects/{pid}",
                                                   headers=admin).json()["labels"]]
    assert names == ["Grizzly bear", "black"]
    assert client.delete(f"{labels}/{teddy}", headers=admin).status_code == 404
