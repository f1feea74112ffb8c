import assert from "node:assert/strict";
import { test } from "node:test";
import { Client } from "../src/http.js";
import { RoomConnection, type Network } from "../src/room.js";
import type { ErrorFrame, Message } from "../src/types.js";
import { alice, FakeClock, FakeHttp, message, newEvent, settle, Sockets, token } from "./fakes.js";

interface Setup {
  clock: FakeClock;
  http: FakeHttp;
  sockets: Sockets;
  room: RoomConnection;
  client: Client;
  errors: ErrorFrame[];
  statuses: string[];
}

function setup(opts: { history?: Message[]; lastSeq?: number; expInSeconds?: number; network?: Network } = {}): Setup {
  const clock = new FakeClock();
  const http = new FakeHttp();
  let history = opts.history ?? [];
  let lastSeq = opts.lastSeq ?? history.length;
  http.on("GET /api/rooms/alice/den/messages", () => ({ status: 200, body: { messages: history, last_seq: lastSeq } }));
  http.on("GET /api/rooms/alice/den", () => ({ status: 200, body: { host: "alice", slug: "den", participants: [], last_seq: lastSeq } }));
  http.on("POST /api/auth/refresh", () => ({
    status: 200,
    body: { token: token(Math.floor(clock.now() / 1000) + 600, "new"), refresh: "r2" },
  }));
  const store = new Map<string, string>();
  const exp = Math.floor(clock.now() / 1000) + (opts.expInSeconds ?? 600);
  store.set("roomcast.session", JSON.stringify({ user: alice, token: token(exp), refresh: "r1" }));
  const storage = { getItem: (k: string) => store.get(k) ?? null, setItem: (k: string, v: string) => void store.set(k, v), removeItem: (k: string) => void store.delete(k) };
  const client = new Client({ baseUrl: "http://server", fetch: http.fetch, clock, storage });
  const sockets = new Sockets();
  let n = 0;
  const room = new RoomConnection(client, "alice", "den", {
    socket: sockets.factory,
    clock,
    network: opts.network ?? null,
    backoff: { baseMs: 1000, maxMs: 8000, random: () => 0.999999 },
    newClientId: () => `c${++n}`,
  });
  const errors: ErrorFrame[] = [];
  const statuses: string[] = [];
  room.on("error", (e) => errors.push(e));
  room.on("change", (s) => {
    if (statuses[statuses.length - 1] !== s.status) statuses.push(s.status);
  });
  void history;
  void lastSeq;
  const self = { clock, http, sockets, room, client, errors, statuses } as Setup & { setHistory: (m: Message[], s: number) => void };
  self.setHistory = (m, s) => {
    history = m;
    lastSeq = s;
  };
  return self;
}

/** Opens the latest socket and plays the server's catch-up. */
function connect(s: Setup, replay: unknown[] = []) {
  const sock = s.sockets.last;
  sock.open();
  for (const f of replay) sock.push(f);
  sock.push({ type: "chat_event", action: "synced", seq: s.room.state.lastSeq });
  return sock;
}

/** A room on an empty history, started and connected. */
async function started(): Promise<Setup> {
  const s = setup();
  s.room.start();
  await settle();
  connect(s);
  return s;
}

const bodies = (s: Setup) => s.room.state.messages.map((m) => m.body);

test("history loads over HTTP, then the socket resumes after its last seq", async () => {
  const s = setup({ history: [message(1), message(2)], lastSeq: 2 });
  s.room.start();
  await settle();
  assert.equal(s.sockets.all.length, 1);
  assert.equal(s.sockets.last.url, "ws://server/ws/chat/alice/den?since=2");
  assert.equal(s.room.state.status, "connecting");
  connect(s, [newEvent(3)]);
  assert.equal(s.room.state.status, "connected");
  assert.deepEqual(bodies(s), ["m1", "m2", "m3"]);
});

test("after a drop it reconnects with backoff and resumes without duplicates", async () => {
  const s = setup({ history: [message(1)], lastSeq: 1 });
  s.room.start();
  await settle();
  connect(s, [newEvent(2)]);
  s.sockets.last.drop(1006);
  await settle();
  assert.equal(s.room.state.status, "reconnecting");
  assert.equal(s.sockets.all.length, 1);
  await s.clock.advance(999);
  assert.equal(s.sockets.all.length, 1, "waits for the backoff delay");
  await s.clock.advance(1);
  assert.equal(s.sockets.all.length, 2);
  assert.equal(s.sockets.last.url, "ws://server/ws/chat/alice/den?since=2");
  // The server replays from 3; a stray repeat of 2 changes nothing.
  connect(s, [newEvent(2), newEvent(3), newEvent(3)]);
  assert.deepEqual(bodies(s), ["m1", "m2", "m3"]);
  assert.deepEqual(s.statuses, ["connecting", "connected", "reconnecting", "connected"]);
});

