"""REST routes of protocol v1 (mounted under /api/v1) and their error format.

Every error is `{"error": {"code": "<machine-readable>", "message": "<what to fix>"}}` with a
4xx status; validation errors add `details`. A room the caller is not a member of answers exactly
like a room that does not exist (404 `room_not_found`), so ids cannot be probed. State changes are
published to Redis only after MongoDB stored them; a failed publish is logged, never turned into
an error, because clients recover it from history on resume.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    Security,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatserver import auth, events
from chatserver.bus import Bus
from chatserver.clientip import client_address, limit_key
from chatserver.config import Settings, trusted_networks
from chatserver.metrics import MESSAGES_RECEIVED, PASSWORD_HASHING_BUSY, RATE_LIMITED
from chatserver.models import (
    MANAGER_ROLES,
    Member,
    Room,
    RoomKind,
    User,
    message_text_error,
)
from chatserver.models import Message as ChatMessage  # starlette's Message is the ASGI one
from chatserver.store import UNAVAILABLE_ERRORS, NotMember, SeqContention, Store, UsernameTaken

log = logging.getLogger("chatserver.api")
T = TypeVar("T")

API_PREFIX: Final = "/api/v1"
MAX_GROUP_MEMBERS: Final = 256
MAX_PAGE: Final = 200
DEFAULT_PAGE: Final = 50
USERNAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{2,31}$"
USERNAME_PATTERN_ANY_CASE: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$"
CLIENT_ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
# Whitespace spelled out: Python's `\s` and JSON Schema's (ECMA-262) differ (U+001C-U+001F and
# U+0085 are whitespace only to Python, U+FEFF only to ECMA-262), so `\s` in a pattern would let
# the published schema and the server disagree. This is the union of both.
WHITESPACE: Final = (
    "\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# Reaction keys become MongoDB field names: no dots, dollars or whitespace. Literal characters
# only, so every regex engine reads the class alike; pydantic checks it with Rust's regex, where
# `$` is the end of the text (Python's `re` would also match before a final newline).
EMOJI_PATTERN: Final = f"^[^{WHITESPACE}.$]{{1,32}}$"
CACHE_CONTROL: Final = "private, no-store"


# -- errors -------------------------------------------------------------------------------------


class ApiError(Exception):
    """An HTTP error with a stable machine-readable code and a human-readable message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, listed in docs/protocol.md")
    message: str = Field(description="what went wrong and what to do")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="422 invalid_request: one entry per refused field"
    )


