// The REST half of protocol v1 (docs/protocol.md, "REST"). It owns the tokens and refreshes the
// access token before it expires, one refresh at a time: refresh tokens are single-use, and two
// concurrent refreshes with the same one look like a stolen token (the server then revokes the
// whole login).
import { ApiError, AuthError, HypersendError, RateLimitedError, TransportError } from "./errors.js";
const API = "/api/v1";
// Refresh this long before expiry, at most a fifth of the token's lifetime (as the Python
// client, clients/python/hypersend_client/models.py).
const REFRESH_MARGIN_MS = 60_000;
export function refreshAt(tokens) {
    return tokens.expiresAt - Math.min(REFRESH_MARGIN_MS, (tokens.lifetime * 1000) / 5);
}
/** A fresh client_id (1-64 of A-Z a-z 0-9 _ . : -). */
export function newClientId() {
    const bytes = new Uint8Array(16);
    globalThis.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
function tokensOf(body) {
    return {
        accessToken: body.access_token,
        refreshToken: body.refresh_token,
        expiresAt: Date.now() + body.expires_in * 1000,
        lifetime: body.expires_in,
    };
}
export class RestClient {
    baseUrl;
    user = null;
    /** Called with every new pair (sign-in, refresh), e.g. to persist them. */
    onTokens = null;
    _tokens = null;
    refreshing = null;
    constructor(baseUrl) {
        this.baseUrl = baseUrl.replace(/\/+$/, "");
    }
    get tokens() {
        return this._tokens;
    }
    set tokens(tokens) {
        this._tokens = tokens;
        if (tokens !== null)
            this.onTokens?.(tokens);
    }
    // accounts
    async register(username, password, displayName) {
        const body = { username, password };
        if (displayName !== undefined)
            body.display_name = displayName;
        return this.signedIn(await this.call("POST", "/auth/register", body, false));
    }
    async login(username, password) {
        const body = { username, password };
        return this.signedIn(await this.call("POST", "/auth/login", body, false));
    }
    /** Adopt tokens obtained elsewhere (e.g. kept from an earlier page load). */
    useTokens(tokens) {
        this.tokens = tokens;
    }
    signedIn(body) {
        this.tokens = tokensOf(body);
        this.user = body.user ?? null;
        return body.user;
    }
    /** Trade the refresh token for a new pair now (concurrent callers share one refresh). */
    refresh() {
        if (this.refreshing !== null)
            return this.refreshing;
        const used = this._tokens;
        if (used === null)
            return Promise.reject(new HypersendError("not signed in"));
        this.refreshing = (async () => {
            try {
                const body = await this.call("POST", "/auth/refresh", { refresh_token: used.refreshToken }, false);
                this.tokens = tokensOf(body);
                return this.tokens;
            }
            finally {
                this.refreshing = null;
            }
        })();
        return this.refreshing;
    }
    /** A valid access token, refreshed first when due. */
    async accessToken() {
        let tokens = this._tokens;
        if (tokens === null)
            throw new HypersendError("not signed in: register, login or useTokens");
        if (Date.now() >= refreshAt(tokens))
            tokens = await this.refresh();
        return tokens.accessToken;
    }
    async logout() {
        if (this._tokens !== null) {
            await this.call("POST", "/auth/logout", { refresh_token: this._tokens.refreshToken }, false);
            this._tokens = null;
        }
    }
    me() {
        return this.call("GET", "/users/me");
    }
    async searchUsers(query, limit = 20) {
        const params = new URLSearchParams({ query, limit: String(limit) });
        return (await this.call("GET", `/users?${params}`)).users;
    }
    // rooms
    createGroup(name, members) {
        return this.call("POST", "/rooms", { kind: "group", name, members });
    }
    createDirect(otherUserId) {
        return this.call("POST", "/rooms", { kind: "direct", members: [otherUserId] });
    }
    async rooms() {
        return (await this.call("GET", "/rooms")).rooms;
    }
    room(roomId) {
        return this.call("GET", `/rooms/${enc(roomId)}`);
    }
    async members(roomId) {
        return (await this.call("GET", `/rooms/${enc(roomId)}/members`)).members;
    }
    addMember(roomId, userId, role = "member") {
        return this.call("POST", `/rooms/${enc(roomId)}/members`, { user_id: userId, role });
    }
    // messages
    history(roomId, options = {}) {
        const params = new URLSearchParams({ limit: String(options.limit ?? 50) });
        if (options.afterSeq !== undefined)
            params.set("after_seq", String(options.afterSeq));
        if (options.beforeSeq !== undefined)
            params.set("before_seq", String(options.beforeSeq));
        return this.call("GET", `/rooms/${enc(roomId)}/messages?${params}`);
    }
    /** Every stored message after `afterSeq`, ascending. */
    async allMessages(roomId, afterSeq = 0) {
        const out = [];
        for (;;) {
            const page = await this.history(roomId, { afterSeq, limit: 200 });
            out.push(...page.messages);
            const last = page.messages[page.messages.length - 1];
            if (!page.has_more || last === undefined)
                return out;
            afterSeq = last.seq;
        }
    }
    postMessage(roomId, text, clientId = newClientId()) {
        return this.call("POST", `/rooms/${enc(roomId)}/messages`, {
            client_id: clientId,
            text,
        });
    }
    async markRead(roomId, seq) {
        await this.call("POST", `/rooms/${enc(roomId)}/read`, { seq });
    }
    // the wire
    async call(method, path, body, auth = true) {
        let response = await this.send(method, path, body, auth);
        if (auth && response.status === 401 && (await codeOf(response.clone())) === "expired_token") {
            // Expired between our check and the server's (clock skew, a slow call): refresh, repeat.
            await this.refresh();
            response = await this.send(method, path, body, auth);
        }
        if (response.status >= 400)
            throw await errorOf(response);
        if (response.status === 204)
            return undefined;
        const text = await response.text();
        return (text ? JSON.parse(text) : undefined);
    }
    async send(method, path, body, auth) {
        const headers = {};
        if (body !== undefined)
            headers["Content-Type"] = "application/json";
        if (auth)
            headers.Authorization = `Bearer ${await this.accessToken()}`;
        try {
            return await fetch(`${this.baseUrl}${API}${path}`, {
                method,
                headers,
                body: body === undefined ? null : JSON.stringify(body),
            });
        }
        catch (error) {
            throw new TransportError(`${method} ${path}: ${String(error)}`);
        }
    }
}
function enc(id) {
    return encodeURIComponent(id);
}
async function codeOf(response) {
    try {
        const body = (await response.json());
        return body.error?.code ?? null;
    }
    catch {
        return null;
    }
}
async function errorOf(response) {
    let code = "http_error";
    let message = "";
    try {
        const body = (await response.json());
        code = body.error?.code ?? code;
        message = body.error?.message ?? message;
    }
    catch {
        // not the protocol's error body
    }
    const header = response.headers.get("retry-after");
    const retryAfter = header === null ? null : Number(header);
    const cls = response.status === 401 ? AuthError : response.status === 429 ? RateLimitedError : ApiError;
    return new cls(response.status, code, message, retryAfter);
}