test("failed attempts back off exponentially and never stop", async () => {
  const s = setup();
  s.http.on("GET /api/rooms/alice/den", () => "network-down");
  s.room.start();
  await settle();
  connect(s);
  const delays: number[] = [];
  for (let i = 0; i < 12; i++) {
    s.sockets.last.drop(1006);
    await settle();
    const [delay] = s.clock.pending();
    assert.ok(delay !== undefined, "a retry is always armed");
    delays.push(delay);
    await s.clock.advance(delay);
  }
  assert.deepEqual(delays.slice(0, 5), [1000, 2000, 4000, 8000, 8000]);
  assert.equal(s.sockets.all.length, 13);
  assert.equal(s.room.state.status, "reconnecting");
  // Once connected again, the next drop starts from the base delay.
  connect(s);
  s.sockets.last.drop(1001);
  await settle();
  assert.equal(s.clock.pending()[0], 1000);
});

test("a clean close from the server is retried too", async () => {
  const s = await started();
  s.sockets.last.drop(1000);
  await settle();
  await s.clock.advance(1000);
  assert.equal(s.sockets.all.length, 2);
});

test("a message typed offline waits in the pending list and is sent once when back", async () => {
  const s = await started();
  s.sockets.last.drop(1006);
  await settle();
  assert.equal(s.room.send("while away"), "c1");
  assert.deepEqual(s.room.state.pending.map((p) => p.body), ["while away"]);
  await s.clock.advance(1000);
  const sock = s.sockets.last;
  sock.open();
  assert.equal(sock.ofType("text").length, 0, "not before the replay is done");
  sock.push({ type: "chat_event", action: "synced", seq: 0 });
  assert.deepEqual(sock.ofType("text").map((f) => [f.message, f.clientId]), [["while away", "c1"]]);
  // Its own new event takes it out of the pending list, into the messages.
  sock.push(newEvent(1, "while away", { user: "alice", clientId: "c1" }));
  assert.deepEqual(s.room.state.pending, []);
  assert.deepEqual(bodies(s), ["while away"]);
  // A later reconnect does not send it again.
  sock.drop(1006);
  await settle();
  await s.clock.advance(1000);
  connect(s);
  assert.equal(s.sockets.last.ofType("text").length, 0);
});

test("a message sent but unconfirmed before a drop is sent again with the same clientId", async () => {
  const s = await started();
  s.room.send("hello");
  assert.equal(s.sockets.last.ofType("text").length, 1);
  s.sockets.last.drop(1006);
  await settle();
  await s.clock.advance(1000);
  const sock = connect(s);
  assert.deepEqual(sock.ofType("text").map((f) => f.clientId), ["c1"]);
  // The server answers a repeat with the original event: shown once.
  sock.push(newEvent(1, "hello", { user: "alice", clientId: "c1" }));
  sock.push(newEvent(1, "hello", { user: "alice", clientId: "c1" }));
  assert.deepEqual(bodies(s), ["hello"]);
  assert.equal(s.room.state.pending.length, 0);
});

test("a skipped seq makes it resume from what it holds", async () => {
  const s = setup({ history: [message(1)], lastSeq: 1 });
  s.room.start();
  await settle();
  const first = connect(s);
  first.push(newEvent(3));
  assert.equal(first.closedWith, 1000);
  await s.clock.advance(0);
  assert.equal(s.sockets.all.length, 2);
  assert.equal(s.sockets.last.url, "ws://server/ws/chat/alice/den?since=1");
  connect(s, [newEvent(2), newEvent(3)]);
  assert.deepEqual(bodies(s), ["m1", "m2", "m3"]);
});

test("a reset reloads history over HTTP", async () => {
  const s = setup({ history: [message(1)], lastSeq: 1 }) as Setup & { setHistory: (m: Message[], n: number) => void };
  s.room.start();
  await settle();
  connect(s);
  s.sockets.last.drop(1006);
  await settle();
  s.setHistory([message(40), message(41)], 41);
  await s.clock.advance(1000);
  const sock = s.sockets.last;
  sock.open();
  sock.push({ type: "chat_event", action: "reset", seq: 41 });
  sock.push(newEvent(42));
  await settle();
  assert.equal(s.http.count("GET /api/rooms/alice/den/messages"), 2);
  assert.deepEqual(bodies(s), ["m40", "m41", "m42"]);
  assert.equal(s.room.state.lastSeq, 42);
});

