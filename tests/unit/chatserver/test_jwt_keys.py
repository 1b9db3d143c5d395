"""The JWT key ring: which key signs and which verify, through a rotation (pure, no servers)."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from pydantic import SecretStr, ValidationError

from chatserver.auth import AuthError, issue_access_token, verify_access_token
from chatserver.config import Settings
from chatserver.jwtkeys import JwtKey, KeyRing, legacy_kid, parse_key_ring

pytestmark = pytest.mark.unit

OLD, NEW = "o" * 40, "n" * 40


def ring(*keys: dict[str, Any]) -> Settings:
    return Settings(jwt_keys=SecretStr(json.dumps({"keys": list(keys)})))


def test_the_newest_started_key_signs_and_every_unretired_key_verifies() -> None:
    keys = KeyRing(
        (
            JwtKey("a", OLD, sign_from=0, verify_until=2000),
            JwtKey("b", NEW, sign_from=1000),
        )
    )
    assert keys.signing_key(999).kid == "a"  # b is known everywhere before anyone signs with it
    assert keys.signing_key(1000).kid == "b"
    assert [k.kid for k in keys.verifying_keys("a", 1999)] == ["a"]
    assert keys.verifying_keys("a", 2000) == []  # retired
    assert [k.kid for k in keys.verifying_keys(None, 1500)] == ["a", "b"]
    assert keys.verifying_keys("zzz", 1500) == []


def test_a_ring_whose_keys_all_start_later_still_signs() -> None:
    keys = KeyRing((JwtKey("late", NEW, sign_from=5000), JwtKey("later", OLD, sign_from=9000)))
    assert keys.signing_key(10).kid == "late"


def test_tokens_carry_the_signing_kid_and_survive_a_rotation() -> None:
    now = time.time()
    before = ring({"kid": "k1", "secret": OLD})
    token = issue_access_token("u1", before)
    assert jwt.get_unverified_header(token)["kid"] == "k1"

    # The rotation: k2 signs from now on, k1 verifies for one more token lifetime.
    rotated = ring(
        {"kid": "k1", "secret": OLD, "verifyUntil": now + 900},
        {"kid": "k2", "secret": NEW, "signFrom": now - 1},
    )
    assert verify_access_token(token, rotated).user_id == "u1"  # nobody is logged out
    fresh = issue_access_token("u1", rotated)
    assert jwt.get_unverified_header(fresh)["kid"] == "k2"
    assert verify_access_token(fresh, rotated).user_id == "u1"

    # After k1's verifyUntil its tokens are refused, k2's are not.
    retired = ring(
        {"kid": "k1", "secret": OLD, "verifyUntil": now - 1},
        {"kid": "k2", "secret": NEW, "signFrom": now - 1000},
    )
    with pytest.raises(AuthError) as caught:
        verify_access_token(token, retired)
    assert caught.value.reason == "invalid"
    assert verify_access_token(fresh, retired).user_id == "u1"


def test_a_token_naming_one_key_but_signed_with_another_is_refused() -> None:
    settings = ring({"kid": "k1", "secret": OLD}, {"kid": "k2", "secret": NEW})
    claims = {"sub": "u", "typ": "access", "iat": int(time.time()), "exp": int(time.time()) + 60}
    forged = jwt.encode(claims, NEW, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(AuthError) as caught:
        verify_access_token(forged, settings)
    assert caught.value.reason == "invalid"


def test_a_plain_secret_is_a_ring_of_one_key_with_a_derived_kid() -> None:
    single = Settings(jwt_secret=SecretStr(OLD))
    token = issue_access_token("u1", single)
    assert jwt.get_unverified_header(token)["kid"] == legacy_kid(OLD)
    # Moving that secret into a ring under the same derived kid keeps its tokens valid, and so
    # do tokens from before key ids (no kid header).
    moved = ring({"kid": legacy_kid(OLD), "secret": OLD})
    assert verify_access_token(token, moved).user_id == "u1"
    claims = {"sub": "u2", "typ": "access", "iat": int(time.time()), "exp": int(time.time()) + 60}
    assert verify_access_token(jwt.encode(claims, OLD, algorithm="HS256"), moved).user_id == "u2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "at least one key"),
        ('{"keys": []}', "at least one key"),
        ('{"keys": [{"kid": "a", "secret": "short"}]}', "at least 32"),
        ('{"keys": [{"kid": "a b", "secret": "' + OLD + '"}]}', "kid"),
        ('{"keys": [{"kid": "a", "secret": "' + OLD + '", "signFrom": "soon"}]}', "signFrom"),
        ('{"keys": [{"kid": "a", "secret": "' + OLD + '", "verifyUntil": true}]}', "verifyUntil"),
        (
            '{"keys": [{"kid": "a", "secret": "'
            + OLD
            + '"}, {"kid": "a", "secret": "'
            + NEW
            + '"}]}',
            "repeats",
        ),
    ],
)
def test_bad_rings_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_key_ring(text)
    with pytest.raises(ValidationError, match="HYPERSEND_JWT_KEYS") as caught:
        Settings(jwt_keys=SecretStr(text))
    assert OLD not in str(caught.value)  # a secret is never echoed


def test_exactly_one_jwt_source_is_required() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        Settings()
    with pytest.raises(ValidationError, match="exactly one"):
        Settings(
            jwt_secret=SecretStr(OLD),
            jwt_keys=SecretStr(json.dumps({"keys": [{"kid": "a", "secret": NEW}]})),
        )
