// One error class per failure the protocol names (docs/protocol.md: the REST error table and
// "Close codes"), as in the Python client (clients/python/hypersend_client/errors.py).
export class HypersendError extends Error {
    name = "HypersendError";
}
/** A REST call answered with the protocol's error body. */
export class ApiError extends HypersendError {
    status;
    code;
    retryAfter;
    name = "ApiError";
    constructor(status, code, message, retryAfter = null) {
        super(`${status} ${code}: ${message}`);
        this.status = status;
        this.code = code;
        this.retryAfter = retryAfter;
    }
}
/** A 401: the credentials or tokens are no good; log in again. */
export class AuthError extends ApiError {
    name = "AuthError";
}
/** A 429; `retryAfter` says when to try again (seconds). */
export class RateLimitedError extends ApiError {
    name = "RateLimitedError";
}
/** The server could not be reached. */
export class TransportError extends HypersendError {
    name = "TransportError";
}
/** The client was closed by its owner while the call waited. */
export class ClientClosedError extends HypersendError {
    name = "ClientClosedError";
}
/** The server refused a send for a reason a retry cannot fix. */
export class SendError extends HypersendError {
    code;
    roomId;
    clientId;
    name = "SendError";
    constructor(code, message, roomId, clientId) {
        super(`${code}: ${message} (room ${roomId}, client_id ${clientId})`);
        this.code = code;
        this.roomId = roomId;
        this.clientId = clientId;
    }
}
/** The socket closed. `retryable`: the client reconnects by itself; `refresh`: after
 * refreshing the access token. */
export class CloseError extends HypersendError {
    closeCode;
    reason;
    name = "CloseError";
    static code = 0;
    retryable = true;
    refresh = false;
    constructor(closeCode, reason = "") {
        super(`socket closed with ${closeCode}${reason ? `: ${reason}` : ""}`);
        this.closeCode = closeCode;
        this.reason = reason;
    }
}
export class NormalClosure extends CloseError {
    name = "NormalClosure";
}
/** No close frame (1006): the connection dropped. */
export class AbnormalClosure extends CloseError {
    name = "AbnormalClosure";
}
export class FrameTooLarge extends CloseError {
    name = "FrameTooLarge";
    retryable = false;
}
export class ServerError extends CloseError {
    name = "ServerError";
}
/** 1012: the server is draining; a `reconnect` frame said when to come back. */
export class ServerRestarting extends CloseError {
    name = "ServerRestarting";
}
export class ServerFull extends CloseError {
    name = "ServerFull";
}
/** 4400: the first frame was not `auth`: a client bug, not retried. */
export class ProtocolViolation extends CloseError {
    name = "ProtocolViolation";
    retryable = false;
}
/** 4401: the token was missing, expired or invalid: refresh and reconnect. */
export class Unauthorized extends CloseError {
    name = "Unauthorized";
    refresh = true;
}
export class AuthTimeout extends CloseError {
    name = "AuthTimeout";
}
export class IdleTimeout extends CloseError {
    name = "IdleTimeout";
}
export class SlowConsumer extends CloseError {
    name = "SlowConsumer";
}
/** 4429: too many sockets opened from this address per minute: reconnect with backoff. */
export class TooManyOpens extends CloseError {
    name = "TooManyOpens";
}
export class ResyncRequired extends CloseError {
    name = "ResyncRequired";
}
const BY_CODE = {
    1000: NormalClosure,
    1005: AbnormalClosure, // a browser's "no status": treated as a drop
    1006: AbnormalClosure,
    1009: FrameTooLarge,
    1011: ServerError,
    1012: ServerRestarting,
    1013: ServerFull,
    4400: ProtocolViolation,
    4401: Unauthorized,
    4408: AuthTimeout,
    4410: IdleTimeout,
    4413: SlowConsumer,
    4429: TooManyOpens,
    4503: ResyncRequired,
};
/** The error of a close code; codes the protocol does not name are retryable. */
export function closeError(code, reason = "") {
    const actual = code ?? 1006;
    const cls = BY_CODE[actual] ?? CloseError;
    return new cls(actual, reason);
}
