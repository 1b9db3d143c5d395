"""hypersend-client: an asyncio client for Hypersend protocol v1 (docs/protocol.md).

``Client`` is the one to use: REST through ``Client.rest`` and one self-healing WebSocket.
``FrameSocket`` is the bare wire, for tests of the server's protocol edge cases.
"""

from hypersend_client import events
from hypersend_client.client import Backoff, Client
from hypersend_client.errors import (
    ApiError,
    AuthError,
    ClientClosedError,
    CloseError,
    HypersendError,
    RateLimitedError,
    SendError,
    TransportError,
    close_error,
)
from hypersend_client.models import Member, Message, Page, Room, Tokens, User
from hypersend_client.rest import RestClient, new_client_id
from hypersend_client.transport import Frame, FrameSocket

__all__ = [
    "ApiError",
    "AuthError",
    "Backoff",
    "Client",
    "ClientClosedError",
    "CloseError",
    "Frame",
    "FrameSocket",
    "HypersendError",
    "Member",
    "Message",
    "Page",
    "RateLimitedError",
    "RestClient",
    "Room",
    "SendError",
    "Tokens",
    "TransportError",
    "User",
    "close_error",
    "events",
    "new_client_id",
]
