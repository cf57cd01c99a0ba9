"""Accounts in the JSON API: your password and API keys; users, for admins."""

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from app.models import ApiKey, User
from app.schemas import PasswordChangeIn, UserPatch
from app.services import accounts, auth
from app.web.api import user_out
from app.web.deps import SESSION_COOKIE, AdminDep, SessionDep, UserDep
from app.web.security import SignInGuardDep, client_ip, throttled

router = APIRouter(prefix="/api/v1")


def account_out(user: User) -> dict:
    return {**user_out(user), "created_at": user.created_at.isoformat(),
            "disabled": user.disabled_at is not None,
            "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None}


def api_key_out(api_key: ApiKey) -> dict:
    return {"id": api_key.id, "name": api_key.name, "prefix": api_key.prefix,
            "created_at": api_key.created_at.isoformat(),
            "last_used_at": api_key.last_used_at.isoformat() if api_key.last_used_at else None}


async def check_current_password(request: Request, guard, session, user: User,
                                 password: str) -> None:
    """403 unless `password` is the user's; counted like a sign-in (throttled, 429)."""
    try:
        await guard.authenticate(session=session, email=user.email, password=password,
                                 ip=client_ip(request))
    except auth.SignInThrottled as exc:
        raise throttled(exc) from exc
    except auth.AuthError as exc:
        raise HTTPException(403, "the current password is wrong") from exc


@router.get("/account")
def get_account(user: UserDep):
    return account_out(user)


@router.post("/account/password", status_code=204)
async def change_password(body: PasswordChangeIn, request: Request, session: SessionDep,
                          user: UserDep, guard: SignInGuardDep):
    """Needs the current password; ends every other browser session of the account."""
    await check_current_password(request, guard, session, user, body.current_password)
    await run_in_threadpool(set_password, session, user, body.new_password,
                            request.cookies.get(SESSION_COOKIE))


def set_password(session, user: User, password: str, keep_session_token: str | None) -> None:
    """Hash (off the event loop) and save a new password, ending the other sessions."""
    accounts.change_password(session=session, user=user, new_password=password,
                             keep_session_token=keep_session_token)
    session.commit()


@router.get("/api-keys")
def list_api_keys(session: SessionDep, user: UserDep):
    """Your API keys: names and prefixes, never the keys."""
    return [api_key_out(key) for key in accounts.list_api_keys(session=session, user=user)]


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_api_key(key_id: int, session: SessionDep, user: UserDep):
    accounts.revoke_api_key(session=session, user=user, key_id=key_id)
    session.commit()


@router.get("/users")
def list_users(session: SessionDep, admin: AdminDep):
    return [account_out(user) for user in accounts.list_users(session=session)]


@router.patch("/users/{user_id}")
def update_user(user_id: int, body: UserPatch, session: SessionDep, admin: AdminDep):
    """Disable or enable a user: a disabled user's sessions and keys stop working at once."""
    user = accounts.get_user(session=session, user_id=user_id)
    if body.disabled is not None:
        accounts.set_disabled(session=session, admin=admin, user=user, disabled=body.disabled)
    session.commit()
    return account_out(user)
