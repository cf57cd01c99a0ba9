"""Account pages: your password and API keys; users, for admins."""

from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.models import UserSession
from app.schemas import UserIn
from app.services import accounts, auth
from app.services.errors import InvalidInputError, NotFoundError
from app.services.ratelimit import retry_after
from app.web.deps import SESSION_COOKIE, SessionDep
from app.web.pages.common import (
    CsrfFormDep,
    SignedInDep,
    page_router,
    redirect,
    render,
    signed_in_context,
)
from app.web.security import SignInGuardDep, client_ip

router = page_router()


def page_admin(user_session: SignedInDep) -> UserSession:
    """The signed-in admin (the 404 page for anyone else)."""
    if not user_session.user.is_admin:
        raise NotFoundError("no such page")
    return user_session


PageAdminDep = Annotated[UserSession, Depends(page_admin)]


def account_page(request: Request, session, user_session: UserSession, code: int = 200,
                 **context):
    return render(request, "account.html", code=code, **signed_in_context(
        user_session, api_keys=accounts.list_api_keys(session=session, user=user_session.user),
        min_password=accounts.MIN_PASSWORD_CHARS, max_password=auth.MAX_PASSWORD_CHARS,
        **context))


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, session: SessionDep, user_session: SignedInDep,
            notice: str = ""):
    return account_page(request, session, user_session, notice=notice)


@router.post("/account/password", response_class=HTMLResponse)
async def password_change(request: Request, form: CsrfFormDep, session: SessionDep,
                          user_session: SignedInDep, guard: SignInGuardDep,
                          current_password: Annotated[str, Form()] = "",
                          new_password: Annotated[str, Form()] = "",
                          repeat_password: Annotated[str, Form()] = ""):
    user = user_session.user
    if new_password != repeat_password:
        return account_page(request, session, user_session, 400,
                            error="the new passwords differ")
    try:
        accounts.check_new_password(new_password)
        await guard.authenticate(session=session, email=user.email,
                                 password=current_password, ip=client_ip(request))
    except auth.SignInThrottled as exc:
        response = account_page(request, session, user_session, 429,
                                error=str(exc))
        response.headers["Retry-After"] = retry_after(exc.retry_after_s)
        return response
    except auth.AuthError:
        return account_page(request, session, user_session, 400,
                            error="the current password is wrong")
    except InvalidInputError as exc:
        return account_page(request, session, user_session, 400, error=str(exc))
    await run_in_threadpool(_set_password, session, user_session, new_password,
                            request.cookies.get(SESSION_COOKIE))
    return redirect("/account", notice="password changed; other sessions signed out")


def _set_password(session, user_session: UserSession, password: str, token: str | None):
    accounts.change_password(session=session, user=user_session.user, new_password=password,
                             keep_session_token=token)
    session.commit()


@router.post("/account/api-keys", response_class=HTMLResponse)
def api_key_create(request: Request, form: CsrfFormDep, session: SessionDep,
                   user_session: SignedInDep, name: Annotated[str, Form(max_length=200)] = ""):
    key = auth.create_api_key(session=session, user=user_session.user, name=name.strip())
    session.commit()
    return account_page(request, session, user_session, new_key=key)


@router.post("/account/api-keys/{key_id}/revoke")
def api_key_revoke(key_id: int, form: CsrfFormDep, session: SessionDep,
                   user_session: SignedInDep):
    accounts.revoke_api_key(session=session, user=user_session.user, key_id=key_id)
    session.commit()
    return redirect("/account", notice=f"API key #{key_id} revoked")


@router.get("/admin/users", response_class=HTMLResponse)
def users(request: Request, session: SessionDep, user_session: PageAdminDep,
          notice: str = ""):
    return render(request, "users.html", **signed_in_context(
        user_session, users=accounts.list_users(session=session), notice=notice,
        min_password=accounts.MIN_PASSWORD_CHARS))


@router.post("/admin/users")
def user_create(form: CsrfFormDep, session: SessionDep, user_session: PageAdminDep,
                email: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
                is_admin: Annotated[bool, Form()] = False):
    try:
        body = UserIn(email=email.strip(), password=password, is_admin=is_admin)
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][-1]) for e in exc.errors())
        raise InvalidInputError(f"check: {fields}") from exc
    user = auth.create_user(session=session, email=body.email, password=body.password,
                            is_admin=body.is_admin)
    session.commit()
    return redirect("/admin/users", notice=f"{user.email} can sign in now")


@router.post("/admin/users/{user_id}")
def user_update(user_id: int, form: CsrfFormDep, session: SessionDep,
                user_session: PageAdminDep, disabled: Annotated[bool, Form()] = False):
    user = accounts.get_user(session=session, user_id=user_id)
    accounts.set_disabled(session=session, admin=user_session.user, user=user,
                          disabled=disabled)
    session.commit()
    return redirect("/admin/users",
                    notice=f"{user.email} {'disabled' if disabled else 'enabled'}")
