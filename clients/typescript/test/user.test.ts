import assert from "node:assert/strict";
import { test } from "node:test";
import { Client } from "../src/http.js";
import { type UserEvent, UserFeed } from "../src/user.js";
import { alice, FakeClock, FakeHttp, Sockets, settle, token } from "./fakes.js";

function setup() {
  const clock = new FakeClock();
  const http = new FakeHttp();
  const store = new Map([["roomcast.session", JSON.stringify({ user: alice, token: token(9_999_999_999), refresh: "r" })]]);
  const storage = { getItem: (k: string) => store.get(k) ?? null, setItem: (k: string, v: string) => void store.set(k, v), removeItem: (k: string) => void store.delete(k) };
  const client = new Client({ baseUrl: "http://server", fetch: http.fetch, clock, storage });
  const sockets = new Sockets();
  const feed = new UserFeed(client, { socket: sockets.factory, clock, backoff: { baseMs: 1000, random: () => 0.999999 } });
  const events: UserEvent[] = [];
  let unavailable = 0;
  feed.on("event", (e) => events.push(e));
  feed.on("unavailable", () => void (unavailable += 1));
  return { clock, sockets, feed, events, unavailable: () => unavailable };
}

test("activity and membership events come through typed; others are ignored", () => {
  const s = setup();
  s.feed.start();
  assert.equal(s.sockets.last.url, "ws://server/ws/user");
  s.sockets.last.open();
  s.sockets.last.push({ type: "chat_event", action: "activity", room: "alice/den", seq: 4, unread: 2 });
  s.sockets.last.push({ type: "chat_event", action: "added", room: "bob/club" });
  s.sockets.last.push({ type: "chat_event", action: "something_new", room: "x/y" });
  assert.deepEqual(s.events, [
    { action: "activity", room: "alice/den", seq: 4, unread: 2 },
    { action: "added", room: "bob/club" },
  ]);
});

test("a server without /ws/user is reported unavailable after a few refusals", async () => {
  const s = setup();
  s.feed.start();
  for (let i = 0; i < 3; i++) {
    s.sockets.last.drop(1006);
    await s.clock.advance(60_000);
  }
  assert.equal(s.unavailable(), 1);
  assert.equal(s.sockets.all.length, 3);
});

test("once it has worked, drops are retried with backoff, never given up", async () => {
  const s = setup();
  s.feed.start();
  s.sockets.last.open();
  for (let i = 0; i < 10; i++) {
    s.sockets.last.drop(1006);
    await s.clock.advance(60_000);
    await settle();
  }
  assert.equal(s.sockets.all.length, 11);
  assert.equal(s.unavailable(), 0);
});
