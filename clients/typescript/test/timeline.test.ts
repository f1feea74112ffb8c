import assert from "node:assert/strict";
import { test } from "node:test";
import { type MessageEvent, Timeline } from "../src/timeline.js";
import { message, newEvent } from "./fakes.js";

const ev = (e: unknown) => e as MessageEvent;

test("events apply in seq order and a replayed one is dropped", () => {
  const t = new Timeline();
  t.reset([], 0);
  assert.equal(t.apply(ev(newEvent(1))), "applied");
  assert.equal(t.apply(ev(newEvent(2))), "applied");
  assert.equal(t.apply(ev(newEvent(1))), "duplicate");
  assert.equal(t.apply(ev(newEvent(2))), "duplicate");
  assert.deepEqual(t.messages.map((m) => m.body), ["m1", "m2"]);
  assert.equal(t.lastSeq, 2);
});

test("an event that skips a seq is refused as a gap and changes nothing", () => {
  const t = new Timeline();
  t.reset([message(1)], 1);
  assert.equal(t.apply(ev(newEvent(3))), "gap");
  assert.equal(t.lastSeq, 1);
  assert.equal(t.messages.length, 1);
});

test("update and delete change the message they name", () => {
  const t = new Timeline();
  t.reset([message(1), message(2)], 2);
  t.apply(ev({ type: "chat_message", action: "update", id: "id-1", body: "fixed", edited: true, updated: "x", seq: 3 }));
  t.apply(ev({ type: "chat_message", action: "delete", id: "id-2", seq: 4 }));
  assert.deepEqual(
    t.messages.map((m) => [m.body, m.edited]),
    [["fixed", true]],
  );
});

test("a deleted message replayed with an empty body ends deleted", () => {
  const t = new Timeline();
  t.reset([], 0);
  t.apply(ev(newEvent(1, "")));
  t.apply(ev({ type: "chat_message", action: "delete", id: "id-1", seq: 2 }));
  assert.equal(t.messages.length, 0);
  assert.equal(t.lastSeq, 2);
});

test("a message already held from history is replaced, never doubled", () => {
  const t = new Timeline();
  t.reset([message(1), message(2)], 1);
  t.apply(ev(newEvent(2)));
  assert.deepEqual(t.messages.map((m) => m.id), ["id-1", "id-2"]);
});

test("older pages go in front, in order, without duplicates", () => {
  const t = new Timeline();
  t.reset([message(5), message(6)], 6);
  t.prepend([message(3), message(4), message(5)]);
  assert.deepEqual(t.messages.map((m) => m.seq), [3, 4, 5, 6]);
});
