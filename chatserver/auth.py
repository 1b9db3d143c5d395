"""Accounts and tokens: argon2 password hashes, HS256 JWT access tokens, rotating refresh tokens.

Access tokens are short-lived JWTs (`sub` = user id, `typ` = "access"). Refresh tokens are opaque
random strings; MongoDB keeps only their SHA-256. Each refresh token belongs to a family (one
login): refreshing marks the presented token used and issues the next one in the family;
presenting a used token again means it leaked, so the whole family is revoked. Expired tokens are
refused and swept by the application (FerretDB v1 has no TTL indexes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatserver.config import Settings
from chatserver.models import utcnow
from chatserver.store import Store

T = TypeVar("T")

JWT_ALGORITHM: Final = "HS256"
ACCESS_TOKEN_TYPE: Final = "access"

AuthReason = Literal["missing", "expired", "invalid"]
RefreshReason = Literal["invalid", "expired", "reused", "revoked"]

# The share of the process's memory limit argon2 may use at once (docs/configuration.md, "Abuse
# limits"); the rest is the server's: sockets, queues, MongoDB and Redis buffers.
ARGON2_MEMORY_SHARE: Final = 0.25
# Without a known memory limit (no cgroup limit, nothing configured): this many hashes at once.
ARGON2_DEFAULT_CONCURRENT: Final = 2


class AuthError(Exception):
    """An access token was missing, expired or invalid. `reason` is safe to return to clients."""

    def __init__(self, reason: AuthReason, message: str) -> None:
        super().__init__(message)
        self.reason: AuthReason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class RevokedFamily:
    """A login whose tokens were just revoked: its user's sockets of it must close."""

    user_id: str
    family_id: str


class RefreshError(Exception):
    """A refresh token could not be used; ``revoked`` names a family this call revoked."""

    def __init__(
        self, reason: RefreshReason, message: str, revoked: RevokedFamily | None = None
    ) -> None:
        super().__init__(message)
        self.reason: RefreshReason = reason
        self.message = message
        self.revoked = revoked


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A verified access token: its user, expiry (unix seconds) and login (refresh family;
    None for tokens issued before access tokens carried it)."""

    user_id: str
    expires_at: float
    family_id: str | None


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
        }


class HashingBusy(Exception):
    """Too many requests already wait for a password hash; the caller should retry shortly."""


def argon2_slots(settings: Settings, memory_limit_bytes: int | None) -> int:
    """How many argon2 hashes may run at once: HYPERSEND_ARGON2_MAX_CONCURRENT, else as many
    as fit in ARGON2_MEMORY_SHARE of the memory limit (at least one)."""
    if settings.argon2_max_concurrent > 0:
        return settings.argon2_max_concurrent
    if not memory_limit_bytes:
        return ARGON2_DEFAULT_CONCURRENT
    per_hash = settings.argon2_memory_kib * 1024
    return max(1, int(memory_limit_bytes * ARGON2_MEMORY_SHARE) // per_hash)


class Passwords:
    """argon2id hashing and verification, at most ``slots`` at a time.

    Each hash holds ``argon2_memory_kib`` for its whole run, so the number running at once, not
    the request rate, decides the memory a burst of registrations or logins takes. At most
    ``argon2_max_waiting`` callers queue for a slot; more get :class:`HashingBusy` at once, so a
    flood neither exhausts memory nor builds a queue nobody lives to see answered.
    """

    def __init__(self, settings: Settings, slots: int) -> None:
        self.slots = slots
        self.max_waiting = settings.argon2_max_waiting
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self._semaphore = asyncio.Semaphore(slots)
        self._waiting = 0
        # Verified against when the username is unknown, so the response time does not reveal it.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def _run(self, work: Callable[[], T]) -> T:
        if self._semaphore.locked() and self._waiting >= self.max_waiting:
            raise HashingBusy
        self._waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._waiting -= 1
        # argon2 is CPU-bound: off the event loop. The slot is released when the hash is done,
        # not when the request is: a cancelled caller leaves its thread (and memory) running.
        done = asyncio.ensure_future(asyncio.to_thread(work))
        done.add_done_callback(lambda _: self._semaphore.release())
        return await asyncio.shield(done)

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        def verify() -> bool:
            try:
                return bool(self._hasher.verify(password_hash or self._dummy_hash, password))
            except (VerificationError, InvalidHashError):
                return False

        ok = await self._run(verify)
        return ok and password_hash is not None


# -- access tokens ------------------------------------------------------------------------------


def issue_access_token(
    user_id: str,
    settings: Settings,
    now: datetime | None = None,
    family_id: str | None = None,
) -> str:
    issued = now or utcnow()
    claims: dict[str, Any] = {
        "sub": user_id,
        "typ": ACCESS_TOKEN_TYPE,
        "iat": int(issued.timestamp()),
        # Rounded up: the token lives at least the `expires_in` its clients schedule by (a
        # truncated exp cut up to a second off it, and a client refreshing a fifth before
        # expiry of a 4 s token found it closed first).
        "exp": math.ceil(issued.timestamp() + settings.access_token_ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    if family_id is not None:
        # The login it belongs to: logging out (revoking the family) closes its sockets.
        claims["fam"] = family_id
    key = settings.key_ring().signing_key(issued.timestamp())
    return jwt.encode(claims, key.secret, algorithm=JWT_ALGORITHM, headers={"kid": key.kid})


def verify_access_token(token: str, settings: Settings) -> AccessToken:
    """A valid access token's claims; raises AuthError(missing | expired | invalid)."""
    if not token:
        raise AuthError("missing", "an access token is required")
    claims = _verified_claims(token, settings)
    subject, expires, family = claims.get("sub"), claims.get("exp"), claims.get("fam")
    if (
        claims.get("typ") != ACCESS_TOKEN_TYPE
        or not isinstance(subject, str)
        or not subject
        or not isinstance(expires, int | float)
        or not (family is None or isinstance(family, str))
    ):
        raise AuthError("invalid", "the access token is invalid")
    return AccessToken(user_id=subject, expires_at=float(expires), family_id=family)


