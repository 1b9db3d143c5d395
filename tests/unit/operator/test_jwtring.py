"""The operator's JWT key ring and its rotation (pure), and that the chat server reads it."""

from __future__ import annotations

import pytest
from hypersend_operator.api import EnvVar
from hypersend_operator.builders import jwtring

from chatserver import jwtkeys

pytestmark = pytest.mark.unit

A, B, C = "a" * 43, "b" * 43, "c" * 43


def rotate(ring: jwtring.JwtRing, request: str, now: int, key: tuple[str, str]) -> jwtring.JwtRing:
    return jwtring.rotate(
        ring, request=request, now=now, activation_delay=600, token_lifetime=900, new_key=key
    )


def test_a_rotation_adds_a_future_key_and_gives_the_old_one_a_retirement() -> None:
    ring = jwtring.new_ring("k1", A)
    rotated = rotate(ring, "r1", 1_000, ("k2", B))
    assert rotated.rotation == "r1"
    old, new = rotated.keys
    assert (new.kid, new.sign_from, new.verify_until) == ("k2", 1_600, None)
    # The old key verifies until the new one has signed for a whole token lifetime (+ leeway).
    assert old.verify_until == 1_600 + 900 + jwtring.RETIRE_LEEWAY_SECONDS

    # The same request again changes nothing (every pass sees the annotation).
    assert rotate(rotated, "r1", 5_000, ("k3", C)) == rotated


def test_the_next_rotation_drops_retired_keys_and_keeps_earlier_retirements() -> None:
    first = rotate(jwtring.new_ring("k1", A), "r1", 1_000, ("k2", B))
    retire_k1 = first.keys[0].verify_until
    assert retire_k1 is not None
    # Before k1 retires: all three stay, k1 keeps its own (earlier) retirement.
    soon = rotate(first, "r2", 1_200, ("k3", C))
    assert [k.kid for k in soon.keys] == ["k1", "k2", "k3"]
    assert soon.keys[0].verify_until == retire_k1
    assert soon.keys[1].verify_until == 1_800 + 900 + jwtring.RETIRE_LEEWAY_SECONDS
    # After: k1 is gone.
    later = rotate(first, "r2", retire_k1 + 1, ("k3", C))
    assert [k.kid for k in later.keys] == ["k2", "k3"]


def test_the_ring_never_exceeds_what_the_chat_server_accepts() -> None:
    ring = jwtring.new_ring("k0", A)
    for n in range(1, 40):
        ring = rotate(ring, f"r{n}", 1_000 + n, (f"k{n}", A))
    assert len(ring.keys) == jwtring.MAX_KEYS == jwtkeys.MAX_KEYS
    assert ring.keys[-1].kid == "k39"


def test_the_json_round_trips_and_is_canonical() -> None:
    ring = rotate(jwtring.new_ring("k1", A), "r1", 1_000, ("k2", B))
    text = jwtring.ring_json(ring)
    assert jwtring.parse_ring(text) == ring
    assert jwtring.ring_json(jwtring.parse_ring(text)) == text
    with pytest.raises(ValueError, match="malformed") as caught:
        jwtring.parse_ring(text.replace('"secret"', '"secrets"'))
    assert A not in str(caught.value)


def test_the_chat_server_reads_the_operators_ring_and_signs_as_planned() -> None:
    ring = rotate(jwtring.new_ring("k1", A), "r1", 1_000, ("k2", B))
    served = jwtkeys.parse_key_ring(jwtring.ring_json(ring))
    assert served.signing_key(1_599).kid == "k1"
    assert served.signing_key(1_600).kid == "k2"
    assert [k.kid for k in served.verifying_keys(None, 2_000)] == ["k1", "k2"]
    assert [k.kid for k in served.verifying_keys(None, 3_000)] == ["k2"]


def test_a_pre_ring_secret_keeps_the_key_id_the_chat_server_gives_it() -> None:
    assert jwtring.legacy_ring(A).keys[0].kid == jwtkeys.legacy_kid(A)


def test_the_token_lifetime_comes_from_chat_env_when_set() -> None:
    assert jwtring.access_token_lifetime([]) == jwtring.DEFAULT_ACCESS_TOKEN_TTL_SECONDS
    env = [EnvVar(name="HYPERSEND_ACCESS_TOKEN_TTL_SECONDS", value="3600")]
    assert jwtring.access_token_lifetime(env) == 3600
    bad = [EnvVar(name="HYPERSEND_ACCESS_TOKEN_TTL_SECONDS", value="soon")]
    assert jwtring.access_token_lifetime(bad) == jwtring.DEFAULT_ACCESS_TOKEN_TTL_SECONDS


def test_the_default_lifetime_is_the_chat_servers() -> None:
    from chatserver.config import Settings

    field = Settings.model_fields["access_token_ttl_seconds"]
    assert field.default == jwtring.DEFAULT_ACCESS_TOKEN_TTL_SECONDS
