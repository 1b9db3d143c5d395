"""The JWT key ring: which key signs new access tokens and which keys verify, decided by time.

A ring (HYPERSEND_JWT_KEYS, written by the operator's builders/jwtring.py) is JSON::

    {"keys": [{"kid": "3f2a...", "secret": "...", "signFrom": 1764670000, "verifyUntil": null}]}

A rotation adds a key whose ``signFrom`` lies in the future and gives the keys before it a
``verifyUntil``: every pod learns the new key (the pods roll) before any pod signs with it, and
tokens signed with the old key stay valid until they have expired (docs/configuration.md, "JWT
keys"). Times are unix seconds. A plain HYPERSEND_JWT_SECRET is a ring of one key whose id is
derived from the secret (:func:`legacy_kid`), so tokens survive the move to a ring.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

MIN_SECRET_LENGTH: Final = 32
MAX_KEYS: Final = 16
KID_PATTERN: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True, slots=True)
class JwtKey:
    kid: str
    secret: str = field(repr=False)
    sign_from: float = 0.0
    verify_until: float | None = None

    def verifies_at(self, now: float) -> bool:
        return self.verify_until is None or now < self.verify_until


@dataclass(frozen=True, slots=True)
class KeyRing:
    keys: tuple[JwtKey, ...]

    def signing_key(self, now: float) -> JwtKey:
        """The newest key whose signing time has come and that still verifies.

        Should none qualify (a ring whose keys all start later, or all retired), the earliest
        key still verifying signs, else the newest: a token nobody accepts is worse.
        """
        live = [k for k in self.keys if k.verifies_at(now)]
        started = [k for k in live if k.sign_from <= now]
        if started:
            # max() keeps the first of equals; the later entry of a tie is the newer key.
            return max(reversed(started), key=lambda k: k.sign_from)
        if live:
            return min(live, key=lambda k: k.sign_from)
        return max(reversed(self.keys), key=lambda k: k.sign_from)

    def verifying_keys(self, kid: str | None, now: float) -> list[JwtKey]:
        """The keys a token with header ``kid`` may be checked against (all unretired keys for a
        token without one: those were signed before tokens carried a key id)."""
        return [k for k in self.keys if k.verifies_at(now) and (kid is None or k.kid == kid)]


def legacy_kid(secret: str) -> str:
    """The key id of a plain secret (the operator derives the same: builders/jwtring.py)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def single_key_ring(secret: str) -> KeyRing:
    return KeyRing((JwtKey(kid=legacy_kid(secret), secret=secret),))


def _number(entry: dict[str, Any], name: str, index: int, optional: bool) -> float | None:
    value = entry.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"keys[{index}].{name} must be a non-negative number of unix seconds")
    return float(value)


def parse_key_ring(text: str) -> KeyRing:
    """A ring from its JSON; ValueError says what is wrong (never echoing a secret)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the JWT key ring is not JSON ({exc.msg})") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError('the JWT key ring must be {"keys": [...]} with at least one key')
    if len(keys) > MAX_KEYS:
        raise ValueError(f"the JWT key ring holds {len(keys)} keys; at most {MAX_KEYS}")
    parsed: list[JwtKey] = []
    for index, entry in enumerate(keys):
        if not isinstance(entry, dict):
            raise ValueError(f"keys[{index}] must be an object")
        kid, secret = entry.get("kid"), entry.get("secret")
        if not isinstance(kid, str) or not KID_PATTERN.match(kid):
            raise ValueError(f"keys[{index}].kid must be 1-64 characters of [A-Za-z0-9._-]")
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"keys[{index}].secret must be at least {MIN_SECRET_LENGTH} characters"
            )
        sign_from = _number(entry, "signFrom", index, optional=True) or 0.0
        verify_until = _number(entry, "verifyUntil", index, optional=True)
        parsed.append(JwtKey(kid, secret, sign_from, verify_until))
    kids = [k.kid for k in parsed]
    if len(set(kids)) != len(kids):
        raise ValueError("the JWT key ring repeats a kid")
    return KeyRing(tuple(parsed))
