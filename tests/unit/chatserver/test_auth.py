"""Access tokens and password hashing (pure, no servers)."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest

from chatserver.auth import (
    AuthError,
    bearer_token,
    decode_access_token,
    hash_password,
    hash_refresh_token,
    issue_access_token,
    verify_password,
)
from chatserver.config import Settings
from chatserver.models import utcnow

pytestmark = pytest.mark.unit

SECRET = "s" * 64


@pytest.fixture
def settings() -> Settings:
    return Settings(jwt_secret=SECRET, access_token_ttl_seconds=60)  # type: ignore[arg-type]


def reason(token: str, settings: Settings) -> str:
    with pytest.raises(AuthError) as caught:
        decode_access_token(token, settings)
    return caught.value.reason


def test_issued_token_decodes_to_the_user(settings: Settings) -> None:
    token = issue_access_token("user-1", settings)
    assert decode_access_token(token, settings) == "user-1"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 60
    assert claims["typ"] == "access"


def test_expired_token(settings: Settings) -> None:
    token = issue_access_token("user-1", settings, now=utcnow() - timedelta(seconds=120))
    assert reason(token, settings) == "expired"


def test_missing_forged_and_malformed_tokens(settings: Settings) -> None:
    now = int(time.time())
    assert reason("", settings) == "missing"
    assert reason("garbage", settings) == "invalid"
    other_key = jwt.encode(
        {"sub": "u", "typ": "access", "iat": now, "exp": now + 60}, "o" * 40, algorithm="HS256"
    )
    assert reason(other_key, settings) == "invalid"
    no_sub = jwt.encode({"typ": "access", "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")
    assert reason(no_sub, settings) == "invalid"
    no_exp = jwt.encode({"sub": "u", "typ": "access", "iat": now}, SECRET, algorithm="HS256")
    assert reason(no_exp, settings) == "invalid"
    refresh_typ = jwt.encode(
        {"sub": "u", "typ": "refresh", "iat": now, "exp": now + 60}, SECRET, algorithm="HS256"
    )
    assert reason(refresh_typ, settings) == "invalid"
    hs512 = jwt.encode(
        {"sub": "u", "typ": "access", "iat": now, "exp": now + 60}, SECRET, algorithm="HS512"
    )
    assert reason(hs512, settings) == "invalid"


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc")],
)
def test_bearer_token(header: str, expected: str) -> None:
    assert bearer_token(header) == expected


@pytest.mark.parametrize(
    ("header", "why"),
    [(None, "missing"), ("", "missing"), ("Basic x", "invalid"), ("Bearer", "invalid")],
)
def test_bearer_token_errors(header: str | None, why: str) -> None:
    with pytest.raises(AuthError) as caught:
        bearer_token(header)
    assert caught.value.reason == why


async def test_password_hashing_round_trip() -> None:
    hashed = await hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert await verify_password(hashed, "correct horse")
    assert not await verify_password(hashed, "wrong horse")
    assert not await verify_password(None, "correct horse")
    assert not await verify_password("not-a-hash", "correct horse")


def test_refresh_tokens_are_stored_as_hashes() -> None:
    digest = hash_refresh_token("token")
    assert len(digest) == 64
    assert digest != "token"
    assert hash_refresh_token("token") == digest
