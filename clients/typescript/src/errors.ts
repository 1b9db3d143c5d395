// One error class per failure the protocol names (docs/protocol.md: the REST error table and
// "Close codes"), as in the Python client (clients/python/hypersend_client/errors.py).

export class HypersendError extends Error {
  override name = "HypersendError";
}

/** A REST call answered with the protocol's error body. */
export class ApiError extends HypersendError {
  override name = "ApiError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter: number | null = null,
  ) {
    super(`${status} ${code}: ${message}`);
  }
}

/** A 401: the credentials or tokens are no good; log in again. */
export class AuthError extends ApiError {
  override name = "AuthError";
}

/** A 429; `retryAfter` says when to try again (seconds). */
export class RateLimitedError extends ApiError {
  override name = "RateLimitedError";
}

/** The server could not be reached. */
export class TransportError extends HypersendError {
  override name = "TransportError";
}

/** The client was closed by its owner while the call waited. */
export class ClientClosedError extends HypersendError {
  override name = "ClientClosedError";
}

/** The server refused a send for a reason a retry cannot fix. */
export class SendError extends HypersendError {
  override name = "SendError";
  constructor(
    readonly code: string,
    message: string,
    readonly roomId: string,
    readonly clientId: string,
  ) {
    super(`${code}: ${message} (room ${roomId}, client_id ${clientId})`);
  }
}

/** The socket closed. `retryable`: the client reconnects by itself; `refresh`: after
 * refreshing the access token. */
export class CloseError extends HypersendError {
  override name = "CloseError";
  static readonly code: number = 0;
  readonly retryable: boolean = true;
  readonly refresh: boolean = false;
  constructor(
    readonly closeCode: number,
    readonly reason = "",
  ) {
    super(`socket closed with ${closeCode}${reason ? `: ${reason}` : ""}`);
  }
}

export class NormalClosure extends CloseError {
  override name = "NormalClosure";
}
/** No close frame (1006): the connection dropped. */
export class AbnormalClosure extends CloseError {
  override name = "AbnormalClosure";
}
export class FrameTooLarge extends CloseError {
  override name = "FrameTooLarge";
  override readonly retryable = false;
}
export class ServerError extends CloseError {
  override name = "ServerError";
}
/** 1012: the server is draining; a `reconnect` frame said when to come back. */
export class ServerRestarting extends CloseError {
  override name = "ServerRestarting";
}
export class ServerFull extends CloseError {
  override name = "ServerFull";
}
/** 4400: the first frame was not `auth`: a client bug, not retried. */
export class ProtocolViolation extends CloseError {
  override name = "ProtocolViolation";
  override readonly retryable = false;
}
/** 4401: the token was missing, expired or invalid: refresh and reconnect. */
export class Unauthorized extends CloseError {
  override name = "Unauthorized";
  override readonly refresh = true;
}
export class AuthTimeout extends CloseError {
  override name = "AuthTimeout";
}
export class IdleTimeout extends CloseError {
  override name = "IdleTimeout";
}
export class SlowConsumer extends CloseError {
  override name = "SlowConsumer";
}
/** 4429: too many sockets opened from this address per minute: reconnect with backoff. */
export class TooManyOpens extends CloseError {
  override name = "TooManyOpens";
}
export class ResyncRequired extends CloseError {
  override name = "ResyncRequired";
}

const BY_CODE: Record<number, new (code: number, reason?: string) => CloseError> = {
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
export function closeError(code: number | undefined, reason = ""): CloseError {
  const actual = code ?? 1006;
  const cls = BY_CODE[actual] ?? CloseError;
  return new cls(actual, reason);
}