test("a 1008 token-expired close refreshes the session and reconnects at once", async () => {
  const s = setup({ expInSeconds: 30 });
  s.room.start();
  await settle();
  assert.equal(s.http.count("POST /api/auth/refresh"), 0);
  connect(s);
  s.sockets.last.drop(1008, "Token expired.");
  await settle();
  assert.equal(s.http.count("POST /api/auth/refresh"), 1);
  await s.clock.advance(0);
  assert.equal(s.sockets.all.length, 2);
  connect(s);
  assert.equal(s.room.state.status, "connected");
  assert.equal(s.room.state.endReason, null);
});

test("another 1008 (flooding) is retried with backoff, not the end", async () => {
  const s = await started();
  s.sockets.last.drop(1008, "Too many messages.");
  await settle();
  assert.equal(s.room.state.status, "reconnecting");
  assert.equal(s.room.state.endReason, null);
  await s.clock.advance(1000);
  assert.equal(s.sockets.all.length, 2);
});

test("a 1008 for a revoked membership ends with a clear status and no retries", async () => {
  const s = await started();
  s.sockets.last.drop(1008, "Membership revoked.");
  await settle();
  await s.clock.advance(120_000);
  assert.equal(s.sockets.all.length, 1);
  assert.equal(s.room.state.status, "offline");
  assert.equal(s.room.state.endReason, "revoked");
});

test("a refused handshake for a room that is no longer ours ends as revoked", async () => {
  const s = await started();
  s.sockets.last.drop(1006);
  await settle();
  s.http.on("GET /api/rooms/alice/den", () => ({ status: 404, body: { error: "Room not found.", code: "not_found" } }));
  await s.clock.advance(1000);
  s.sockets.last.drop(1006);
  await settle();
  assert.equal(s.room.state.endReason, "revoked");
  assert.equal(s.room.state.status, "offline");
});

test("an error frame for a pending message reports it and drops it", async () => {
  const s = setup();
  s.room.start();
  await settle();
  const sock = connect(s);
  s.room.send("x".repeat(501));
  sock.push({ error: "Message exceeds 500 characters.", code: "too_long", clientId: "c1" });
  assert.deepEqual(s.errors.map((e) => e.error), ["Message exceeds 500 characters."]);
  assert.equal(s.room.state.pending.length, 0);
});

test("edit, delete and typing are frames on the live socket; unknown frames are ignored", async () => {
  const s = setup({ history: [message(1, "hi", { user: "alice" })], lastSeq: 1 });
  s.room.start();
  await settle();
  assert.equal(s.room.edit("id-1", "x"), false, "not before connected");
  const sock = connect(s);
  assert.equal(s.room.edit("id-1", "hello"), true);
  assert.equal(s.room.remove("id-1"), true);
  s.room.typing();
  s.room.typing();
  assert.deepEqual(sock.sent.map((f) => f.type), ["update", "delete", "typing"]);
  // At most one per interval, even across a send (the server refuses more).
  s.room.send("done");
  s.room.typing();
  assert.deepEqual(sock.sent.map((f) => f.type), ["update", "delete", "typing", "text"]);
  await s.clock.advance(2_500);
  s.room.typing();
  assert.deepEqual(sock.sent.map((f) => f.type), ["update", "delete", "typing", "text", "typing"]);
  sock.push({ type: "chat_event", action: "from_the_future", x: 1 });
  sock.push({ type: "something_else" });
  sock.push({ type: "chat_message", action: "update", id: "id-1", body: "hello", edited: true, updated: "t", seq: 2 });
  assert.deepEqual(s.room.state.messages.map((m) => [m.body, m.edited]), [["hello", true]]);
});

test("who is typing shows for a while, then expires", async () => {
  const s = setup();
  s.room.start();
  await settle();
  const sock = connect(s);
  sock.push({ type: "chat_event", action: "typing", user: "bob" });
  assert.deepEqual(s.room.state.typing, ["bob"]);
  await s.clock.advance(5000);
  assert.deepEqual(s.room.state.typing, []);
});

test("with the device offline it says offline and comes back when the network does", async () => {
  let online = true;
  const handlers = new Set<() => void>();
  const network: Network = {
    get onLine() {
      return online;
    },
    addEventListener: (_t, fn) => void handlers.add(fn),
    removeEventListener: (_t, fn) => void handlers.delete(fn),
  };
  const s = setup({ network });
  s.room.start();
  await settle();
  connect(s);
  online = false;
  s.sockets.last.drop(1006);
  await settle();
  assert.equal(s.room.state.status, "offline");
  assert.equal(s.room.state.endReason, null);
  online = true;
  for (const fn of [...handlers]) fn();
  await settle();
  assert.equal(s.sockets.all.length, 2);
  assert.equal(s.room.state.status, "reconnecting");
});
