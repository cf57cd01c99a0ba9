"""Users, browser sessions and API keys."""

import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import ApiKey, User, UserSession, utcnow
from app.services.errors import ConflictError

_hasher = PasswordHasher()
API_KEY_PREFIX = "kdk_"


class AuthError(Exception):
    """Credentials that do not identify a user."""


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(*, session: Session, email: str, password: str, is_admin: bool = False) -> User:
    """Create a user with an argon2-hashed password."""
    email = normalise_email(email)
    if session.scalar(select(User).where(User.email == email)):
        raise ConflictError(f"a user with email {email} exists already")
    user = User(email=email, password_hash=_hasher.hash(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def authenticate(*, session: Session, email: str, password: str) -> User:
    """The user with these credentials, or AuthError."""
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        _hasher.hash(password)  # same cost whether or not the user exists
        raise AuthError("wrong email or password")
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError) as exc:
        raise AuthError("wrong email or password") from exc
    return user


def ensure_admin(*, session: Session, email: str, password: str | None) -> str | None:
    """Create the first admin if there is no user; returns a generated password to print."""
    if session.scalar(select(User.id).limit(1)) is not None:
        return None
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(12)
    create_user(session=session, email=email, password=password, is_admin=True)
    return generated


def start_session(*, session: Session, user: User, days: int) -> tuple[str, str]:
    """Open a browser session; returns (cookie token, csrf token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(
        UserSession(
            user_id=user.id,
            token_hash=_sha256(token),
            csrf_token=csrf,
            expires_at=utcnow() + timedelta(days=days),
        )
    )
    session.flush()
    return token, csrf


def user_session_for_token(*, session: Session, token: str) -> UserSession | None:
    """The live browser session behind a cookie token."""
    found = session.scalar(select(UserSession).where(UserSession.token_hash == _sha256(token)))
    if found is None or found.expires_at < utcnow():
        return None
    return found


def end_session(*, session: Session, token: str) -> None:
    session.execute(delete(UserSession).where(UserSession.token_hash == _sha256(token)))


def create_api_key(*, session: Session, user: User, name: str = "") -> str:
    """Create an API key; the plain key is returned once and only its hash is kept."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(user_id=user.id, name=name, prefix=key[:10], key_hash=_sha256(key)))
    session.flush()
    return key


def user_for_api_key(*, session: Session, key: str) -> User | None:
    """The owner of an API key, recording its use."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    api_key = session.scalar(select(ApiKey).where(ApiKey.key_hash == _sha256(key)))
    if api_key is None:
        return None
    now = utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        api_key.last_used_at = now  # at most a write a minute, not one per prediction
    return api_key.user
