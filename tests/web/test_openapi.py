"""The OpenAPI document declares the API's errors; numbers beyond 64 bits are a 422."""

HUGE = 2**70


def test_every_operation_declares_its_error_answers(client):
    document = client.get("/api/v1/openapi.json").json()
    assert document["components"]["schemas"]["Error"]["required"] == ["detail"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            default = operation["responses"]["default"]["content"]["application/json"]
            assert default["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path)
    detail = document["components"]["schemas"]["HTTPValidationError"]["properties"]["detail"]
    assert {"type": "string"} in detail["anyOf"]  # a service's 422 message


def test_numbers_beyond_64_bits_are_refused_not_a_server_error(client, admin):
    project = client.post("/api/v1/projects", json={"name": "p"}, headers=admin).json()["id"]
    for url in (f"/api/v1/projects/{HUGE}", f"/api/v1/projects/{project}/images?offset={HUGE}",
                f"/api/v1/images/{HUGE}/file"):
        answer = client.get(url, headers=admin)
        assert answer.status_code == 422, (url, answer.text)
        assert "out of range" in answer.json()["detail"]
    bulk = client.post(f"/api/v1/projects/{project}/images/bulk",
                       json={"image_ids": [HUGE], "status": "excluded"}, headers=admin)
    assert bulk.status_code in (404, 422) and "detail" in bulk.json()
