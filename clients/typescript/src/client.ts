// The real-time client: one WebSocket per client that reconnects by itself and loses nothing.
// The same behaviour as the Python client (clients/python/hypersend_client/client.py):
// - after a close it reconnects after the server's `reconnect` frame's `after_ms` when one came,
//   else with jittered exponential backoff; a 4401 refreshes the access token first; 1009, 4400
//   and a refused refresh stop it;
// - it keeps the last seq delivered per room, opens every connection with `resume` from there
//   and drops `message` frames at or below it: each message is delivered once across reconnects;
// - `send` repeats the same frame (same client_id) until the `ack`: on every reconnect, after
//   `retry_after` or a short pause for retryable errors, and when no answer came in time;
// - the access token is refreshed before it expires.

import {
  ApiError,
  AuthError,
  ClientClosedError,
  CloseError,
  HypersendError,
  SendError,
  TransportError,
  closeError,
} from "./errors.js";
import { RestClient, newClientId, refreshAt } from "./rest.js";
import type { ClientEvent, EventOf, EventType, Message } from "./types.js";

// docs/protocol.md, "Errors on an open socket": a repeat of the same frame can fix these.
const RETRYABLE_SEND_ERRORS = new Set(["rate_limited", "try_again", "store_failed", "internal"]);
// docs/protocol.md, "Idempotent sends".
const CLIENT_ID = /^[A-Za-z0-9_.:-]{1,64}$/;

export type State = "idle" | "connecting" | "live" | "reconnecting" | "closed";
type Frame = Record<string, unknown> & { type?: unknown };

export interface Backoff {
  /** seconds */
  base: number;
  /** seconds */
  cap: number;
}

