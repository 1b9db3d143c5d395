"""The chat server's JWT key ring and its rotation (pure).

The ring lives in the `<name>-jwt` Secret (key `jwt-keys`) and reaches the chat pods as
HYPERSEND_JWT_KEYS; its format is the chat server's (chatserver/jwtkeys.py). A rotation
(`kubectl hypersend rotate-jwt`, which sets ROTATE_JWT_ANNOTATION on the CR) adds a key that
signs only from `now + chat.jwtKeyActivationDelaySeconds`: the changed Secret rolls the pods
(deployment.config_hash) and every pod knows the new key before any pod signs with it. The keys
before it verify until the new key has signed for one access-token lifetime (plus a minute), so
nobody is logged out. Keys past their `verifyUntil` are dropped at the next rotation, not on their
own: dropping them would roll the pods again for nothing (the servers ignore them by time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from hypersend_operator.api import EnvVar

# The chat server's default access-token lifetime (chatserver/config.py,
# access_token_ttl_seconds); chat.env may set another (HYPERSEND_ACCESS_TOKEN_TTL_SECONDS).
DEFAULT_ACCESS_TOKEN_TTL_SECONDS: Final = 900
ACCESS_TOKEN_TTL_ENV: Final = "HYPERSEND_ACCESS_TOKEN_TTL_SECONDS"
# Clock skew between nodes, and a token issued the second before the switch.
RETIRE_LEEWAY_SECONDS: Final = 60
# The chat server accepts at most this many keys (chatserver/jwtkeys.py, MAX_KEYS).
MAX_KEYS: Final = 16


@dataclass(frozen=True)
class RingKey:
    kid: str
    secret: str = field(repr=False)
    sign_from: int = 0
    verify_until: int | None = None


@dataclass(frozen=True)
class JwtRing:
    keys: tuple[RingKey, ...]
    # The ROTATE_JWT_ANNOTATION value last acted on: a rotation happens once per new value.
    rotation: str | None = None


def legacy_kid(secret: str) -> str:
    """The id of a key from before rings (chatserver/jwtkeys.py derives the same)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def new_ring(kid: str, secret: str, rotation: str | None = None) -> JwtRing:
    return JwtRing((RingKey(kid, secret),), rotation)


def legacy_ring(secret: str) -> JwtRing:
    """The ring of a Secret written before rings (key `jwt-secret`): its tokens stay valid."""
    return new_ring(legacy_kid(secret), secret)


def parse_ring(text: str) -> JwtRing:
    """The ring as stored; ValueError if it is not one (never echoing a secret)."""
    try:
        document = json.loads(text)
        keys = tuple(
            RingKey(
                kid=str(k["kid"]),
                secret=str(k["secret"]),
                sign_from=int(k.get("signFrom") or 0),
                verify_until=None if k.get("verifyUntil") is None else int(k["verifyUntil"]),
            )
            for k in document["keys"]
        )
        rotation = document.get("rotation")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"the JWT key ring is malformed ({type(exc).__name__})") from None
    if not keys:
        raise ValueError("the JWT key ring has no key")
    return JwtRing(keys, rotation if isinstance(rotation, str) else None)


def ring_json(ring: JwtRing) -> str:
    """Canonical JSON: the same ring always gives the same bytes (no spurious pod roll)."""
    document: dict[str, Any] = {
        "keys": [
            {
                "kid": k.kid,
                "secret": k.secret,
                "signFrom": k.sign_from,
                "verifyUntil": k.verify_until,
            }
            for k in ring.keys
        ]
    }
    if ring.rotation is not None:
        document["rotation"] = ring.rotation
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def access_token_lifetime(env: Sequence[EnvVar]) -> int:
    """The chat pods' access-token lifetime: chat.env's value if it sets one, else the default."""
    for var in env:
        if var.name == ACCESS_TOKEN_TTL_ENV:
            try:
                return max(1, int(var.value))
            except ValueError:
                break  # the chat server refuses it at start; the default is the best guess
    return DEFAULT_ACCESS_TOKEN_TTL_SECONDS


def rotate(
    ring: JwtRing,
    *,
    request: str,
    now: int,
    activation_delay: int,
    token_lifetime: int,
    new_key: tuple[str, str],
) -> JwtRing:
    """The ring after acting on rotation request `request` (unchanged if already acted on).

    `new_key` (kid, secret) signs from `now + activation_delay`; each older key verifies until
    that key has signed for `token_lifetime` plus RETIRE_LEEWAY_SECONDS (or its earlier
    verifyUntil). Keys already retired at `now` are dropped.
    """
    if request == ring.rotation:
        return ring
    sign_from = now + activation_delay
    retire_at = sign_from + token_lifetime + RETIRE_LEEWAY_SECONDS
    kept = [
        replace(k, verify_until=retire_at if k.verify_until is None else k.verify_until)
        for k in ring.keys
        if k.verify_until is None or k.verify_until > now
    ]
    # Within one token lifetime, 15 rotations: the oldest keys go (their tokens are refused).
    kept = kept[-(MAX_KEYS - 1) :]
    kid, secret = new_key
    return JwtRing((*kept, RingKey(kid, secret, sign_from=sign_from)), rotation=request)
