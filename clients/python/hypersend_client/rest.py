"""The REST half of protocol v1 (docs/protocol.md, "REST"): the only module of this package that
imports ``httpx``. It owns the tokens: it refreshes the access token before it expires, one
refresh at a time (refresh tokens are single-use: two concurrent refreshes with the same token
would look like a stolen token, and the server would revoke the whole login)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from hypersend_client.errors import (
    ApiError,
    AuthError,
    HypersendError,
    RateLimitedError,
    TransportError,
)
from hypersend_client.models import JSON, Member, Message, Page, Room, Tokens, User

API = "/api/v1"


def new_client_id() -> str:
    """A fresh ``client_id`` (a UUID is valid: 1-64 of ``A-Z a-z 0-9 _ . : -``)."""
    return uuid.uuid4().hex


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    code, message = "http_error", response.text[:200]
    try:
        error = response.json().get("error") or {}
        code, message = str(error.get("code", code)), str(error.get("message", message))
    except ValueError:
        pass
    retry_after_header = response.headers.get("retry-after")
    retry_after = float(retry_after_header) if retry_after_header else None
    status = response.status_code
    cls = {401: AuthError, 429: RateLimitedError}.get(status, ApiError)
    raise cls(status, code, message, retry_after)


class RestClient:
    """REST calls of one user. ``base_url`` is the server root (``http://host:port``)."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, trust_env: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._trust_env = trust_env
        # Made on first use: a load test holds thousands of clients that never call REST, and
        # each httpx client builds its own TLS context.
        self._http: httpx.AsyncClient | None = None
        self._tokens: Tokens | None = None
        # Called with every new pair (sign-in, refresh), e.g. to persist them.
        self.on_tokens: Callable[[Tokens], None] | None = None
        self.user: User | None = None
        self._refresh_lock = asyncio.Lock()

    @property
    def tokens(self) -> Tokens | None:
        return self._tokens

    @tokens.setter
    def tokens(self, tokens: Tokens | None) -> None:
        self._tokens = tokens
        if tokens is not None and self.on_tokens is not None:
            self.on_tokens(tokens)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.base_url + API, timeout=self._timeout, trust_env=self._trust_env
            )
        return self._http

    # accounts

    async def register(self, username: str, password: str, display_name: str | None = None) -> User:
        body: JSON = {"username": username, "password": password}
        if display_name is not None:
            body["display_name"] = display_name
        return self._signed_in(await self._call("POST", "/auth/register", body, auth=False))

    async def login(self, username: str, password: str) -> User:
        body = {"username": username, "password": password}
        return self._signed_in(await self._call("POST", "/auth/login", body, auth=False))

    def use_tokens(self, access_token: str, refresh_token: str, expires_in: float) -> None:
        """Adopt tokens obtained elsewhere (e.g. minted by a load test)."""
        self.tokens = Tokens(access_token, refresh_token, time.monotonic() + expires_in, expires_in)

    def _signed_in(self, body: JSON) -> User:
        self.tokens = Tokens.from_json(body)
        self.user = User.from_json(body["user"])
        return self.user

    async def refresh(self) -> Tokens:
        """Trade the refresh token for a new pair now (one refresh at a time)."""
        used = self.tokens
        async with self._refresh_lock:
            if self.tokens is not used and self.tokens is not None:
                return self.tokens  # someone else refreshed while we waited
            if used is None:
                raise HypersendError("not signed in")
            body = await self._call(
                "POST", "/auth/refresh", {"refresh_token": used.refresh_token}, auth=False
            )
            self.tokens = Tokens.from_json(body)
            return self.tokens

    async def access_token(self) -> str:
        """A valid access token, refreshed first when it is due."""
        tokens = self.tokens
        if tokens is None:
            raise HypersendError("not signed in: register, login or use_tokens first")
        if time.monotonic() >= tokens.refresh_at():
            tokens = await self.refresh()
        return tokens.access_token

    async def logout(self) -> None:
        if self.tokens is not None:
            await self._call(
                "POST", "/auth/logout", {"refresh_token": self.tokens.refresh_token}, auth=False
            )
            self.tokens = None

    async def me(self) -> User:
        return User.from_json(await self._call("GET", "/users/me"))

    async def search_users(self, query: str, limit: int = 20) -> list[User]:
        body = await self._call("GET", "/users", params={"query": query, "limit": limit})
        return [User.from_json(u) for u in body["users"]]

    # rooms

    async def create_group(self, name: str, members: list[str]) -> Room:
        body = {"kind": "group", "name": name, "members": members}
        return Room.from_json(await self._call("POST", "/rooms", body))

    async def create_direct(self, other_user_id: str) -> Room:
        body = {"kind": "direct", "members": [other_user_id]}
        return Room.from_json(await self._call("POST", "/rooms", body))

    async def rooms(self) -> list[Room]:
        return [Room.from_json(r) for r in (await self._call("GET", "/rooms"))["rooms"]]

    async def room(self, room_id: str) -> Room:
        return Room.from_json(await self._call("GET", f"/rooms/{room_id}"))

    async def members(self, room_id: str) -> list[Member]:
        body = await self._call("GET", f"/rooms/{room_id}/members")
        return [Member.from_json(m) for m in body["members"]]

    async def add_member(self, room_id: str, user_id: str, role: str = "member") -> Member:
        body = {"user_id": user_id, "role": role}
        return Member.from_json(await self._call("POST", f"/rooms/{room_id}/members", body))

    async def remove_member(self, room_id: str, user_id: str) -> None:
        await self._call("DELETE", f"/rooms/{room_id}/members/{user_id}")

    async def leave(self, room_id: str) -> None:
        await self._call("POST", f"/rooms/{room_id}/leave")

    # messages

    async def history(
        self,
        room_id: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> Page:
        params: dict[str, Any] = {"limit": limit}
        if after_seq is not None:
            params["after_seq"] = after_seq
        if before_seq is not None:
            params["before_seq"] = before_seq
        body = await self._call("GET", f"/rooms/{room_id}/messages", params=params)
        return Page([Message.from_json(m) for m in body["messages"]], bool(body["has_more"]))

    async def all_messages(self, room_id: str, after_seq: int = 0) -> list[Message]:
        """Every stored message after ``after_seq``, ascending (pages of 200)."""
        out: list[Message] = []
        while True:
            page = await self.history(room_id, after_seq=after_seq, limit=200)
            out.extend(page.messages)
            if not page.has_more or not page.messages:
                return out
            after_seq = page.messages[-1].seq

    async def post_message(self, room_id: str, text: str, client_id: str | None = None) -> Message:
        body = {"client_id": client_id or new_client_id(), "text": text}
        return Message.from_json(await self._call("POST", f"/rooms/{room_id}/messages", body))

    async def edit_message(self, room_id: str, seq: int, text: str) -> Message:
        body = {"text": text}
        return Message.from_json(
            await self._call("PATCH", f"/rooms/{room_id}/messages/{seq}", body)
        )

    async def delete_message(self, room_id: str, seq: int) -> Message:
        return Message.from_json(await self._call("DELETE", f"/rooms/{room_id}/messages/{seq}"))

    async def react(self, room_id: str, seq: int, emoji: str) -> Message:
        path = f"/rooms/{room_id}/messages/{seq}/reactions"
        return Message.from_json(await self._call("POST", path, {"emoji": emoji}))

    async def mark_read(self, room_id: str, seq: int) -> None:
        await self._call("POST", f"/rooms/{room_id}/read", {"seq": seq})

    # the wire

    async def _call(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        params: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> JSON:
        response = await self._send(method, path, body, params, auth)
        if auth and response.status_code == 401 and _code(response) == "expired_token":
            # The token expired between our check and the server's (clock skew, a slow call):
            # refresh once and repeat.
            await self.refresh()
            response = await self._send(method, path, body, params, auth)
        _raise_for(response)
        if response.status_code == 204 or not response.content:
            return {}
        result = response.json()
        if not isinstance(result, dict):
            raise HypersendError(f"{method} {path}: the answer is not an object")
        return result

    async def _send(
        self, method: str, path: str, body: JSON | None, params: dict[str, Any] | None, auth: bool
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {await self.access_token()}"} if auth else {}
        try:
            return await self._client().request(
                method, path, json=body, params=params, headers=headers
            )
        except httpx.TransportError as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc


def _code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None
