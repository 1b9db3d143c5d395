// @hypersend/client against real chat server processes. The pytest side starts them
// (tests/integration/client/test_typescript_client.py) and passes:
//   HYPERSEND_URL        a server with 4 s access tokens (so refreshes happen during the run)
//   HYPERSEND_DRAIN_URL  a server this file drains (SIGTERM to HYPERSEND_DRAIN_PID)
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, test } from "node:test";

import {
  AuthError,
  Client,
  CloseError,
  ServerRestarting,
  SendError,
  TransportError,
  Unauthorized,
  backoffDelay,
  closeError,
  type ClientEvent,
} from "../src/index.js";

const URL = process.env.HYPERSEND_URL ?? "";
const DRAIN_URL = process.env.HYPERSEND_DRAIN_URL ?? "";
const DRAIN_PID = Number(process.env.HYPERSEND_DRAIN_PID ?? "0");
const PASSWORD = "correct horse 1";

const opened: Client[] = [];
after(async () => {
  await Promise.all(opened.map((c) => c.close()));
});

/** A signed-up client whose events are all recorded in `seen`. */
async function signedUp(url = URL): Promise<{ client: Client; seen: ClientEvent[] }> {
  const client = new Client(url);
  opened.push(client);
  const seen: ClientEvent[] = [];
  client.on((event) => seen.push(event));
  await client.register(`t${randomBytes(5).toString("hex")}`, PASSWORD);
  return { client, seen };
}

function texts(seen: ClientEvent[], room: string): string[] {
  return seen.flatMap((e) => (e.type === "message" && e.room_id === room ? [e.message.text] : []));
}

/** Wait until `condition` holds, re-checked on every event of `client`. */
function until(client: Client, condition: () => boolean, timeoutMs = 30_000): Promise<void> {
  if (condition()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error("condition not met in time"));
    }, timeoutMs);
    const off = client.on(() => {
      if (condition()) {
        clearTimeout(timer);
        off();
        resolve();
      }
    });
  });
}

test("pure parts: jittered backoff and one error class per close code", () => {
  for (const [attempt, ceiling] of [[0, 0.5], [3, 4], [40, 15]] as const) {
    for (let i = 0; i < 100; i++) {
      const delay = backoffDelay({ base: 0.5, cap: 15 }, attempt);
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `${attempt}: ${delay}`);
    }
  }
  assert.ok(closeError(1012) instanceof ServerRestarting);
  const unauthorized = closeError(4401, "expired");
  assert.ok(unauthorized instanceof Unauthorized && unauthorized.refresh);
  assert.equal(closeError(4400).retryable, false);
  assert.equal(closeError(undefined).closeCode, 1006);
});

test("two clients chat; the sender gets the stored message", async () => {
  const alice = await signedUp();
  const bob = await signedUp();
  const room = await alice.client.rest.createGroup("team", [bob.client.userId!]);
  await Promise.all([alice.client.start(), bob.client.start()]);
  const stored = await alice.client.send(room.id, "hello bob");
  assert.equal(stored.seq, 1);
  assert.equal(stored.sender_id, alice.client.userId);
  await until(bob.client, () => texts(bob.seen, room.id).length === 1);
  assert.deepEqual(texts(bob.seen, room.id), ["hello bob"]);
  const page = await bob.client.rest.history(room.id);
  assert.deepEqual(
    page.messages.map((m) => m.text),
    ["hello bob"],
  );
});

test("a dropped connection reconnects, resumes, and pending sends are acked once", async () => {
  const alice = await signedUp();
  const bob = await signedUp();
  const room = await alice.client.rest.createGroup("drops", [bob.client.userId!]);
  await Promise.all([alice.client.start(), bob.client.start()]);
  await alice.client.send(room.id, "one");
  await until(bob.client, () => texts(bob.seen, room.id).length === 1);

  const reconnecting = bob.client.waitFor("reconnecting");
  bob.client.dropConnection();
  const whileAway = bob.client.send(room.id, "bob while away", "bob-away-1");
  await alice.client.send(room.id, "two");
  await alice.client.send(room.id, "three");
  assert.ok((await reconnecting).error instanceof CloseError);
  await bob.client.waitLive();
  const stored = await whileAway;
  await until(bob.client, () => texts(bob.seen, room.id).length === 4);
  assert.deepEqual(texts(bob.seen, room.id).sort(), ["bob while away", "one", "three", "two"]);
  const seqs = bob.seen.flatMap((e) => (e.type === "message" ? [e.seq] : []));
  assert.deepEqual(seqs, [1, 2, 3, 4]);
  const history = await alice.client.rest.allMessages(room.id);
  assert.equal(history.filter((m) => m.client_id === "bob-away-1").length, 1);
  assert.equal(stored.client_id, "bob-away-1");
});

test("the access token is refreshed before it expires", async () => {
  const { client, seen } = await signedUp();
  await client.start();
  // Two refreshes without any call of ours (4 s tokens): the first one has expired by then.
  await until(client, () => seen.filter((e) => e.type === "tokens").length >= 2);
  client.dropConnection();
  await client.waitFor("connected");
  const errors = seen.flatMap((e) => (e.type === "reconnecting" ? [e.error] : []));
  assert.ok(errors.every((e) => !(e instanceof Unauthorized)), String(errors));
  assert.equal((await client.rest.me()).id, client.userId);
});

test("refused sends and logins raise their error types", async () => {
  const outsider = await signedUp();
  const owner = await signedUp();
  const room = await owner.client.rest.createGroup("private", []);
  await outsider.client.start();
  await assert.rejects(outsider.client.send(room.id, "let me in"), (error: unknown) => {
    assert.ok(error instanceof SendError);
    assert.equal(error.code, "not_member");
    return true;
  });
  const stranger = new Client(URL);
  opened.push(stranger);
  await assert.rejects(stranger.login("nobody-here", PASSWORD), (error: unknown) => {
    assert.ok(error instanceof AuthError);
    assert.equal(error.code, "invalid_credentials");
    return true;
  });
});

test("a frozen server is noticed by its silence, and left", { skip: !DRAIN_PID }, async () => {
  // The drain server pings every 0.5 s; a stopped process keeps its TCP connections open.
  const client = new Client(DRAIN_URL, { silenceTimeoutMs: 2000 });
  opened.push(client);
  await client.register(`t${randomBytes(5).toString("hex")}`, PASSWORD);
  await client.start();
  const reconnecting = client.waitFor("reconnecting");
  process.kill(DRAIN_PID, "SIGSTOP");
  try {
    const event = await reconnecting;
    assert.ok(event.error instanceof TransportError, String(event.error));
  } finally {
    process.kill(DRAIN_PID, "SIGCONT");
  }
  await client.waitFor("connected");
  await client.close();
});

test("a draining server's reconnect hint sets the delay", { skip: !DRAIN_PID }, async () => {
  const { client } = await signedUp(DRAIN_URL);
  await client.start();
  const reconnecting = client.waitFor("reconnecting");
  process.kill(DRAIN_PID, "SIGTERM");
  const event = await reconnecting;
  assert.ok(event.error instanceof ServerRestarting, String(event.error));
  assert.ok(event.delay >= 0.25 && event.delay <= 5, String(event.delay));
  await client.close();
});
