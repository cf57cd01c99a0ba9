"""The OpenAPI document: FastAPI's, plus the error answers every route of the API may give."""

from fastapi import FastAPI

VALIDATION_ERRORS = {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}
ERROR = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"title": "Detail",
                              "anyOf": [{"type": "string"}, VALIDATION_ERRORS]}},
}
DEFAULT_RESPONSE = {
    "description": 'An error: a 4xx status (401 without a valid key or session, 403 without '
                   'the CSRF token or the right role, 404 for what is missing or someone '
                   'else\'s, 409, 413, 422, 429, 503) and {"detail": ...}',
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def document_errors(app: FastAPI) -> None:
    """Declare the API's error answers in the app's OpenAPI document: a `default` response of
    every operation, and a 422's detail either FastAPI's list or a service's message."""
    generate = app.openapi

    def openapi() -> dict:
        document = generate()  # FastAPI's, cached until the routes change
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = ERROR
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"]["properties"]["detail"] = ERROR["properties"]["detail"]
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                operation.setdefault("responses", {}).setdefault("default", DEFAULT_RESPONSE)
        return document

    app.openapi = openapi