def _verified_claims(token: str, settings: Settings) -> dict[str, Any]:
    """The claims of a token signed by a key of the ring that still verifies (by its `kid`)."""
    kid = _unverified_kid(token)
    keys = settings.key_ring().verifying_keys(kid, time.time())
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
            )
            return claims
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("expired", "the access token has expired") from exc
        except jwt.InvalidSignatureError:
            continue  # a token without kid: try the next key
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid", "the access token is invalid") from exc
    # An unknown or retired key id, or no key whose signature matches.
    raise AuthError("invalid", "the access token is invalid")


def _unverified_kid(token: str) -> str | None:
    """The ``kid`` of a token's header, which only picks the key: `jwt.decode` then checks the
    whole token, header included. Read here rather than with `jwt.get_unverified_header`, which
    parses and checks every segment once more (a third of a connect's token check, issue #16).
    """
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error) as exc:  # JSONDecodeError and UnicodeError too
        raise AuthError("invalid", "the access token is invalid") from exc
    kid = header.get("kid") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not (kid is None or isinstance(kid, str)):
        raise AuthError("invalid", "the access token is invalid")
    return kid


def decode_access_token(token: str, settings: Settings) -> str:
    """The user id of a valid access token; raises AuthError(missing | expired | invalid)."""
    return verify_access_token(token, settings).user_id


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; AuthError if missing/malformed."""
    if not authorization:
        raise AuthError("missing", "an Authorization: Bearer <access token> header is required")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("invalid", "the Authorization header must be 'Bearer <access token>'")
    return token.strip()


# -- refresh tokens -----------------------------------------------------------------------------


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def issue_tokens(
    store: Store, settings: Settings, user_id: str, family_id: str | None = None
) -> TokenPair:
    """A new access token and a new refresh token (in `family_id`, or a new family)."""
    now = utcnow()
    refresh = secrets.token_urlsafe(32)
    family = family_id or uuid.uuid4().hex
    await store.insert_refresh_token(
        hash_refresh_token(refresh),
        user_id,
        family,
        now + timedelta(seconds=settings.refresh_token_ttl_seconds),
    )
    return TokenPair(
        access_token=issue_access_token(user_id, settings, now, family),
        refresh_token=refresh,
        expires_in=settings.access_token_ttl_seconds,
        user_id=user_id,
    )


async def rotate_refresh_token(store: Store, settings: Settings, token: str) -> TokenPair:
    """Use a refresh token once: the next pair of its family, or RefreshError."""
    token_hash = hash_refresh_token(token)
    record = await store.get_refresh_token(token_hash)
    if record is None:
        raise RefreshError("invalid", "the refresh token is invalid")
    if record.revoked:
        raise RefreshError("revoked", "the refresh token was revoked; log in again")
    if record.expires_at <= utcnow():
        raise RefreshError("expired", "the refresh token has expired; log in again")
    if not await store.claim_refresh_token(token_hash, record.expires_at):
        # Used before: someone replayed it. Revoke every token of this login.
        await _revoke_family(store, settings, record.family_id)
        raise RefreshError(
            "reused",
            "the refresh token was already used; every token of this login is revoked",
            RevokedFamily(record.user_id, record.family_id),
        )
    pair = await issue_tokens(store, settings, record.user_id, record.family_id)
    # A reuse detected concurrently (another process) revokes the pair just issued too.
    if await store.is_family_revoked(record.family_id):
        raise RefreshError("revoked", "the refresh token was revoked; log in again")
    return pair


async def _revoke_family(store: Store, settings: Settings, family_id: str) -> None:
    # No token of the family can outlive one refresh TTL from now.
    until = utcnow() + timedelta(seconds=settings.refresh_token_ttl_seconds)
    await store.revoke_token_family(family_id, until)


async def revoke_refresh_token(
    store: Store, settings: Settings, token: str
) -> RevokedFamily | None:
    """Logout: revoke the token's whole family (unknown tokens are ignored)."""
    record = await store.get_refresh_token(hash_refresh_token(token))
    if record is None:
        return None
    await _revoke_family(store, settings, record.family_id)
    return RevokedFamily(record.user_id, record.family_id)


async def token_revoked(store: Store, token: AccessToken) -> bool:
    """Whether the login of an access token was revoked (logout, a replayed refresh token)."""
    return token.family_id is not None and await store.is_family_revoked(token.family_id)
