// The REST half of protocol v1 (docs/protocol.md, "REST"). It owns the tokens and refreshes the
// access token before it expires, one refresh at a time: refresh tokens are single-use, and two
// concurrent refreshes with the same one look like a stolen token (the server then revokes the
// whole login).

import { ApiError, AuthError, HypersendError, RateLimitedError, TransportError } from "./errors.js";
import type { Member, Message, Page, Room, Tokens, User } from "./types.js";

const API = "/api/v1";
// Refresh this long before expiry, at most a fifth of the token's lifetime (as the Python
// client, clients/python/hypersend_client/models.py).
const REFRESH_MARGIN_MS = 60_000;

export function refreshAt(tokens: Tokens): number {
  return tokens.expiresAt - Math.min(REFRESH_MARGIN_MS, (tokens.lifetime * 1000) / 5);
}

/** A fresh client_id (1-64 of A-Z a-z 0-9 _ . : -). */
export function newClientId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

type Json = Record<string, unknown>;

interface TokenBody {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  user?: User;
}

function tokensOf(body: TokenBody): Tokens {
  return {
    accessToken: body.access_token,
    refreshToken: body.refresh_token,
    expiresAt: Date.now() + body.expires_in * 1000,
    lifetime: body.expires_in,
  };
}

export class RestClient {
  readonly baseUrl: string;
  user: User | null = null;
  /** Called with every new pair (sign-in, refresh), e.g. to persist them. */
  onTokens: ((tokens: Tokens) => void) | null = null;
  private _tokens: Tokens | null = null;
  private refreshing: Promise<Tokens> | null = null;

  constructor(baseUrl: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
  }

  get tokens(): Tokens | null {
    return this._tokens;
  }

  set tokens(tokens: Tokens | null) {
    this._tokens = tokens;
    if (tokens !== null) this.onTokens?.(tokens);
  }

  // accounts

  async register(username: string, password: string, displayName?: string): Promise<User> {
    const body: Json = { username, password };
    if (displayName !== undefined) body.display_name = displayName;
    return this.signedIn(await this.call<TokenBody>("POST", "/auth/register", body, false));
  }

  async login(username: string, password: string): Promise<User> {
    const body = { username, password };
    return this.signedIn(await this.call<TokenBody>("POST", "/auth/login", body, false));
  }

  /** Adopt tokens obtained elsewhere (e.g. kept from an earlier page load). */
  useTokens(tokens: Tokens): void {
    this.tokens = tokens;
  }

  private signedIn(body: TokenBody): User {
    this.tokens = tokensOf(body);
    this.user = body.user ?? null;
    return body.user as User;
  }

