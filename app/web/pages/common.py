"""What every page shares: templates, error pages, render and redirect, page dependencies."""

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from app.models import ModelVersion, Project, UserSession
from app.services import auth, deployments, jobs, projects
from app.services.errors import (
    ConflictError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    UnavailableError,
)
from app.storage import StorageError, store_failures
from app.web.deps import SESSION_COOKIE, SessionDep
from app.web.paths import TEMPLATES_DIR

templates = Jinja2Templates(directory=TEMPLATES_DIR)


class SignInRequired(Exception):
    """The page needs a signed-in user."""


class PageRoute(APIRoute):
    """Service errors on a page become a readable error page, never raw JSON."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except NotFoundError as exc:
                return error_page(request, 404, "Not found", str(exc))
            except (InvalidInputError, ConflictError) as exc:
                return error_page(request, 400, "That did not work", str(exc))
            except LimitExceededError as exc:
                return error_page(request, 429, "Too much at once", str(exc))
            except RequestValidationError as exc:
                fields = ", ".join(str(e.get("loc", ["", "?"])[-1]) for e in exc.errors())
                return error_page(request, 400, "Some fields are missing or invalid",
                                  f"check: {fields}")
            except (UnavailableError, StorageError, IntegrityError, HTTPException,
                    *store_failures()) as exc:
                status, detail, headers = error_answer(exc)
                page = error_page(request, status, TITLES.get(status, "That did not work"),
                                  detail)
                page.headers.update(headers or {})
                return page

        return handle


def page_router() -> APIRouter:
    """A router of HTML pages: out of the OpenAPI document, errors shown as pages."""
    return APIRouter(include_in_schema=False, route_class=PageRoute)


def render(request: Request, name: str, code: int = 200, **context) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=code)
    if context.get("user") or context.get("csrf_token"):
        # A signed-in page: never kept by a cache, so Back and a shared computer show the
        # current state, and nothing of it once signed out.
        response.headers["Cache-Control"] = "no-store"
    return response


def redirect(url: str, **query) -> RedirectResponse:
    query = {k: v for k, v in query.items() if v not in (None, "")}
    return RedirectResponse(f"{url}?{urlencode(query)}" if query else url, status_code=303)


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", code=status, title=title, message=message,
                  back=request.headers.get("referer"))


TITLES = {404: "Not found", 409: "That did not work", 410: "Gone", 413: "Too large",
          429: "Too much at once", 503: "Not available right now"}
STORE_FAILED = ("the file store failed ({reason}); nothing of this request was saved: "
                "try again later, and tell the operator if it goes on")
MISSING_FILE = ("a stored file is missing or unreadable ({reason}); an operator's "
                "`kodiak check` lists such files")
CONFLICT = "a conflicting change was saved at the same moment (same name or same image); try again"


def error_answer(exc: Exception) -> tuple[int, str, dict[str, str] | None]:
    """(status, detail, headers) of a failure that is not a service error: an HTTPException,
    a missing stored file, a store that failed, a unique constraint, a queue down."""
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), exc.headers
    if isinstance(exc, UnavailableError):
        return 503, str(exc), None
    if isinstance(exc, StorageError):
        return 410, MISSING_FILE.format(reason=exc), None
    if isinstance(exc, IntegrityError):
        return 409, CONFLICT, None
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return 503, STORE_FAILED.format(reason=reason), None


def wants_page(request: Request) -> bool:
    """A browser asking for a page (not the API): errors answer it as a page."""
    return (not request.url.path.startswith("/api/")
            and "text/html" in request.headers.get("accept", ""))


def signed_in_context(user_session: UserSession, **context) -> dict:
    return {"user": user_session.user, "csrf_token": user_session.csrf_token, **context}


def project_context(session: Session, user_session: UserSession, project: Project,
                    section: str, **context) -> dict:
    return signed_in_context(
        user_session, project=project, section=section,
        counts=projects.image_counts(session=session, project=project),
        job_titles=jobs.job_titles(session=session, project_id=project.id),  # "Training #2"
        versions=deployments.model_versions(session=session, project_id=project.id),  # v3
        **context)


# --- dependencies ---------------------------------------------------------------------------


def page_session(request: Request, session: SessionDep) -> UserSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    return auth.user_session_for_token(session=session, token=token) if token else None


PageSessionDep = Annotated[UserSession | None, Depends(page_session)]


def signed_in(user_session: PageSessionDep) -> UserSession:
    if user_session is None:
        raise SignInRequired
    return user_session


SignedInDep = Annotated[UserSession, Depends(signed_in)]


async def checked_form(request: Request, user_session: UserSession, *,
                       max_files: int = 1000) -> FormData:
    """The posted form, once its csrf_token matches the signed-in session."""
    form = await request.form(max_files=max_files)
    sent = str(form.get("csrf_token", "")).encode()
    if not secrets.compare_digest(sent, user_session.csrf_token.encode()):
        await form.close()
        raise InvalidInputError("the form expired: reload the page and try again")
    return form


def csrf_form(*, max_files: int = 1000) -> Callable[..., Awaitable[FormData]]:
    """A dependency: the posted form, once its csrf_token matches the signed-in session."""

    async def form_dependency(request: Request, user_session: SignedInDep) -> FormData:
        return await checked_form(request, user_session, max_files=max_files)

    return form_dependency


CsrfFormDep = Annotated[FormData, Depends(csrf_form())]


def page_project(project_id: int, session: SessionDep, user_session: SignedInDep) -> Project:
    """The signed-in user's project of the page (the 404 page for anyone else)."""
    return projects.get_project(session=session, owner=user_session.user, project_id=project_id)


PageProjectDep = Annotated[Project, Depends(page_project)]


def page_model(model_id: int, session: SessionDep, user_session: SignedInDep) -> ModelVersion:
    """The signed-in user's model version of the page (the 404 page for anyone else)."""
    return deployments.get_model(session=session, owner=user_session.user, model_id=model_id)


PageModelDep = Annotated[ModelVersion, Depends(page_model)]
