import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../src/backoff.js";

test("delays double from the base up to the cap", () => {
  const b = new Backoff({ baseMs: 100, maxMs: 1000, random: () => 0.999999 });
  const delays = Array.from({ length: 7 }, () => b.next());
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
});

test("jitter keeps each delay within the upper half of its step", () => {
  for (const r of [0, 0.25, 0.5, 0.75, 0.99]) {
    const b = new Backoff({ baseMs: 400, maxMs: 10_000, random: () => r });
    const first = b.next();
    assert.ok(first >= 200 && first <= 400, `${first}`);
    const second = b.next();
    assert.ok(second >= 400 && second <= 800, `${second}`);
  }
  const low = new Backoff({ baseMs: 400, random: () => 0 }).next();
  const high = new Backoff({ baseMs: 400, random: () => 0.99 }).next();
  assert.notEqual(low, high);
});

test("it never gives up: the thousandth delay is still a finite capped delay", () => {
  const b = new Backoff({ baseMs: 500, maxMs: 30_000, random: () => 0.5 });
  let last = 0;
  for (let i = 0; i < 1000; i++) last = b.next();
  assert.equal(b.attempts, 1000);
  assert.ok(Number.isFinite(last) && last >= 15_000 && last <= 30_000);
});

test("reset starts from the base again", () => {
  const b = new Backoff({ baseMs: 100, random: () => 0.999999 });
  b.next();
  b.next();
  b.next();
  b.reset();
  assert.equal(b.next(), 100);
});