  /** Trade the refresh token for a new pair now (concurrent callers share one refresh). */
  refresh(): Promise<Tokens> {
    if (this.refreshing !== null) return this.refreshing;
    const used = this._tokens;
    if (used === null) return Promise.reject(new HypersendError("not signed in"));
    this.refreshing = (async () => {
      try {
        const body = await this.call<TokenBody>(
          "POST",
          "/auth/refresh",
          { refresh_token: used.refreshToken },
          false,
        );
        this.tokens = tokensOf(body);
        return this.tokens;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** A valid access token, refreshed first when due. */
  async accessToken(): Promise<string> {
    let tokens = this._tokens;
    if (tokens === null) throw new HypersendError("not signed in: register, login or useTokens");
    if (Date.now() >= refreshAt(tokens)) tokens = await this.refresh();
    return tokens.accessToken;
  }

  async logout(): Promise<void> {
    if (this._tokens !== null) {
      await this.call("POST", "/auth/logout", { refresh_token: this._tokens.refreshToken }, false);
      this._tokens = null;
    }
  }

  me(): Promise<User> {
    return this.call<User>("GET", "/users/me");
  }

  async searchUsers(query: string, limit = 20): Promise<User[]> {
    const params = new URLSearchParams({ query, limit: String(limit) });
    return (await this.call<{ users: User[] }>("GET", `/users?${params}`)).users;
  }

  // rooms

  createGroup(name: string, members: string[]): Promise<Room> {
    return this.call<Room>("POST", "/rooms", { kind: "group", name, members });
  }

  createDirect(otherUserId: string): Promise<Room> {
    return this.call<Room>("POST", "/rooms", { kind: "direct", members: [otherUserId] });
  }

  async rooms(): Promise<Room[]> {
    return (await this.call<{ rooms: Room[] }>("GET", "/rooms")).rooms;
  }

  room(roomId: string): Promise<Room> {
    return this.call<Room>("GET", `/rooms/${enc(roomId)}`);
  }

  async members(roomId: string): Promise<Member[]> {
    return (await this.call<{ members: Member[] }>("GET", `/rooms/${enc(roomId)}/members`)).members;
  }

  addMember(roomId: string, userId: string, role: "member" | "admin" = "member"): Promise<Member> {
    return this.call<Member>("POST", `/rooms/${enc(roomId)}/members`, { user_id: userId, role });
  }

  // messages

  history(
    roomId: string,
    options: { afterSeq?: number; beforeSeq?: number; limit?: number } = {},
  ): Promise<Page> {
    const params = new URLSearchParams({ limit: String(options.limit ?? 50) });
    if (options.afterSeq !== undefined) params.set("after_seq", String(options.afterSeq));
    if (options.beforeSeq !== undefined) params.set("before_seq", String(options.beforeSeq));
    return this.call<Page>("GET", `/rooms/${enc(roomId)}/messages?${params}`);
  }

  /** Every stored message after `afterSeq`, ascending. */
  async allMessages(roomId: string, afterSeq = 0): Promise<Message[]> {
    const out: Message[] = [];
    for (;;) {
      const page = await this.history(roomId, { afterSeq, limit: 200 });
      out.push(...page.messages);
      const last = page.messages[page.messages.length - 1];
      if (!page.has_more || last === undefined) return out;
      afterSeq = last.seq;
    }
  }

  postMessage(roomId: string, text: string, clientId = newClientId()): Promise<Message> {
    return this.call<Message>("POST", `/rooms/${enc(roomId)}/messages`, {
      client_id: clientId,
      text,
    });
  }

  async markRead(roomId: string, seq: number): Promise<void> {
    await this.call("POST", `/rooms/${enc(roomId)}/read`, { seq });
  }

  // the wire

  private async call<T>(method: string, path: string, body?: Json, auth = true): Promise<T> {
    let response = await this.send(method, path, body, auth);
    if (auth && response.status === 401 && (await codeOf(response.clone())) === "expired_token") {
      // Expired between our check and the server's (clock skew, a slow call): refresh, repeat.
      await this.refresh();
      response = await this.send(method, path, body, auth);
    }
    if (response.status >= 400) throw await errorOf(response);
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  private async send(method: string, path: string, body: Json | undefined, auth: boolean) {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth) headers.Authorization = `Bearer ${await this.accessToken()}`;
    try {
      return await fetch(`${this.baseUrl}${API}${path}`, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
      });
    } catch (error) {
      throw new TransportError(`${method} ${path}: ${String(error)}`);
    }
  }
}

function enc(id: string): string {
  return encodeURIComponent(id);
}

async function codeOf(response: Response): Promise<string | null> {
  try {
    const body = (await response.json()) as { error?: { code?: string } };
    return body.error?.code ?? null;
  } catch {
    return null;
  }
}

async function errorOf(response: Response): Promise<ApiError> {
  let code = "http_error";
  let message = "";
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // not the protocol's error body
  }
  const header = response.headers.get("retry-after");
  const retryAfter = header === null ? null : Number(header);
  const cls =
    response.status === 401 ? AuthError : response.status === 429 ? RateLimitedError : ApiError;
  return new cls(response.status, code, message, retryAfter);
}