class ErrorResponse(BaseModel):
    """Every error: `{"error": {"code", "message"}}` (docs/protocol.md, "Errors")."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS: Final = {
    401: "`missing_token`, `expired_token`, `invalid_token` (a Bearer access token is needed), "
    "or on the auth calls `invalid_credentials` / `refresh_token_*`",
    403: "`forbidden`, `not_sender`: the caller's role does not allow it",
    404: "`room_not_found` (also when the caller is not a member), `message_not_found`, "
    "`member_not_found`",
    409: "a conflict: `username_taken`, `direct_room`, `message_deleted`, `use_leave`, "
    "`owner_role`",
    413: "`request_too_large` (body above the cap) or `message_too_large`",
    422: "`invalid_request` (a field is missing, of the wrong type or out of range; `details` "
    "lists them) or a semantic error (`empty_message`, `invalid_seq`, `invalid_direct_room`, "
    "`name_required`, `unknown_users`)",
    429: "`rate_limited`; `Retry-After` says when to retry",
    503: "`database_unavailable` or `try_again`; `Retry-After` says when to retry",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the error body."""
    return {
        status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


# Every /api/v1 call may answer these; authenticated ones add AUTHED, room calls IN_ROOM.
COMMON_ERRORS: Final = errors(413, 422, 503)
AUTHED: Final = errors(401, 429)
IN_ROOM: Final = {**AUTHED, **errors(404)}

router = APIRouter(prefix=API_PREFIX, responses=COMMON_ERRORS)
# Declares the scheme in the OpenAPI document; the header itself is read by current_user_id.
bearer_scheme = HTTPBearer(
    auto_error=False, description="an access token from /auth/register, /login or /refresh"
)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


def validation_message(errors: list[dict[str, Any]]) -> str:
    """'field: problem; other: problem' from pydantic/FastAPI validation errors."""
    return "; ".join(
        f"{_location(err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in errors
    )


_HTTP_CODES: Final = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers
        )

    async def invalid_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type")}
            for err in exc.errors()
        ]
        return JSONResponse(
            error_body("invalid_request", validation_message(errors), details=errors),
            status_code=422,
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 400:
            # FastAPI's answer to a body that is not JSON: a validation error like any other.
            return JSONResponse(
                error_body("invalid_request", f"body: {exc.detail}", details=[]),
                status_code=422,
                headers=headers,
            )
        if exc.status_code == 405:
            # Starlette names only the methods of the one route it tried: list every method
            # the API documents for the path (RFC 9110 15.5.6).
            methods = allowed_methods(request)
            if methods:
                headers["Allow"] = ", ".join(methods)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers)

    async def contention(_: Request, exc: Exception) -> Response:
        log.warning("seq contention room=%s", exc)
        return JSONResponse(
            error_body(
                "try_again", "too many concurrent senders in this room; nothing stored, retry"
            ),
            status_code=503,
            headers={"Cache-Control": CACHE_CONTROL, "Retry-After": "1"},
        )

    async def unexpected(_: Request, exc: Exception) -> Response:
        # Runs outside the API middlewares: set the no-store header here too.
        headers = {"Cache-Control": CACHE_CONTROL}
        if isinstance(exc, UNAVAILABLE_ERRORS):
            log.warning("database unavailable: %s", type(exc).__name__)
            return JSONResponse(
                error_body("database_unavailable", "the database is unreachable; retry shortly"),
                status_code=503,
                headers={**headers, "Retry-After": "1"},
            )
        log.error("unexpected error", exc_info=exc)
        return JSONResponse(
            error_body("internal_error", "unexpected server error"),
            status_code=500,
            headers=headers,
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(SeqContention, contention)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)


def allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for the request's path (empty: not in it)."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = []
        for template, operations in request.app.openapi().get("paths", {}).items():
            parts = re.split(r"\{[^/}]+\}", template)
            regex = re.compile("^" + "[^/]+".join(re.escape(part) for part in parts) + "$")
            table.append((regex, sorted(method.upper() for method in operations)))
        request.app.state.allowed_methods = table
    path = request.url.path
    return sorted({m for regex, methods in table if regex.match(path) for m in methods})


def room_not_found() -> ApiError:
    return ApiError(404, "room_not_found", "no such room, or you are not a member of it")


def message_not_found(seq: int) -> ApiError:
    return ApiError(404, "message_not_found", f"no message with seq {seq} in this room")


class ApiHeadersMiddleware:
    """For /api/v1: `Cache-Control: private, no-store` on every response (a CDN must never
    cache one user's data for another) and a request body cap checked before parsing."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                ]
                headers.append((b"cache-control", CACHE_CONTROL.encode()))
                message = {**message, "headers": headers}
            await send(message)

        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            response = JSONResponse(
                error_body(
                    "request_too_large",
                    f"request body of {length} bytes exceeds {self.max_body_bytes} bytes",
                ),
                status_code=413,
            )
            await response(scope, receive, send_no_store)
            return
        received = 0

        async def capped_receive() -> Message:
            # Bodies without a Content-Length (chunked) are capped while they are read.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, f"request body exceeds {self.max_body_bytes} bytes")
            return message

        await self.app(scope, capped_receive, send_no_store)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def max_body_bytes(settings: Settings) -> int:
    """Room for a maximal message after JSON escaping (up to 6 bytes per byte) plus fields."""
    return 6 * settings.max_message_bytes + 16_384


# -- dependencies -------------------------------------------------------------------------------


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_bus(request: Request) -> Bus:
    bus: Bus = request.app.state.bus
    return bus


def get_passwords(request: Request) -> auth.Passwords:
    passwords: auth.Passwords = request.app.state.passwords
    return passwords


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
BusDep = Annotated[Bus, Depends(get_bus)]
PasswordsDep = Annotated[auth.Passwords, Depends(get_passwords)]


def request_client(request: Request, settings: Settings) -> str:
    """The client's address (X-Forwarded-For only from a trusted proxy, chatserver.clientip)."""
    return client_address(
        request.client.host if request.client else None,
        request.headers.getlist("x-forwarded-for"),
        trusted_networks(settings.trusted_proxies),
    )


