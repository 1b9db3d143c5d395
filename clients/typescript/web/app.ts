// The web client (served by the chat server at /app/ when HYPERSEND_WEB_CLIENT is on): plain DOM
// on top of @hypersend/client. Sign up / log in, rooms, members, history with infinite scroll,
// send, typing, presence, and the connection state ("reconnecting…") shown as it happens.

import {
  AuthError,
  Client,
  HypersendError,
  RestClient,
  newClientId,
  type ClientEvent,
  type Message,
  type Room,
  type Tokens,
  type User,
} from "../src/index.js";

const SESSION_KEY = "hypersend.session";
const PAGE = 50;
const TYPING_SHOW_MS = 3000;
const TYPING_SEND_EVERY_MS = 2000;

interface Saved {
  tokens: Tokens;
  user: User;
}

function $(id: string): HTMLElement {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`#${id} missing`);
  return element;
}
function input(id: string): HTMLInputElement {
  return $(id) as HTMLInputElement;
}

let client: Client | null = null;
let me: User | null = null;
let current: string | null = null;
const rooms = new Map<string, Room>();
const messages = new Map<string, Map<number, Message>>();
const hasMore = new Map<string, boolean>();
const pending = new Map<string, { roomId: string; text: string }>();
const names = new Map<string, string>();
// Presence is only announced on changes (docs/protocol.md): a member we heard nothing about
// is shown without a marker rather than as offline.
const online = new Set<string>();
const offline = new Set<string>();
const typingUntil = new Map<string, number>();
let loadingOlder = false;
let lastTypingSent = 0;

function setStatus(state: string, text: string): void {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function save(tokens: Tokens): void {
  if (me !== null) sessionStorage.setItem(SESSION_KEY, JSON.stringify({ tokens, user: me }));
}

function showError(where: string, error: unknown): void {
  $(where).textContent = error instanceof HypersendError ? error.message : String(error);
}

// signing in

async function signIn(register: boolean): Promise<void> {
  const rest = new RestClient(location.origin);
  const username = input("username").value.trim();
  const password = input("password").value;
  try {
    me = register ? await rest.register(username, password) : await rest.login(username, password);
  } catch (error) {
    showError("signin-error", error);
    return;
  }
  save(rest.tokens!);
  await begin(rest);
}

async function begin(rest: RestClient): Promise<void> {
  const started = new Client(location.origin, { rest });
  client = started;
  started.userId = me!.id;
  started.on(onEvent);
  $("signin").hidden = true;
  $("chat").hidden = false;
  $("logout").hidden = false;
  $("whoami").textContent = `${me!.display_name} (@${me!.username})`;
  names.set(me!.id, me!.display_name);
  online.add(me!.id);
  setStatus("connecting", "connecting…");
  try {
    await started.start();
  } catch (error) {
    if (error instanceof AuthError) return signOut();
    setStatus("closed", `disconnected: ${String(error)}`);
    return;
  }
  await loadRooms();
  const first = [...rooms.keys()][0];
  if (current === null && first !== undefined) await openRoom(first);
}

async function signOut(): Promise<void> {
  sessionStorage.removeItem(SESSION_KEY);
  const closing = client;
  client = null;
  if (closing !== null) {
    await closing.rest.logout().catch(() => undefined);
    await closing.close();
  }
  location.reload();
}

// rooms and members

async function loadRooms(): Promise<void> {
  if (client === null) return;
  rooms.clear();
  for (const room of await client.rest.rooms()) rooms.set(room.id, room);
  renderRooms();
}

function renderRooms(): void {
  const list = $("rooms");
  list.replaceChildren(
    ...[...rooms.values()].map((room) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = room.name ?? "direct";
      button.dataset.roomId = room.id;
      button.setAttribute("aria-current", String(room.id === current));
      button.addEventListener("click", () => void openRoom(room.id));
      item.append(button);
      return item;
    }),
  );
}

async function openRoom(roomId: string): Promise<void> {
  if (client === null) return;
  current = roomId;
  const room = rooms.get(roomId);
  $("room-title").textContent = room?.name ?? "direct";
  $("add-member").hidden = false;
  $("composer").hidden = false;
  renderRooms();
  const page = await client.rest.history(roomId, { limit: PAGE });
  const known = messages.get(roomId) ?? new Map<number, Message>();
  for (const message of page.messages) known.set(message.seq, message);
  messages.set(roomId, known);
  hasMore.set(roomId, page.has_more);
  await loadMembers(roomId);
  renderMessages({ stick: true });
  input("text").focus();
}

async function loadMembers(roomId: string): Promise<void> {
  if (client === null) return;
  const members = await client.rest.members(roomId);
  for (const member of members) names.set(member.user_id, member.display_name);
  if (roomId !== current) return;
  $("members").replaceChildren(
    ...members.map((member) => {
      const span = document.createElement("span");
      span.className = presenceClass(member.user_id);
      span.dataset.userId = member.user_id;
      span.textContent = `${member.display_name} `;
      return span;
    }),
  );
}

function renderPresence(): void {
  for (const span of $("members").querySelectorAll<HTMLElement>("span[data-user-id]")) {
    span.className = presenceClass(span.dataset.userId ?? "");
  }
}

function presenceClass(userId: string): string {
  return online.has(userId) ? "online" : offline.has(userId) ? "offline" : "";
}

// messages

