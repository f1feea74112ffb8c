// Test doubles: a clock that only moves when told, sockets the test opens
// and closes by hand, and a fetch that answers from a table.
import type { Clock } from "../src/clock.js";
import type { SocketLike } from "../src/room.js";

export class FakeClock implements Clock {
  time = 1_700_000_000_000;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private nextId = 1;
  now(): number {
    return this.time;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.time + Math.max(0, ms), fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }
  /** Delays of the timers now armed, soonest first. */
  pending(): number[] {
    return this.timers.map((t) => t.at - this.time).sort((a, b) => a - b);
  }
  /** Moves time forward, firing due timers in order (and the promises they start). */
  async advance(ms: number): Promise<void> {
    const until = this.time + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > until) break;
      this.timers.shift();
      this.time = next.at;
      next.fn();
      await settle();
    }
    this.time = until;
    await settle();
  }
}

/** Lets every pending promise callback run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}

export class FakeSocket implements SocketLike {
  sent: Record<string, unknown>[] = [];
  closedWith: number | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string; wasClean?: boolean }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string) {}
  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(code = 1000): void {
    this.closedWith = code;
  }
  // What the server does:
  open(): void {
    this.onopen?.({});
  }
  push(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006, reason = ""): void {
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }
  /** Frames of one type sent by the client. */
  ofType(type: string): Record<string, unknown>[] {
    return this.sent.filter((f) => f.type === type);
  }
}

/** Opens sockets on demand and remembers them. */
export class Sockets {
  all: FakeSocket[] = [];
  factory = (url: string): FakeSocket => {
    const s = new FakeSocket(url);
    this.all.push(s);
    return s;
  };
  get last(): FakeSocket {
    const s = this.all[this.all.length - 1];
    if (!s) throw new Error("no socket opened");
    return s;
  }
}

type Reply = { status: number; body?: unknown } | "network-down";
type Route = (req: { method: string; path: string; body: unknown; headers: Record<string, string> }) => Reply;

/** A fetch answering from routes keyed by "METHOD /path" (query ignored for the key). */
export class FakeHttp {
  routes = new Map<string, Route>();
  requests: { method: string; path: string; body: unknown; headers: Record<string, string> }[] = [];
  on(key: string, route: Route): this {
    this.routes.set(key, route);
    return this;
  }
  fetch = (async (input: string, init: RequestInit = {}) => {
    const url = new URL(input, "http://server");
    const method = init.method ?? "GET";
    const body = init.body ? JSON.parse(String(init.body)) : undefined;
    const headers = (init.headers ?? {}) as Record<string, string>;
    const req = { method, path: url.pathname + url.search, body, headers };
    this.requests.push(req);
    const route = this.routes.get(`${method} ${url.pathname}`);
    const reply: Reply = route ? route(req) : { status: 404, body: { error: "No such endpoint.", code: "not_found" } };
    if (reply === "network-down") throw new TypeError("Failed to fetch");
    const text = reply.body === undefined ? "" : JSON.stringify(reply.body);
    return new Response(reply.status === 204 ? null : text, { status: reply.status });
  }) as unknown as typeof fetch;
  count(key: string): number {
    return this.requests.filter((r) => `${r.method} ${r.path.split("?")[0]}` === key).length;
  }
}

/** An unsigned JWT-shaped token expiring at `exp` (seconds); the client only reads `exp`. */
export function token(exp: number, tag = "a"): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256" })}.${b64({ exp, tag })}.sig`;
}

export const alice = { id: "u-alice", username: "alice", name: "", avatar: null };

export function message(seq: number, body = `m${seq}`, extra: Record<string, unknown> = {}) {
  return {
    id: `id-${seq}`,
    user: "bob",
    user_id: "u-bob",
    body,
    created: new Date(1_700_000_000_000 + seq * 1000).toISOString(),
    edited: false,
    updated: new Date(1_700_000_000_000 + seq * 1000).toISOString(),
    userAvatar: null,
    seq,
    ...extra,
  };
}

export function newEvent(seq: number, body = `m${seq}`, extra: Record<string, unknown> = {}) {
  return { type: "chat_message", action: "new", ...message(seq, body, extra) };
}
