"""Accounts: a person's password and API keys; users as an admin sees them."""

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import ApiKey, User, UserSession, utcnow
from app.services.auth import MAX_PASSWORD_CHARS, hash_password, session_token_hash
from app.services.errors import ConflictError, InvalidInputError, NotFoundError

MIN_PASSWORD_CHARS = 8


def check_new_password(password: str) -> None:
    """InvalidInputError unless the password is long enough (and not absurdly long)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInputError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInputError(f"a password has at most {MAX_PASSWORD_CHARS} characters")


def change_password(*, session: Session, user: User, new_password: str,
                    keep_session_token: str | None = None) -> int:
    """Set a new password (the caller checked the current one) and end the user's other
    browser sessions; returns how many ended."""
    check_new_password(new_password)
    user.password_hash = hash_password(new_password)
    ended = delete(UserSession).where(UserSession.user_id == user.id)
    if keep_session_token:
        ended = ended.where(UserSession.token_hash != session_token_hash(keep_session_token))
    return session.execute(ended).rowcount


def list_api_keys(*, session: Session, user: User) -> list[ApiKey]:
    """The user's API keys, oldest first (hashes only: the keys themselves are never kept)."""
    return list(session.scalars(select(ApiKey).where(ApiKey.user_id == user.id)
                                .order_by(ApiKey.id)))


def revoke_api_key(*, session: Session, user: User, key_id: int) -> None:
    """Delete one of the user's API keys; NotFoundError for anyone else's."""
    api_key = session.get(ApiKey, key_id)
    if api_key is None or api_key.user_id != user.id:
        raise NotFoundError(f"no API key {key_id}")
    session.delete(api_key)


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def get_user(*, session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user {user_id}")
    return user


def set_disabled(*, session: Session, admin: User, user: User, disabled: bool) -> User:
    """Disable or enable a user; disabling ends their browser sessions at once (their API
    keys stay, refused while the account is disabled)."""
    if disabled and user.id == admin.id:
        raise ConflictError("you cannot disable your own account")
    if not disabled:
        user.disabled_at = None
    elif user.disabled_at is None:
        user.disabled_at = utcnow()
        session.execute(delete(UserSession).where(UserSession.user_id == user.id))
    return user
