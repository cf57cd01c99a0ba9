"""The API reference pages: Swagger UI at /api/docs, ReDoc at /redoc.

Their files come from the `fastapi-offline` package and are served by the app, so the pages
work without internet; their start-up code is a static file (static/docs.js), so the pages'
Content-Security-Policy allows no inline script and no other origin (app/web/security.py).
"""

from pathlib import Path

import fastapi_offline
from fastapi import Request
from fastapi.responses import HTMLResponse

from app.web.pages.common import PageSessionDep, page_router, render

router = page_router()
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/api/docs/assets"  # mounted by create_app
OPENAPI_URL = "/api/v1/openapi.json"


def docs_page(request: Request, user_session, kind: str) -> HTMLResponse:
    return render(request, "api_docs.html", kind=kind, assets=ASSETS_URL,
                  openapi_url=OPENAPI_URL,
                  csrf_token=user_session.csrf_token if user_session else "")


@router.get("/api/docs", response_class=HTMLResponse)
def swagger_ui(request: Request, user_session: PageSessionDep):
    return docs_page(request, user_session, "swagger")


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request, user_session: PageSessionDep):
    return docs_page(request, user_session, "redoc")
