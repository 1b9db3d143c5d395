"""One exception type per failure the protocol names (docs/protocol.md, "Close codes" and the
REST error table), so callers branch on types rather than on numbers and strings."""

from __future__ import annotations

from typing import ClassVar


class HypersendError(Exception):
    """Base of every error this package raises."""


class ApiError(HypersendError):
    """A REST call answered with the protocol's error body."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class AuthError(ApiError):
    """A 401: the credentials or tokens are no good; log in again."""


class RateLimitedError(ApiError):
    """A 429; ``retry_after`` says when to try again."""


class SendError(HypersendError):
    """The server refused a ``send`` for a reason a retry cannot fix (``not_member``,
    ``message_too_large``, ``empty_message``, ``invalid_frame``...)."""

    def __init__(self, code: str, message: str, room_id: str, client_id: str) -> None:
        super().__init__(f"{code}: {message} (room {room_id}, client_id {client_id})")
        self.code = code
        self.message = message
        self.room_id = room_id
        self.client_id = client_id


class TransportError(HypersendError):
    """The server could not be reached (refused, reset, timed out, a failed handshake)."""


class ClientClosedError(HypersendError):
    """The client was closed (by its owner) while the call waited."""


class CloseError(HypersendError):
    """The server closed the socket. ``retryable`` says whether the client reconnects by itself;
    ``refresh`` whether it must refresh the access token first."""

    code: ClassVar[int] = 0
    retryable: ClassVar[bool] = True
    refresh: ClassVar[bool] = False

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"socket closed with {code}" + (f": {reason}" if reason else ""))
        self.close_code = code
        self.reason = reason


class NormalClosure(CloseError):
    code = 1000


class AbnormalClosure(CloseError):
    """No close frame at all (1006): the connection dropped."""

    code = 1006


class FrameTooLarge(CloseError):
    code = 1009
    retryable = False


class ServerError(CloseError):
    code = 1011


class ServerRestarting(CloseError):
    """1012: the server is draining; a ``reconnect`` frame said when to come back."""

    code = 1012


class ServerFull(CloseError):
    code = 1013


class ProtocolViolation(CloseError):
    """4400: the first frame was not an ``auth`` frame: a bug in the client, not retried."""

    code = 4400
    retryable = False


class Unauthorized(CloseError):
    """4401: the token was missing, expired or invalid; refresh and reconnect."""

    code = 4401
    refresh = True


class AuthTimeout(CloseError):
    code = 4408


class IdleTimeout(CloseError):
    code = 4410


class SlowConsumer(CloseError):
    code = 4413


class TooManyOpens(CloseError):
    """4429: too many sockets opened from this address per minute; reconnect with backoff."""

    code = 4429


class ResyncRequired(CloseError):
    code = 4503


_BY_CODE: dict[int, type[CloseError]] = {
    cls.code: cls
    for cls in (
        NormalClosure,
        AbnormalClosure,
        FrameTooLarge,
        ServerError,
        ServerRestarting,
        ServerFull,
        ProtocolViolation,
        Unauthorized,
        AuthTimeout,
        IdleTimeout,
        SlowConsumer,
        TooManyOpens,
        ResyncRequired,
    )
}


def close_error(code: int | None, reason: str = "") -> CloseError:
    """The error for a close code; codes the protocol does not name are retryable."""
    actual = 1006 if code is None else code
    return _BY_CODE.get(actual, CloseError)(actual, reason)
