import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiError, Client } from "../src/http.js";
import { alice, FakeClock, FakeHttp, settle, token } from "./fakes.js";

function memory(): Storage {
  const m = new Map<string, string>();
  return {
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
  } as Storage;
}

function signedIn(clock: FakeClock, http: FakeHttp, expInSeconds = 600) {
  const storage = memory();
  const exp = Math.floor(clock.now() / 1000) + expInSeconds;
  storage.setItem("roomcast.session", JSON.stringify({ user: alice, token: token(exp, "first"), refresh: "r1" }));
  return new Client({ baseUrl: "http://server", fetch: http.fetch, clock, storage, refreshMarginMs: 60_000 });
}

test("log in sends a username or an email and keeps the session", async () => {
  const http = new FakeHttp().on("POST /api/auth/login", () => ({
    status: 200,
    body: { user: alice, token: token(9_999_999_999), refresh: "r" },
  }));
  const client = new Client({ baseUrl: "http://server", fetch: http.fetch, clock: new FakeClock() });
  await client.login("alice", "pw");
  await client.login("alice@example.com", "pw");
  assert.deepEqual(http.requests.map((r) => r.body), [
    { username: "alice", password: "pw" },
    { email: "alice@example.com", password: "pw" },
  ]);
  assert.equal(client.user?.username, "alice");
});

test("the access token is refreshed a margin before it expires", async () => {
  const clock = new FakeClock();
  const http = new FakeHttp().on("POST /api/auth/refresh", (req) => {
    assert.deepEqual(req.body, { refresh: "r1" });
    return { status: 200, body: { token: token(Math.floor(clock.now() / 1000) + 600, "second"), refresh: "r2" } };
  });
  const client = signedIn(clock, http, 600);
  await clock.advance(600_000 - 60_000 - 1);
  assert.equal(http.count("POST /api/auth/refresh"), 0);
  await clock.advance(1);
  assert.equal(http.count("POST /api/auth/refresh"), 1);
  assert.match(client.token ?? "", /^[^.]+\.[^.]+\.sig$/);
  // The next one is armed from the new token's expiry.
  assert.deepEqual(clock.pending(), [540_000]);
});

test("a short-lived token is refreshed at four fifths of its life, not in a loop", async () => {
  const clock = new FakeClock();
  const http = new FakeHttp().on("POST /api/auth/refresh", () => ({
    status: 200,
    body: { token: token(Math.floor(clock.now() / 1000) + 10), refresh: "r2" },
  }));
  signedIn(clock, http, 10);
  await clock.advance(7_999);
  assert.equal(http.count("POST /api/auth/refresh"), 0);
  await clock.advance(1);
  assert.equal(http.count("POST /api/auth/refresh"), 1);
  await clock.advance(8_000);
  assert.equal(http.count("POST /api/auth/refresh"), 2);
});

test("a 401 refreshes once and retries the request with the new token", async () => {
  const clock = new FakeClock();
  let calls = 0;
  const http = new FakeHttp()
    .on("GET /api/me", (req) => {
      calls += 1;
      return calls === 1
        ? { status: 401, body: { error: "Invalid or expired token.", code: "unauthorized" } }
        : { status: 200, body: { ...alice, name: req.headers.Authorization?.includes("fresh") ? "fresh" : "stale" } };
    })
    .on("POST /api/auth/refresh", () => ({ status: 200, body: { token: "h." + Buffer.from('{"tag":"fresh"}').toString("base64url") + ".s", refresh: "r2" } }));
  const client = signedIn(clock, http);
  const me = await client.me();
  assert.equal(calls, 2);
  assert.equal(http.count("POST /api/auth/refresh"), 1);
  assert.ok(me);
});

test("a refused refresh token ends the session and tells listeners", async () => {
  const clock = new FakeClock();
  const http = new FakeHttp().on("POST /api/auth/refresh", () => ({ status: 401, body: { error: "no", code: "unauthorized" } }));
  const client = signedIn(clock, http);
  const heard: unknown[] = [];
  client.onSession((u) => heard.push(u));
  await assert.rejects(client.refresh(), ApiError);
  assert.equal(client.user, null);
  assert.deepEqual(heard, [null]);
});

test("a pair another tab rotated is taken over instead of spending a used refresh token", async () => {
  const clock = new FakeClock();
  const http = new FakeHttp().on("POST /api/auth/refresh", () => ({ status: 401, body: { error: "used", code: "unauthorized" } }));
  const storage = memory();
  const exp = Math.floor(clock.now() / 1000) + 600;
  storage.setItem("roomcast.session", JSON.stringify({ user: alice, token: token(exp, "tab"), refresh: "r1" }));
  const client = new Client({ baseUrl: "http://server", fetch: http.fetch, clock, storage });
  // The other tab refreshed: r1 is spent, r2 is in the shared storage.
  storage.setItem("roomcast.session", JSON.stringify({ user: alice, token: token(exp + 600, "other"), refresh: "r2" }));
  await client.refresh();
  assert.equal(http.count("POST /api/auth/refresh"), 0);
  assert.equal(client.user?.username, "alice");
  assert.equal(client.token, token(exp + 600, "other"));
});

test("refreshes are shared: concurrent callers make one request", async () => {
  const clock = new FakeClock();
  const http = new FakeHttp().on("POST /api/auth/refresh", () => ({ status: 200, body: { token: token(9_999_999_999), refresh: "r2" } }));
  const client = signedIn(clock, http);
  await Promise.all([client.refresh(), client.refresh(), client.refresh()]);
  await settle();
  assert.equal(http.count("POST /api/auth/refresh"), 1);
});

test("errors keep the API's code and sentence", async () => {
  const http = new FakeHttp().on("POST /api/rooms", () => ({ status: 409, body: { error: "You already have a room with that slug.", code: "conflict" } }));
  const client = signedIn(new FakeClock(), http);
  await assert.rejects(client.createRoom({ name: "x" }), (e: unknown) => e instanceof ApiError && e.status === 409 && e.code === "conflict");
});

test("the socket URL resumes with since", () => {
  const client = new Client({ baseUrl: "https://chat.example", fetch: new FakeHttp().fetch, clock: new FakeClock() });
  assert.equal(client.socketUrl("alice", "book-club", 7), "wss://chat.example/ws/chat/alice/book-club?since=7");
  assert.equal(client.socketUrl("alice", "book-club"), "wss://chat.example/ws/chat/alice/book-club");
});
