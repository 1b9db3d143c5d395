"""Access tokens and password hashing (pure, no servers)."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import timedelta

import jwt
import pytest

from chatserver.auth import (
    AuthError,
    HashingBusy,
    Passwords,
    argon2_slots,
    bearer_token,
    decode_access_token,
    hash_refresh_token,
    issue_access_token,
    verify_access_token,
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
    assert claims["exp"] - claims["iat"] in (60, 61)
    assert claims["typ"] == "access"


@pytest.mark.parametrize("fraction", [0, 1, 500_000, 999_999])
def test_a_token_lives_at_least_its_expires_in(settings: Settings, fraction: int) -> None:
    # Clients schedule refreshes by expires_in (the TTL): exp must not fall before it.
    issued = utcnow().replace(microsecond=fraction)
    claims = jwt.decode(
        issue_access_token("user-1", settings, now=issued),
        SECRET,
        algorithms=["HS256"],
        options={"verify_exp": False},
    )
    assert 0 <= claims["exp"] - (issued.timestamp() + 60) < 1


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
    "header",
    [b'{"alg":"none","typ":"JWT"}', b"[1]", b"not json", b'{"alg":"HS256","kid":7}'],
)
def test_tokens_whose_header_is_not_ours_are_invalid(settings: Settings, header: bytes) -> None:
    """The key is picked from the header before `jwt.decode` checks the token (auth.py
    `_unverified_kid`): a header that is not an object, an unsigned token, a non-string kid."""
    good = issue_access_token("user-1", settings)
    _, payload, signature = good.split(".")
    head = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
    for token in (f"{head}.{payload}.{signature}", f"{head}.{payload}.", f"é{head}.{payload}"):
        assert reason(token, settings) == "invalid"


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


async def test_password_hashing_round_trip(settings: Settings) -> None:
    passwords = Passwords(settings, slots=1)
    hashed = await passwords.hash("correct horse")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await passwords.verify(hashed, "correct horse")
    assert not await passwords.verify(hashed, "wrong horse")
    assert not await passwords.verify(None, "correct horse")
    assert not await passwords.verify("not-a-hash", "correct horse")


def test_argon2_slots_fit_a_quarter_of_the_memory_limit(settings: Settings) -> None:
    # 64 MiB per hash: a 1 GiB pod hashes 4 at once, a 256 MiB one still 1.
    assert argon2_slots(settings, 1024 * 2**20) == 4
    assert argon2_slots(settings, 256 * 2**20) == 1
    assert argon2_slots(settings, 64 * 2**20) == 1
    assert argon2_slots(settings, None) == 2
    fixed = settings.model_copy(update={"argon2_max_concurrent": 7})
    assert argon2_slots(fixed, 1024 * 2**20) == 7


@pytest.mark.parametrize(("memory_kib", "passes"), [(19_455, 2), (47_103, 1), (7_168, 4)])
def test_argon2_below_owasp_minimums_is_refused(memory_kib: int, passes: int) -> None:
    with pytest.raises(ValueError, match="OWASP"):
        Settings(
            jwt_secret=SECRET,  # type: ignore[arg-type]
            argon2_memory_kib=memory_kib,
            argon2_time_cost=passes,
        )


async def test_hashing_beyond_the_queue_is_refused_at_once(settings: Settings) -> None:
    cheap = settings.model_copy(update={"argon2_max_waiting": 1})
    passwords = Passwords(cheap, slots=1)
    first = asyncio.ensure_future(passwords.hash("one password"))
    second = asyncio.ensure_future(passwords.hash("two password"))
    await asyncio.sleep(0)  # both reached the semaphore: one runs, one waits
    with pytest.raises(HashingBusy):
        await passwords.hash("three password")
    assert (await first).startswith("$argon2id$")
    assert (await second).startswith("$argon2id$")


def test_refresh_tokens_are_stored_as_hashes() -> None:
    digest = hash_refresh_token("token")
    assert len(digest) == 64
    assert digest != "token"
    assert hash_refresh_token("token") == digest


def test_access_tokens_carry_their_login(settings: Settings) -> None:
    token = issue_access_token("u1", settings, family_id="fam-1")
    verified = verify_access_token(token, settings)
    assert verified.user_id == "u1"
    assert verified.family_id == "fam-1"
    assert verified.expires_at == pytest.approx(time.time() + 60, abs=2)
    # Tokens issued before the claim existed still verify, without a login.
    assert verify_access_token(issue_access_token("u1", settings), settings).family_id is None


def test_a_login_claim_that_is_not_a_string_is_invalid(settings: Settings) -> None:
    now = int(time.time())
    claims = {"sub": "u1", "typ": "access", "iat": now, "exp": now + 60, "fam": 7}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as caught:
        verify_access_token(token, settings)
    assert caught.value.reason == "invalid"