/** Attempt n waits between half and all of min(cap, base * 2^n) seconds. */
export function backoffDelay(backoff: Backoff, attempt: number, random = Math.random): number {
  const ceiling = Math.min(backoff.cap, backoff.base * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + random() * (ceiling / 2);
}

export interface ClientOptions {
  /** Default: the base URL with ws(s) and `/ws`. */
  wsUrl?: string;
  /** "latest": read every room's last seq over REST before the first connection, so nothing
   * after start() can be missed; "live": skip that call and follow a room from its first
   * message. */
  startFrom?: "latest" | "live";
  backoff?: Backoff;
  /** Repeat a send not answered within this long (ms). */
  ackTimeoutMs?: number;
  /** Drop a socket that received nothing for this long (ms; default 75 s): the server pings
   * every HYPERSEND_WS_PING_INTERVAL_SECONDS (30 s by default), so silence means a frozen
   * server or a dead path. */
  silenceTimeoutMs?: number;
  /** A WebSocket implementation (default: the global one). */
  WebSocket?: typeof WebSocket;
  rest?: RestClient;
}

interface PendingSend {
  roomId: string;
  clientId: string;
  text: string;
  resolve: (message: Message) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class Client {
  readonly rest: RestClient;
  readonly wsUrl: string;
  readonly startFrom: "latest" | "live";
  readonly backoff: Backoff;
  readonly ackTimeoutMs: number;
  readonly silenceTimeoutMs: number;
  state: State = "idle";
  userId: string | null = null;
  /** room -> the last seq delivered (the resume point) */
  readonly positions = new Map<string, number>();
  rooms = new Set<string>();
  connects = 0;
  error: Error | null = null;

  private readonly WS: typeof WebSocket;
  private readonly listeners = new Set<(event: ClientEvent) => void>();
  private readonly pending = new Map<string, PendingSend>();
  private socket: WebSocket | null = null;
  private isLive = false;
  private wentLive = false;
  private stopped = false;
  private wake: (() => void) | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private running: Promise<void> | null = null;

  constructor(baseUrl: string, options: ClientOptions = {}) {
    this.rest = options.rest ?? new RestClient(baseUrl);
    const root = baseUrl.replace(/\/+$/, "");
    this.wsUrl = options.wsUrl ?? `ws${root.replace(/^http/, "")}/ws`;
    this.startFrom = options.startFrom ?? "latest";
    this.backoff = options.backoff ?? { base: 0.5, cap: 15 };
    this.ackTimeoutMs = options.ackTimeoutMs ?? 10_000;
    this.silenceTimeoutMs = options.silenceTimeoutMs ?? 75_000;
    const ws = options.WebSocket ?? globalThis.WebSocket;
    if (ws === undefined) throw new HypersendError("no WebSocket: pass options.WebSocket");
    this.WS = ws;
    this.rest.onTokens = () => {
      if (this.state !== "idle") this.emit({ type: "tokens", tokens: this.rest.tokens! });
      this.scheduleRefresh();
      // The server closes a socket whose token expires (4401) unless it is given the new one
      // in-band (docs/protocol.md, "auth" on an open socket): no reconnect needed.
      if (this.isLive && this.socket !== null) {
        this.socket.send(JSON.stringify({ type: "auth", token: this.rest.tokens!.accessToken }));
      }
    };
  }

  // signing in

  async register(username: string, password: string, displayName?: string): Promise<string> {
    const user = await this.rest.register(username, password, displayName);
    this.userId = user.id;
    return user.id;
  }

  async login(username: string, password: string): Promise<string> {
    const user = await this.rest.login(username, password);
    this.userId = user.id;
    return user.id;
  }

  // life cycle

  /** Connect; `resume` gives known positions. Resolves once live (rejects with what stopped
   * the client) unless `wait` is false. */
  async start(resume: Record<string, number> = {}, wait = true): Promise<void> {
    if (this.running !== null) throw new HypersendError("already started");
    if (this.startFrom === "latest") {
      for (const room of await this.rest.rooms()) this.positions.set(room.id, room.last_seq);
    }
    for (const [room, seq] of Object.entries(resume)) this.positions.set(room, seq);
    this.state = "connecting";
    this.scheduleRefresh();
    const live = wait ? this.waitLive() : null;
    this.running = this.run();
    if (live !== null) await live;
  }

  get live(): boolean {
    return this.isLive;
  }

  /** Resolves when live; rejects with the error that stopped the client. */
  waitLive(): Promise<void> {
    if (this.isLive) return Promise.resolve();
    if (this.state === "closed") return Promise.reject(this.error ?? new ClientClosedError());
    return new Promise((resolve, reject) => {
      const off = this.on((event) => {
        if (event.type === "connected") {
          off();
          resolve();
        } else if (event.type === "disconnected") {
          off();
          reject(event.error ?? new ClientClosedError("the client is closed"));
        }
      });
    });
  }

  /** Close the socket (1000) and stop; pending sends fail with ClientClosedError. */
  async close(): Promise<void> {
    if (this.stopped) return;
    const socket = this.socket;
    this.stop(null);
    socket?.close(1000, "bye");
    await this.running;
  }

  /** Close the current connection as if it dropped: the client reconnects (for tests and a
   * browser's "offline" event). */
  dropConnection(): void {
    this.socket?.close(4000, "client drops the connection");
  }

  // events

  /** Call `listener` with every event; returns the function that removes it. */
  on(listener: (event: ClientEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The next event of `type` matching `predicate`. */
  waitFor<T extends EventType>(
    type: T,
    predicate: (event: EventOf<T>) => boolean = () => true,
    timeoutMs = 30_000,
  ): Promise<EventOf<T>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`no ${type} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.on((event) => {
        if (event.type === type && predicate(event as EventOf<T>)) {
          clearTimeout(timer);
          off();
          resolve(event as EventOf<T>);
        }
      });
    });
  }

  private emit(event: ClientEvent): void {
    for (const listener of [...this.listeners]) listener(event);
  }

  // client frames

  /** Send a message; resolves with it as stored (with its seq) once acknowledged. */
  send(roomId: string, text: string, clientId: string = newClientId()): Promise<Message> {
    if (this.stopped) return Promise.reject(this.error ?? new ClientClosedError());
    if (!CLIENT_ID.test(clientId)) {
      return Promise.reject(new HypersendError(`client_id ${clientId} is not 1-64 of [A-Za-z0-9_.:-]`));
    }
    if (this.pending.has(clientId)) {
      return Promise.reject(new HypersendError(`a send with client_id ${clientId} is pending`));
    }
    return new Promise<Message>((resolve, reject) => {
      const pending: PendingSend = { roomId, clientId, text, resolve, reject, timer: undefined };
      this.pending.set(clientId, pending);
      this.write(pending);
    }).finally(() => {
      const pending = this.pending.get(clientId);
      if (pending !== undefined) clearTimeout(pending.timer);
      this.pending.delete(clientId);
    });
  }

  /** Tell the room's other members this user types (dropped while disconnected). */
  typing(roomId: string): void {
    if (this.isLive) this.socket?.send(JSON.stringify({ type: "typing", room_id: roomId }));
  }

  /** Move this user's read marker (over REST, so a reconnect cannot lose it). */
  markRead(roomId: string, seq: number): Promise<void> {
    return this.rest.markRead(roomId, seq);
  }

  private write(pending: PendingSend): void {
    clearTimeout(pending.timer);
    pending.timer = undefined;
    if (!this.isLive || this.socket === null) return; // written again when live
    this.socket.send(
      JSON.stringify({
        type: "send",
        room_id: pending.roomId,
        client_id: pending.clientId,
        text: pending.text,
      }),
    );
    pending.timer = setTimeout(() => this.write(pending), this.ackTimeoutMs);
  }

  // the connection

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      const hint: { ms: number | null } = { ms: null };
      let error: Error;
      this.wentLive = false;
      try {
        error = await this.session(hint);
      } catch (caught) {
        error = caught instanceof Error ? caught : new HypersendError(String(caught));
      }
      this.isLive = false;
      this.socket = null;
      if (this.stopped) return;
      if (error instanceof AuthError || (error instanceof CloseError && !error.retryable)) {
        this.stop(error);
        return;
      }
      if (this.wentLive) attempt = 0;
      if (error instanceof CloseError && error.refresh) {
        try {
          await this.rest.refresh();
        } catch (caught) {
          if (caught instanceof ApiError) {
            // refused (expired, revoked, reused, no refresh token): only a new login helps
            this.stop(caught);
            return;
          }
          // unreachable: back off and try again
        }
      }
      const delay = hint.ms !== null ? hint.ms / 1000 : backoffDelay(this.backoff, attempt);
      attempt += 1;
      this.state = "reconnecting";
      this.emit({ type: "reconnecting", error, delay, attempt });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay * 1000);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  /** One connection: resolves with the error that ended it. */
  private async session(hint: { ms: number | null }): Promise<Error> {
    const token = await this.rest.accessToken();
    if (this.stopped) return new ClientClosedError();
    return new Promise<Error>((resolve) => {
      const ws = new this.WS(this.wsUrl);
      this.socket = ws;
      const resuming = this.positions.size > 0;
      let ready = false;
      let silence: ReturnType<typeof setTimeout> | undefined;
      let ended = false;
      const end = (error: Error) => {
        if (ended) return;
        ended = true;
        clearTimeout(silence);
        resolve(error);
      };
      // Armed from the start (a server that accepts TCP but never answers counts too) and
      // re-armed by every frame. A frozen server would not finish a close handshake either:
      // the session ends at once and the socket is left to the browser.
      const watch = () => {
        clearTimeout(silence);
        silence = setTimeout(() => {
          ws.close(4000, "silent server");
          end(new TransportError(`no frame for ${this.silenceTimeoutMs / 1000} s`));
        }, this.silenceTimeoutMs);
      };
      watch();
      ws.onopen = () => {
        ws.send(JSON.stringify({ type: "auth", token }));
        // The first frame after auth ends the server's hold on live events (docs/protocol.md).
        ws.send(
          JSON.stringify(
            resuming
              ? { type: "resume", rooms: Object.fromEntries(this.positions) }
              : { type: "ping" },
          ),
        );
      };
      ws.onmessage = (message: MessageEvent) => {
        if (ended || typeof message.data !== "string") return;
        watch();
        const frame = JSON.parse(message.data) as Frame;
        if (frame.type === "ready") ready = true;
        this.dispatch(frame, ws, hint);
        if (ready && !this.isLive && (!resuming || frame.type === "resumed")) this.goLive();
      };
      ws.onerror = () => {
        // the close event follows with the code
      };
      ws.onclose = (event: CloseEvent) => end(closeError(event.code, event.reason));
    });
  }

  private goLive(): void {
    this.isLive = true;
    this.wentLive = true;
    this.state = "live";
    this.connects += 1;
    this.emit({ type: "connected", attempt: this.connects });
    for (const pending of this.pending.values()) this.write(pending);
  }

  private dispatch(frame: Frame, ws: WebSocket, hint: { ms: number | null }): void {
    switch (frame.type) {
      case "ping":
        ws.send('{"type":"pong"}');
        return;
      case "pong":
      case "reauthenticated":
        return;
      case "token_expiring":
        // A server that warns earlier than our own schedule gets a refresh now (which
        // re-authenticates this socket); a refused one ends in 4401 and a reconnect.
        this.rest.refresh().catch(() => undefined);
        return;
      case "reconnect":
        hint.ms = Math.max(0, Number(frame.after_ms ?? 0));
        return;
      case "ack": {
        const pending = this.pending.get(String(frame.client_id));
        pending?.resolve(frame.message as Message);
        return;
      }
      case "error": {
        const pending = this.pending.get(String(frame.client_id));
        if (pending !== undefined) {
          this.refused(pending, frame);
          return;
        }
        const roomIds = frame.room_ids;
        if (frame.code === "not_member" && Array.isArray(roomIds)) {
          for (const room of roomIds) this.positions.delete(String(room)); // left since
        }
        break;
      }
      case "message": {
        const room = String(frame.room_id);
        const seq = Number(frame.seq);
        const last = this.positions.get(room);
        if (last !== undefined && seq <= last) return; // seen before the reconnect
        this.positions.set(room, seq);
        break;
      }
      case "ready":
        this.userId = String(frame.user_id);
        this.rooms = new Set((frame.rooms as string[] | undefined) ?? []);
        break;
      case "resumed":
        for (const [room, seq] of Object.entries((frame.rooms as Record<string, number>) ?? {})) {
          this.positions.set(room, Math.max(seq, this.positions.get(room) ?? 0));
        }
        break;
      case "room_added": {
        const room = String(frame.room_id);
        this.rooms.add(room);
        const view = frame.room as { last_seq?: number } | undefined;
        if (view !== undefined && !this.positions.has(room)) {
          this.positions.set(room, view.last_seq ?? 0);
        }
        break;
      }
      case "room_removed":
        this.rooms.delete(String(frame.room_id));
        this.positions.delete(String(frame.room_id));
        break;
      default:
        break;
    }
    this.emit(frame as unknown as ClientEvent);
  }

  private refused(pending: PendingSend, frame: Frame): void {
    const code = String(frame.code);
    if (RETRYABLE_SEND_ERRORS.has(code)) {
      clearTimeout(pending.timer);
      const after = typeof frame.retry_after === "number" ? frame.retry_after : 0.1 + Math.random() * 0.4;
      pending.timer = setTimeout(() => this.write(pending), after * 1000);
      return;
    }
    pending.reject(new SendError(code, String(frame.message ?? ""), pending.roomId, pending.clientId));
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const tokens = this.rest.tokens;
    if (tokens === null || this.stopped || this.state === "idle") return;
    this.refreshTimer = setTimeout(
      () => {
        this.rest.accessToken().catch((error: unknown) => {
          if (error instanceof TransportError) {
            // unreachable now: try again after a backoff step
            this.refreshTimer = setTimeout(() => this.scheduleRefresh(), backoffDelay(this.backoff, 2) * 1000);
          }
        });
      },
      Math.max(0, refreshAt(tokens) - Date.now()),
    );
  }

  private stop(error: Error | null): void {
    if (this.stopped) return;
    this.stopped = true;
    this.state = "closed";
    this.error = error;
    this.isLive = false;
    clearTimeout(this.refreshTimer);
    this.wake?.();
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error ?? new ClientClosedError("the client is closed"));
    }
    this.emit({ type: "disconnected", error });
  }
}
