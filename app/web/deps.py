"""Named dependencies: settings, database session, storage, the caller, their project."""

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Project, User
from app.services import auth, projects
from app.serving.runtime import Serving
from app.storage import Storage

SESSION_COOKIE = "kodiak_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A database session per request; routes commit what they change."""
    session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_serving(request: Request) -> Serving:
    """The prediction runtime, started and stopped by the app's lifespan."""
    return request.app.state.serving


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
ServingDep = Annotated[Serving, Depends(get_serving)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def optional_user(request: Request, session: SessionDep) -> User | None:
    """The caller by API key or session cookie; cookie-authenticated unsafe calls need CSRF."""
    token = bearer_token(request)
    if token is not None:
        user = auth.user_for_api_key(session=session, key=token)
        if user is None:
            raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        if session.dirty:
            session.commit()
        return user
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    user_session = auth.user_session_for_token(session=session, token=cookie)
    if user_session is None:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token", "")
        if not secrets.compare_digest(sent, user_session.csrf_token):
            raise HTTPException(403, "missing or wrong X-CSRF-Token header")
    return user_session.user


OptionalUserDep = Annotated[User | None, Depends(optional_user)]


def current_user(user: OptionalUserDep) -> User:
    if user is None:
        raise HTTPException(
            401, "sign in or send an API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


UserDep = Annotated[User, Depends(current_user)]


def admin_user(user: UserDep) -> User:
    if not user.is_admin:
        raise HTTPException(403, "only admins can do this")
    return user


AdminDep = Annotated[User, Depends(admin_user)]


def owned_project(project_id: int, user: UserDep, session: SessionDep) -> Project:
    """The caller's project, or 404 (also when it belongs to someone else)."""
    return projects.get_project(session=session, owner=user, project_id=project_id)


ProjectDep = Annotated[Project, Depends(owned_project)]