async def enforce_client_rate(request: Request, settings: Settings, bus: Bus, what: str) -> None:
    """The per-client-address limit of an unauthenticated call (register, login, refresh)."""
    key = limit_key(request_client(request, settings))
    await enforce_rate(bus, f"ip:{what}:{key}", settings.auth_ip_rate_limit_per_minute)


async def hashing(work: Awaitable[T]) -> T:
    """Await a password hash; 503 try_again when too many already wait (auth.Passwords)."""
    try:
        return await work
    except auth.HashingBusy as exc:
        PASSWORD_HASHING_BUSY.inc()
        raise ApiError(
            503,
            "try_again",
            "the server is busy checking passwords; retry shortly",
            headers={"Retry-After": "1"},
        ) from exc


async def enforce_rate(bus: Bus, key: str, limit: int | None = None) -> None:
    # Without Redis the bus decides with a per-process limit: never an outage for everyone.
    decision = await bus.check_rate(key, limit)
    if not decision.allowed:
        RATE_LIMITED.inc()
        retry_after = max(1, math.ceil(decision.retry_after))
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests; retry after {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )


async def current_user_id(
    request: Request,
    settings: SettingsDep,
    bus: BusDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> str:
    """The authenticated user (Bearer access token), after the per-user rate limit."""
    try:
        user_id = auth.decode_access_token(
            auth.bearer_token(request.headers.get("authorization")), settings
        )
    except auth.AuthError as exc:
        raise ApiError(
            401,
            f"{exc.reason}_token",
            exc.message,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from exc
    await enforce_rate(bus, user_id)
    return user_id


UserIdDep = Annotated[str, Depends(current_user_id)]
RoomIdPath = Annotated[str, Path(min_length=1, max_length=64)]
SeqPath = Annotated[int, Path(ge=1)]


async def require_member(store: Store, room_id: str, user_id: str) -> Member:
    member = await store.get_member(room_id, user_id)
    if member is None:
        raise room_not_found()
    return member


async def member_and_message(
    store: Store, room_id: str, seq: int, user_id: str
) -> tuple[Member, ChatMessage]:
    """The caller's membership and message `seq` of the room; 404 for either missing."""
    member = await require_member(store, room_id, user_id)
    message = await store.get_message(room_id, seq)
    if message is None:
        raise message_not_found(seq)
    return member, message


async def publish_room(
    bus: Bus, room_id: str, event: dict[str, Any], *, seq: int | None = None
) -> None:
    """Publish a stored change; Redis trouble is logged (the bus publishes a new message's
    ``seq`` later, see ``chatserver.bus``), never turned into an error of the request."""
    try:
        await bus.publish_room(room_id, event, seq=seq)
    except Exception as exc:
        log.warning("publish to room failed (clients resume from history): %s", type(exc).__name__)


async def publish_user(bus: Bus, user_id: str, event: dict[str, Any]) -> None:
    try:
        await bus.publish_user(user_id, event)
    except Exception as exc:
        log.warning("publish to user failed: %s", type(exc).__name__)


# -- request bodies -----------------------------------------------------------------------------


class Body(BaseModel):
    # Strict: a JSON `false`, `"2"` or `3.0` is no integer here, as on the WebSocket
    # (chatserver/wsprotocol.py).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, strict=True)


class RegisterBody(Body):
    # Any case: stored lower-case (the validator below).
    username: str = Field(min_length=3, max_length=32, pattern=USERNAME_PATTERN_ANY_CASE)
    password: str = Field(min_length=8, max_length=256)
    display_name: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        value = value.lower()
        if not re.match(USERNAME_PATTERN, value):
            raise ValueError(
                "3-32 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        return value


class LoginBody(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RefreshBody(Body):
    refresh_token: str = Field(min_length=1, max_length=512)


class CreateRoomBody(Body):
    kind: RoomKind
    name: str | None = Field(default=None, min_length=1, max_length=100)
    members: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_GROUP_MEMBERS
    )


class AddMemberBody(Body):
    user_id: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "member"] = "member"


class SetRoleBody(Body):
    role: Literal["admin", "member"]


class SendBody(Body):
    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    text: str


class EditBody(Body):
    text: str


class ReactionBody(Body):
    emoji: str = Field(pattern=EMOJI_PATTERN)


class ReadBody(Body):
    seq: int = Field(ge=0)


def check_text(text: str, settings: Settings) -> None:
    problem = message_text_error(text, settings.max_message_bytes)
    if problem == "message_too_large":
        raise ApiError(
            413,
            problem,
            f"message text is {len(text.encode('utf-8'))} bytes; "
            f"the limit is {settings.max_message_bytes} bytes (UTF-8)",
        )
    if problem is not None:
        raise ApiError(422, problem, "message text must not be empty or only whitespace")


# -- accounts -----------------------------------------------------------------------------------


@router.post("/auth/register", status_code=201, tags=["auth"], responses=errors(409, 429))
async def register(
    body: RegisterBody,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    bus: BusDep,
    passwords: PasswordsDep,
) -> dict[str, Any]:
    """Create an account; returns the user and a first token pair."""
    await enforce_client_rate(request, settings, bus, "register")
    password_hash = await hashing(passwords.hash(body.password))
    try:
        user = await store.create_user(
            body.username, body.display_name or body.username, password_hash
        )
    except UsernameTaken as exc:
        raise ApiError(409, "username_taken", f"username {body.username!r} is taken") from exc
    tokens = await auth.issue_tokens(store, settings, user.id)
    return {"user": user.to_wire(), **tokens.to_wire()}


@router.post("/auth/login", tags=["auth"], responses=errors(401, 429))
async def login(
    body: LoginBody,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    bus: BusDep,
    passwords: PasswordsDep,
) -> dict[str, Any]:
    """Exchange username and password for an access token and a refresh token."""
    username = body.username.lower()
    await enforce_client_rate(request, settings, bus, "login")
    # Per-username limit: password guessing is throttled across all processes.
    await enforce_rate(bus, f"login:{username}")
    found = await store.user_with_password_hash(username)
    user, password_hash = found if found is not None else (None, None)
    if not await hashing(passwords.verify(password_hash, body.password)) or user is None:
        raise ApiError(401, "invalid_credentials", "wrong username or password")
    tokens = await auth.issue_tokens(store, settings, user.id)
    return {"user": user.to_wire(), **tokens.to_wire()}


@router.post("/auth/refresh", tags=["auth"], responses=errors(401, 429))
async def refresh(
    body: RefreshBody, request: Request, store: StoreDep, settings: SettingsDep, bus: BusDep
) -> dict[str, Any]:
    """Rotate a refresh token: it becomes used and the next pair is returned. Presenting a used
    token again revokes every token of that login (it leaked)."""
    await enforce_client_rate(request, settings, bus, "refresh")
    try:
        tokens = await auth.rotate_refresh_token(store, settings, body.refresh_token)
    except auth.RefreshError as exc:
        if exc.revoked is not None:
            await close_sockets_of(bus, exc.revoked)
        raise ApiError(401, f"refresh_token_{exc.reason}", exc.message) from exc
    return tokens.to_wire()


async def close_sockets_of(bus: Bus, revoked: auth.RevokedFamily) -> None:
    """Tell every server to close the sockets of a revoked login (each checks MongoDB first).
    Without Redis they are not told: their sockets close when their access token expires."""
    await publish_user(bus, revoked.user_id, events.sessions_revoked(revoked.family_id))


@router.post("/auth/logout", status_code=204, tags=["auth"])
async def logout(
    body: RefreshBody, store: StoreDep, settings: SettingsDep, bus: BusDep
) -> Response:
    """Revoke the refresh token and its family and close the family's sockets on every
    server. Its access tokens still pass REST calls until they expire."""
    revoked = await auth.revoke_refresh_token(store, settings, body.refresh_token)
    if revoked is not None:
        await close_sockets_of(bus, revoked)
    return Response(status_code=204)


@router.get("/users/me", tags=["users"], responses=AUTHED)
async def me(user_id: UserIdDep, store: StoreDep) -> dict[str, Any]:
    user = await store.get_user(user_id)
    if user is None:
        raise ApiError(401, "invalid_token", "the account of this token no longer exists")
    return user.to_wire()


@router.get("/users", tags=["users"], responses=AUTHED)
async def search_users(
    user_id: UserIdDep,
    store: StoreDep,
    query: Annotated[str, Query(min_length=1, max_length=64)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> dict[str, Any]:
    """Users whose username starts with `query` or whose display name contains it."""
    users = await store.search_users(query.lower(), limit)
    return {"users": [u.to_wire() for u in users]}


# -- rooms --------------------------------------------------------------------------------------


def room_view(room: Room, member: Member) -> dict[str, Any]:
    """A room as its member sees it: the room plus their role and read position."""
    return {
        **room.to_wire(),
        "role": member.role,
        "last_read_seq": member.last_read_seq,
        "unread": max(0, room.last_seq - member.last_read_seq),
    }


async def members_view(store: Store, room_id: str) -> list[dict[str, Any]]:
    members = await store.members(room_id)
    users = {u.id: u for u in await store.users_by_ids(m.user_id for m in members)}
    return [_member_view(m, users.get(m.user_id)) for m in members]


def _member_view(member: Member, user: User | None) -> dict[str, Any]:
    return {
        **member.to_wire(),
        "username": user.username if user else None,
        "display_name": user.display_name if user else None,
    }


async def _existing_users(store: Store, user_ids: list[str]) -> None:
    found = {u.id for u in await store.users_by_ids(user_ids)}
    missing = [uid for uid in dict.fromkeys(user_ids) if uid not in found]
    if missing:
        raise ApiError(422, "unknown_users", f"no such users: {', '.join(missing)}")


@router.post(
    "/rooms",
    status_code=201,
    tags=["rooms"],
    responses={**AUTHED, 200: {"description": "the direct room of this pair existed already"}},
)
async def create_room(
    body: CreateRoomBody, user_id: UserIdDep, store: StoreDep, bus: BusDep, response: Response
) -> dict[str, Any]:
    """Create a group room (caller becomes owner), or get-or-create the direct room of a pair
    (201 when created, 200 when it existed)."""
    others = [uid for uid in dict.fromkeys(body.members) if uid != user_id]
    if body.kind == "direct":
        if len(others) != 1:
            raise ApiError(
                422, "invalid_direct_room", "a direct room needs exactly one other member"
            )
        if body.name is not None:
            raise ApiError(422, "invalid_direct_room", "direct rooms have no name")
        await _existing_users(store, others)
        room, created = await store.get_or_create_direct_room(user_id, others[0])
    else:
        if body.name is None or not body.name.strip():
            raise ApiError(422, "name_required", "a group room needs a name")
        await _existing_users(store, others)
        room = await store.create_group_room(user_id, body.name.strip(), others)
        created = True
    response.status_code = 201 if created else 200
    member = await store.get_member(room.id, user_id)
    assert member is not None
    if created:
        for uid in [user_id, *others]:
            await publish_user(bus, uid, events.room_added(room))
    return {**room_view(room, member), "members": await members_view(store, room.id)}


@router.get("/rooms", tags=["rooms"], responses=AUTHED)
async def list_rooms(user_id: UserIdDep, store: StoreDep) -> dict[str, Any]:
    """The caller's rooms, newest activity first, each with its last message."""
    rooms = await store.rooms_for_user(user_id)
    return {"rooms": [room_view(room, member) for room, member in rooms]}


@router.get("/rooms/{room_id}", tags=["rooms"], responses=IN_ROOM)
async def get_room(room_id: RoomIdPath, user_id: UserIdDep, store: StoreDep) -> dict[str, Any]:
    member = await require_member(store, room_id, user_id)
    room = await store.get_room(room_id)
    if room is None:
        raise room_not_found()
    return {**room_view(room, member), "members": await members_view(store, room_id)}


@router.get("/rooms/{room_id}/members", tags=["rooms"], responses=IN_ROOM)
async def list_members(room_id: RoomIdPath, user_id: UserIdDep, store: StoreDep) -> dict[str, Any]:
    await require_member(store, room_id, user_id)
    return {"members": await members_view(store, room_id)}


async def _group_room(store: Store, room_id: str) -> Room:
    room = await store.get_room(room_id)
    if room is None:
        raise room_not_found()
    if room.kind == "direct":
        raise ApiError(409, "direct_room", "the members of a direct room cannot change")
    return room


@router.post(
    "/rooms/{room_id}/members",
    status_code=201,
    tags=["rooms"],
    responses={**IN_ROOM, **errors(403, 409), 200: {"description": "already a member"}},
)
async def add_member(
    room_id: RoomIdPath,
    body: AddMemberBody,
    user_id: UserIdDep,
    store: StoreDep,
    bus: BusDep,
    response: Response,
) -> dict[str, Any]:
    """Add a user (owner/admin; only the owner adds admins). 201 added, 200 already a member."""
    caller = await require_member(store, room_id, user_id)
    room = await _group_room(store, room_id)
    if caller.role not in MANAGER_ROLES:
        raise ApiError(403, "forbidden", "only the owner or an admin can add members")
    if body.role == "admin" and caller.role != "owner":
        raise ApiError(403, "forbidden", "only the owner can add admins")
    await _existing_users(store, [body.user_id])
    added = await store.add_member(room_id, body.user_id, body.role)
    member = await store.get_member(room_id, body.user_id)
    assert member is not None
    response.status_code = 201 if added else 200
    if added:
        await publish_user(bus, body.user_id, events.room_added(room))
    return member.to_wire()


@router.patch(
    "/rooms/{room_id}/members/{member_id}",
    tags=["rooms"],
    responses={**IN_ROOM, **errors(403, 409)},
)
async def set_role(
    room_id: RoomIdPath,
    member_id: Annotated[str, Path(min_length=1, max_length=64)],
    body: SetRoleBody,
    user_id: UserIdDep,
    store: StoreDep,
) -> dict[str, Any]:
    """Make a member an admin or a plain member (owner only)."""
    caller = await require_member(store, room_id, user_id)
    await _group_room(store, room_id)
    if caller.role != "owner":
        raise ApiError(403, "forbidden", "only the owner can change roles")
    if member_id == user_id:
        raise ApiError(409, "owner_role", "the owner's role cannot be changed")
    member = await store.set_role(room_id, member_id, body.role)
    if member is None:
        raise ApiError(404, "member_not_found", "that user is not a member of this room")
    return member.to_wire()


@router.delete(
    "/rooms/{room_id}/members/{member_id}",
    status_code=204,
    tags=["rooms"],
    responses={**IN_ROOM, **errors(403, 409)},
)
async def remove_member(
    room_id: RoomIdPath,
    member_id: Annotated[str, Path(min_length=1, max_length=64)],
    user_id: UserIdDep,
    store: StoreDep,
    bus: BusDep,
) -> Response:
    """Remove a member: the owner removes anyone, an admin removes plain members."""
    caller = await require_member(store, room_id, user_id)
    await _group_room(store, room_id)
    if member_id == user_id:
        raise ApiError(
            409, "use_leave", f"to leave a room use POST {API_PREFIX}/rooms/{{id}}/leave"
        )
    target = await store.get_member(room_id, member_id)
    if target is None:
        raise ApiError(404, "member_not_found", "that user is not a member of this room")
    allowed = caller.role == "owner" or (caller.role == "admin" and target.role == "member")
    if not allowed:
        raise ApiError(403, "forbidden", f"a {caller.role} cannot remove a {target.role}")
    if await store.remove_member(room_id, member_id):
        await publish_user(bus, member_id, events.room_removed(room_id))
    return Response(status_code=204)


@router.post("/rooms/{room_id}/leave", status_code=204, tags=["rooms"], responses=IN_ROOM)
async def leave_room(
    room_id: RoomIdPath, user_id: UserIdDep, store: StoreDep, bus: BusDep
) -> Response:
    """Leave a group room. An owner who leaves hands ownership to the longest-standing admin,
    or else to the longest-standing member."""
    caller = await require_member(store, room_id, user_id)
    await _group_room(store, room_id)
    await store.remove_member(room_id, user_id)
    if caller.role == "owner":
        remaining = await store.members(room_id)
        heir = next((m for m in remaining if m.role == "admin"), None) or next(
            iter(remaining), None
        )
        if heir is not None:
            await store.set_role(room_id, heir.user_id, "owner")
    await publish_user(bus, user_id, events.room_removed(room_id))
    return Response(status_code=204)


# -- messages -----------------------------------------------------------------------------------


@router.post(
    "/rooms/{room_id}/messages",
    status_code=201,
    tags=["messages"],
    responses={**IN_ROOM, 200: {"description": "this client_id was stored before (a retry)"}},
)
async def send_message(
    room_id: RoomIdPath,
    body: SendBody,
    user_id: UserIdDep,
    store: StoreDep,
    bus: BusDep,
    settings: SettingsDep,
    response: Response,
) -> dict[str, Any]:
    """Store a message and return it with its seq: 201 when stored now, 200 when this
    `client_id` was already stored (an idempotent retry)."""
    check_text(body.text, settings)

    async def publish(stored: ChatMessage) -> None:
        # Also on a retry: the first attempt may have stored it and died before publishing;
        # receivers drop the duplicate by seq.
        await publish_room(bus, room_id, events.message(stored), seq=stored.seq)

    try:
        # Membership is read by the group commit, one find for the whole batch (issue #16).
        message, created = await store.append_message(
            room_id, user_id, body.client_id, body.text, on_stored=publish, check_member=True
        )
    except NotMember:
        raise room_not_found() from None
    response.status_code = 201 if created else 200
    if created:
        MESSAGES_RECEIVED.inc()
    return message.to_wire()


@router.get("/rooms/{room_id}/messages", tags=["messages"], responses=IN_ROOM)
async def history(
    room_id: RoomIdPath,
    user_id: UserIdDep,
    store: StoreDep,
    after_seq: Annotated[int | None, Query(ge=0)] = None,
    before_seq: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> dict[str, Any]:
    """Messages in ascending seq: after `after_seq` (catching up), before `before_seq` (paging
    back), or the newest `limit`. `has_more` says whether the page was cut."""
    await require_member(store, room_id, user_id)
    if after_seq is not None and before_seq is not None:
        raise ApiError(422, "invalid_request", "use after_seq or before_seq, not both")
    if after_seq is not None:
        page = await store.messages_after(room_id, after_seq, limit + 1)
        has_more = len(page) > limit
        page = page[:limit]
    else:
        page = await store.messages_before(room_id, before_seq, limit + 1)
        has_more = len(page) > limit
        page = page[-limit:]
    return {"messages": [m.to_wire() for m in page], "has_more": has_more}


@router.patch(
    "/rooms/{room_id}/messages/{seq}", tags=["messages"], responses={**IN_ROOM, **errors(403, 409)}
)
async def edit_message(
    room_id: RoomIdPath,
    seq: SeqPath,
    body: EditBody,
    user_id: UserIdDep,
    store: StoreDep,
    bus: BusDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """Edit your own message; the previous text is kept in `edits`."""
    _, current = await member_and_message(store, room_id, seq, user_id)
    if current.sender_id != user_id:
        raise ApiError(403, "not_sender", "only the sender can edit a message")
    if current.deleted:
        raise ApiError(409, "message_deleted", "a deleted message cannot be edited")
    check_text(body.text, settings)
    edited = await store.edit_message(room_id, seq, body.text)
    if edited is None:
        raise ApiError(409, "message_deleted", "a deleted message cannot be edited")
    await publish_room(bus, room_id, events.message_edited(edited))
    return edited.to_wire()


@router.delete(
    "/rooms/{room_id}/messages/{seq}", tags=["messages"], responses={**IN_ROOM, **errors(403)}
)
async def delete_message(
    room_id: RoomIdPath, seq: SeqPath, user_id: UserIdDep, store: StoreDep, bus: BusDep
) -> dict[str, Any]:
    """Soft-delete a message (its sender, or the room's owner/admins). Idempotent."""
    member, current = await member_and_message(store, room_id, seq, user_id)
    if current.sender_id != user_id and member.role not in MANAGER_ROLES:
        raise ApiError(403, "forbidden", "only the sender or a room admin can delete a message")
    if current.deleted:
        return current.to_wire()
    deleted = await store.delete_message(room_id, seq)
    if deleted is None:
        raise message_not_found(seq)
    await publish_room(bus, room_id, events.message_deleted(deleted))
    return deleted.to_wire()


@router.post(
    "/rooms/{room_id}/messages/{seq}/reactions",
    tags=["messages"],
    responses={**IN_ROOM, **errors(409)},
)
async def add_reaction(
    room_id: RoomIdPath,
    seq: SeqPath,
    body: ReactionBody,
    user_id: UserIdDep,
    store: StoreDep,
    bus: BusDep,
) -> dict[str, Any]:
    """React to a message with an emoji (adding the same reaction twice is a no-op)."""
    _, current = await member_and_message(store, room_id, seq, user_id)
    if current.deleted:
        raise ApiError(409, "message_deleted", "a deleted message cannot get reactions")
    updated = await store.add_reaction(room_id, seq, body.emoji, user_id)
    if updated is None:
        raise message_not_found(seq)
    await publish_room(bus, room_id, events.reaction(updated))
    return updated.to_wire()


@router.delete(
    "/rooms/{room_id}/messages/{seq}/reactions/{emoji}", tags=["messages"], responses=IN_ROOM
)
async def remove_reaction(
    room_id: RoomIdPath,
    seq: SeqPath,
    emoji: Annotated[str, Path(pattern=EMOJI_PATTERN)],
    user_id: UserIdDep,
    store: StoreDep,
    bus: BusDep,
) -> dict[str, Any]:
    """Withdraw your reaction."""
    await require_member(store, room_id, user_id)
    updated = await store.remove_reaction(room_id, seq, emoji, user_id)
    if updated is None:
        raise message_not_found(seq)
    await publish_room(bus, room_id, events.reaction(updated))
    return updated.to_wire()


@router.post("/rooms/{room_id}/read", status_code=204, tags=["messages"], responses=IN_ROOM)
async def mark_read(
    room_id: RoomIdPath, body: ReadBody, user_id: UserIdDep, store: StoreDep, bus: BusDep
) -> Response:
    """Record that the caller read the room up to `seq` (never moves backwards)."""
    await require_member(store, room_id, user_id)
    room = await store.get_room(room_id)
    if room is None:
        raise room_not_found()
    if body.seq > room.last_seq:
        raise ApiError(
            422, "invalid_seq", f"seq {body.seq} is beyond the room's last seq {room.last_seq}"
        )
    await store.mark_read(room_id, user_id, body.seq)
    await publish_room(bus, room_id, events.read(room_id, user_id, body.seq))
    return Response(status_code=204)