function renderMessages(options: { stick?: boolean; keepFromBottom?: number } = {}): void {
  const list = $("messages");
  if (current === null) return;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const items = [...(messages.get(current)?.values() ?? [])]
    .sort((a, b) => a.seq - b.seq)
    .map((message) => messageItem(message.sender_id, message.text, { seq: message.seq }));
  for (const [clientId, send] of pending) {
    if (send.roomId === current) items.push(messageItem(me!.id, send.text, { clientId }));
  }
  list.replaceChildren(...items);
  if (options.keepFromBottom !== undefined) {
    list.scrollTop = list.scrollHeight - options.keepFromBottom;
  } else if (options.stick || atBottom) {
    list.scrollTop = list.scrollHeight;
  }
}

function messageItem(
  senderId: string,
  text: string,
  ids: { seq?: number; clientId?: string },
): HTMLLIElement {
  const item = document.createElement("li");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = names.get(senderId) ?? senderId.slice(0, 8);
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  if (ids.seq !== undefined) item.dataset.seq = String(ids.seq);
  if (ids.clientId !== undefined) {
    item.dataset.clientId = ids.clientId;
    item.className = "pending";
  }
  return item;
}

async function loadOlder(): Promise<void> {
  if (client === null || current === null || loadingOlder || !hasMore.get(current)) return;
  const room = current;
  const known = messages.get(room);
  const oldest = Math.min(...(known?.keys() ?? []));
  if (!Number.isFinite(oldest)) return;
  loadingOlder = true;
  try {
    const page = await client.rest.history(room, { beforeSeq: oldest, limit: PAGE });
    for (const message of page.messages) known!.set(message.seq, message);
    hasMore.set(room, page.has_more);
    const list = $("messages");
    if (room === current) renderMessages({ keepFromBottom: list.scrollHeight - list.scrollTop });
  } finally {
    loadingOlder = false;
  }
}

async function send(text: string): Promise<void> {
  if (client === null || current === null) return;
  const clientId = newClientId();
  const roomId = current;
  pending.set(clientId, { roomId, text });
  renderMessages({ stick: true });
  try {
    const stored = await client.send(roomId, text, clientId);
    messages.get(roomId)?.set(stored.seq, stored);
  } catch (error) {
    $("typing").textContent = `not sent: ${String(error)}`;
  } finally {
    pending.delete(clientId);
    if (roomId === current) renderMessages({ stick: true });
  }
}

function renderTyping(): void {
  const now = Date.now();
  const who = [...typingUntil]
    .filter(([user, until]) => until > now && user !== me?.id)
    .map(([user]) => names.get(user) ?? user.slice(0, 8));
  $("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

// events

function onEvent(event: ClientEvent): void {
  switch (event.type) {
    case "connected":
      setStatus("live", "connected");
      break;
    case "reconnecting":
      setStatus("reconnecting", "reconnecting…");
      break;
    case "disconnected":
      setStatus("closed", "disconnected");
      if (event.error instanceof AuthError) void signOut();
      break;
    case "tokens":
      save(event.tokens);
      break;
    case "message": {
      const known = messages.get(event.room_id);
      if (known !== undefined) known.set(event.seq, event.message);
      typingUntil.delete(event.message.sender_id);
      if (event.room_id === current) {
        renderMessages();
        renderTyping();
      }
      break;
    }
    case "typing":
      if (event.room_id === current) {
        typingUntil.set(event.user_id, Date.now() + TYPING_SHOW_MS);
        renderTyping();
        setTimeout(renderTyping, TYPING_SHOW_MS + 50);
      }
      break;
    case "presence":
      if (event.online) {
        online.add(event.user_id);
        offline.delete(event.user_id);
      } else {
        online.delete(event.user_id);
        offline.add(event.user_id);
      }
      renderPresence();
      break;
    case "room_added":
    case "room_removed":
      void loadRooms();
      break;
    default:
      break;
  }
}

// wiring

function wire(): void {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    void signIn(false);
  });
  $("signup").addEventListener("click", () => {
    const form = $("signin-form") as HTMLFormElement;
    if (form.reportValidity()) void signIn(true);
  });
  $("logout").addEventListener("click", () => void signOut());
  $("new-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = input("new-room-name").value.trim();
    if (client === null || !name) return;
    void client.rest.createGroup(name, []).then(async (room) => {
      input("new-room-name").value = "";
      await loadRooms();
      await openRoom(room.id);
    });
  });
  $("add-member").addEventListener("submit", (event) => {
    event.preventDefault();
    const username = input("member-name").value.trim().toLowerCase();
    const room = current;
    if (client === null || room === null || !username) return;
    const rest = client.rest;
    void (async () => {
      const user = (await rest.searchUsers(username)).find((u) => u.username === username);
      if (user === undefined) {
        $("member-result").textContent = `no user ${username}`;
        return;
      }
      await rest.addMember(room, user.id);
      input("member-name").value = "";
      $("member-result").textContent = `added ${user.username}`;
      await loadMembers(room);
    })().catch((error: unknown) => showError("member-result", error));
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input("text").value;
    if (!text.trim()) return;
    input("text").value = "";
    void send(text);
  });
  input("text").addEventListener("input", () => {
    const now = Date.now();
    if (client !== null && current !== null && now - lastTypingSent > TYPING_SEND_EVERY_MS) {
      lastTypingSent = now;
      client.typing(current);
    }
  });
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 40) void loadOlder();
  });
}

function resume(): void {
  const raw = sessionStorage.getItem(SESSION_KEY);
  if (raw === null) return;
  const saved = JSON.parse(raw) as Saved;
  const rest = new RestClient(location.origin);
  me = saved.user;
  rest.user = saved.user;
  rest.useTokens(saved.tokens);
  void begin(rest);
}

wire();
resume();
