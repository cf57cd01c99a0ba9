"""Users, browser sessions and API keys."""

import asyncio
import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import ApiKey, User, UserSession, utcnow
from app.services.errors import ConflictError
from app.services.ratelimit import SignInThrottle

_hasher = PasswordHasher()
API_KEY_PREFIX = "kdk_"
MAX_PASSWORD_CHARS = 1000


class AuthError(Exception):
    """Credentials that do not identify a user."""


class SignInThrottled(Exception):
    """Too many sign-in attempts (for this account or client, or at once): try again later."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def session_token_hash(token: str) -> str:
    """What the database keeps of a session cookie's token."""
    return _sha256(token)


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
    if user.disabled_at is not None:
        raise AuthError("this account is disabled")
    return user


class SignInGuard:
    """Sign-in attempts throttled per account and client IP, and bounded password hashing.

    Argon2 costs 64 MB and tens of milliseconds per hash: at most `hashes_at_once` run (in
    threads, off the event loop); an attempt that waits longer than `queue_s` for one is
    turned away without counting as a failure.
    """

    def __init__(self, *, throttle: SignInThrottle, hashes_at_once: int,
                 queue_s: float = 10.0) -> None:
        self.throttle = throttle
        self.queue_s = queue_s
        self._hashing = asyncio.Semaphore(max(1, hashes_at_once))

    async def authenticate(self, *, session: Session, email: str, password: str,
                           ip: str) -> User:
        """The user with these credentials; AuthError, or SignInThrottled while locked out."""
        account = normalise_email(email)
        wait = self.throttle.attempt(account=account, ip=ip)
        if wait:
            raise SignInThrottled("too many failed sign-ins: try again later", wait)
        if len(password) > MAX_PASSWORD_CHARS:
            raise AuthError("wrong email or password")
        try:
            async with asyncio.timeout(self.queue_s):
                await self._hashing.acquire()
        except TimeoutError:
            self.throttle.give_back(account=account, ip=ip)
            raise SignInThrottled("too many sign-ins at once: try again", 1.0) from None
        try:
            user = await asyncio.to_thread(authenticate, session=session, email=email,
                                           password=password)
        finally:
            self._hashing.release()
        self.throttle.give_back(account=account, ip=ip)
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
    """The live browser session behind a cookie token (none for a disabled user)."""
    found = session.scalar(select(UserSession).where(UserSession.token_hash == _sha256(token)))
    if found is None or found.expires_at < utcnow() or found.user.disabled_at is not None:
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
    """The owner of an API key, recording its use (none for a disabled user)."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    api_key = session.scalar(select(ApiKey).where(ApiKey.key_hash == _sha256(key)))
    if api_key is None or api_key.user.disabled_at is not None:
        return None
    now = utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        api_key.last_used_at = now  # at most a write a minute, not one per prediction
    return api_key.user
