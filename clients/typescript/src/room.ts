/**
 * A room connection: the protocol's state machine, so that views only show
 * state and call methods.
 *
 *     connecting --open--> connected --drop--> reconnecting --open--> connected
 *         any --1008 membership / room gone / session over / close()--> offline (ended)
 *
 * - History is loaded over HTTP first; the socket then resumes with
 *   `?since=<last seq>`, so nothing between the two is lost; a `reset` frame
 *   (the server no longer has that far back) reloads history over HTTP.
 * - Events are applied by `seq` through a {@link Timeline}: a replayed event
 *   is dropped, a skipped one makes the connection resume from what it has.
 * - Messages sent here carry a `clientId` and stay in the pending list until
 *   their own `new` event arrives; typed while disconnected, they are sent
 *   when the socket is back (the server drops a repeat of a `clientId`).
 * - Reconnects back off exponentially with jitter and never stop by
 *   themselves; the status says `reconnecting` all along.
 * - A 1008 "token expired" close refreshes the session and comes back at
 *   once; a 1008 for a revoked membership ends with status `offline` and
 *   `endReason` `revoked`; any other 1008 (flooding) is retried with backoff.
 */
import { Backoff, type BackoffOptions } from "./backoff.js";
import type { Clock } from "./clock.js";
import { ApiError, type Client } from "./http.js";
import { type MessageEvent, Timeline } from "./timeline.js";
import type { EndReason, ErrorFrame, Message, PendingMessage, Status } from "./types.js";

/** The part of the browser's `WebSocket` the connection uses. */
export interface SocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketFactory = (url: string) => SocketLike;

/** Whether the device has a network, and news when it comes back (`window` fits). */
export interface Network {
  readonly onLine: boolean;
  addEventListener(type: "online", fn: () => void): void;
  removeEventListener(type: "online", fn: () => void): void;
}

export interface RoomOptions {
  socket?: SocketFactory;
  clock?: Clock;
  backoff?: BackoffOptions;
  /** Messages per history page (at most 100). */
  pageSize?: number;
  newClientId?: () => string;
  network?: Network | null;
  /** How long a `typing` event shows. */
  typingTtlMs?: number;
  /** At most one `typing` frame per this many milliseconds. */
  typingEveryMs?: number;
}

/** Everything a view shows about the room. */
export interface RoomState {
  status: Status;
  /** Set when the connection ended for good. */
  endReason: EndReason | null;
  messages: readonly Message[];
  pending: readonly PendingMessage[];
  /** Who is typing now (never oneself). */
  typing: readonly string[];
  /** Who has a socket open in the room, when the server says. */
  presence: readonly string[] | null;
  /** Whether older history may exist. */
  hasOlder: boolean;
  lastSeq: number;
}

type Handlers = {
  change: (state: RoomState) => void;
  error: (frame: ErrorFrame) => void;
};

const CLOSE_NORMAL = 1000;
const CLOSE_POLICY = 1008;

let counter = 0;
function defaultClientId(): string {
  const c = globalThis.crypto as Crypto | undefined;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  counter += 1;
  return `c-${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 10)}`;
}

function defaultSocket(url: string): SocketLike {
  return new WebSocket(url) as unknown as SocketLike;
}

export class RoomConnection {
  readonly host: string;
  readonly slug: string;
  private readonly client: Client;
  private readonly clock: Clock;
  private readonly makeSocket: SocketFactory;
  private readonly backoff: Backoff;
  private readonly pageSize: number;
  private readonly newClientId: () => string;
  private readonly network: Network | null;
  private readonly typingTtl: number;
  private readonly typingEvery: number;

  private readonly timeline = new Timeline();
  private status: Status = "connecting";
  private endReason: EndReason | null = null;
  private pending: PendingMessage[] = [];
  private typingUntil = new Map<string, number>();
  private typingTimer: unknown = null;
  private presence: string[] | null = null;
  private hasOlder = false;
  private loaded = false;

  private socket: SocketLike | null = null;
  /** Increases with each socket, so a late callback of an old one is ignored. */
  private generation = 0;
  /** The current socket is open and has caught up (`synced`/`reset` done). */
  private live = false;
  private opened = false;
  private reloading: MessageEvent[] | null = null;
  /** clientIds already sent on the current socket. */
  private sentHere = new Set<string>();
  private retryTimer: unknown = null;
  private lastTypingSent = -Infinity;
  private tokenRetries = 0;
  private onlineHandler: (() => void) | null = null;
  private listeners: { [K in keyof Handlers]: Set<Handlers[K]> } = { change: new Set(), error: new Set() };

  constructor(client: Client, host: string, slug: string, options: RoomOptions = {}) {
    this.client = client;
    this.host = host;
    this.slug = slug;
    this.clock = options.clock ?? client.clock;
    this.makeSocket = options.socket ?? defaultSocket;
    this.backoff = new Backoff(options.backoff);
    this.pageSize = Math.min(100, options.pageSize ?? 50);
    this.newClientId = options.newClientId ?? defaultClientId;
    this.network = options.network === undefined ? defaultNetwork() : options.network;
    this.typingTtl = options.typingTtlMs ?? 5_000;
    // The server passes one `typing` per user every 2 s and counts refused
    // frames against the socket: stay clearly under it.
    this.typingEvery = options.typingEveryMs ?? 2_500;
  }

  /** A snapshot of everything a view shows. */
  get state(): RoomState {
    const now = this.clock.now();
    return {
      status: this.status,
      endReason: this.endReason,
      messages: this.timeline.messages.slice(),
      pending: this.pending.slice(),
      typing: [...this.typingUntil].filter(([, until]) => until > now).map(([user]) => user),
      presence: this.presence ? this.presence.slice() : null,
      hasOlder: this.hasOlder,
      lastSeq: this.timeline.lastSeq,
    };
  }

  on<K extends keyof Handlers>(event: K, fn: Handlers[K]): () => void {
    this.listeners[event].add(fn);
    return () => this.listeners[event].delete(fn);
  }

  /** Loads the latest history page and opens the socket. */
  start(): void {
    void this.connect();
  }

  /** Loads the page before the oldest message held; false when there is none. */
  async loadOlder(): Promise<boolean> {
    const oldest = this.timeline.oldest();
    if (!this.hasOlder || !oldest) return false;
    const page = await this.client.history(this.host, this.slug, { before: oldest.id, limit: this.pageSize });
    this.timeline.prepend(page.messages);
    this.hasOlder = page.messages.length >= this.pageSize;
    this.changed();
    return page.messages.length > 0;
  }

  /**
   * Sends a new message (now, or when the socket is back) and returns its
   * `clientId`; `null` for a blank body.
   */
  send(body: string): string | null {
    if (body.trim() === "" || this.endReason) return null;
    const message: PendingMessage = { clientId: this.newClientId(), body, created: new Date(this.clock.now()).toISOString() };
    this.pending.push(message);
    if (this.live) this.sendPending(message);
    this.changed();
    return message.clientId;
  }

  /** Forgets a pending message (it may still arrive if it was sent). */
  discard(clientId: string): void {
    this.pending = this.pending.filter((p) => p.clientId !== clientId);
    this.changed();
  }

  /** Edits one's own message; false when not connected. */
  edit(messageId: string, body: string): boolean {
    return this.frame({ type: "update", messageId, message: body, timestamp: this.now() });
  }

  /** Deletes one's own message; false when not connected. */
  remove(messageId: string): boolean {
    return this.frame({ type: "delete", messageId, timestamp: this.now() });
  }

  /** Tells the room this user is typing (throttled). */
  typing(): void {
    const now = this.clock.now();
    if (!this.live || now - this.lastTypingSent < this.typingEvery) return;
    this.lastTypingSent = now;
    this.frame({ type: "typing" });
  }

  /** Closes for good. */
  close(): void {
    this.end("closed");
  }

  // ---- connection lifecycle ----

  private async connect(): Promise<void> {
    this.retryTimer = null;
    if (this.endReason) return;
    try {
      await this.client.ensureFresh();
      if (!this.loaded) await this.loadLatest();
    } catch (e) {
      this.failed(e);
      return;
    }
    if (this.endReason) return;
    const generation = ++this.generation;
    const socket = this.makeSocket(this.client.socketUrl(this.host, this.slug, this.timeline.lastSeq));
    this.socket = socket;
    this.opened = false;
    this.live = false;
    this.sentHere.clear();
    socket.onopen = () => {
      if (generation !== this.generation) return;
      this.opened = true;
      this.setStatus("connected");
    };
    socket.onmessage = (ev) => {
      if (generation !== this.generation || typeof ev.data !== "string") return;
      this.receive(ev.data);
    };
    socket.onerror = () => {};
    socket.onclose = (ev) => {
      if (generation !== this.generation) return;
      this.closed(ev.code, ev.reason ?? "");
    };
  }

  private async loadLatest(): Promise<void> {
    const page = await this.client.history(this.host, this.slug, { limit: this.pageSize });
    this.timeline.reset(page.messages, page.last_seq);
    this.hasOlder = page.messages.length >= this.pageSize;
    this.loaded = true;
    this.changed();
  }

  private closed(code: number, reason: string): void {
    this.socket = null;
    this.live = false;
    if (this.endReason) return;
    if (code === CLOSE_POLICY && !/token/i.test(reason) && /member|revoked|removed/i.test(reason)) {
      this.end("revoked");
      return;
    }
    if (code === CLOSE_POLICY) {
      if (/token/i.test(reason)) {
        // The socket's token ran out: refresh, and come back at once (then
        // with backoff, should it keep happening).
        this.tokenRetries += 1;
        this.client
          .refresh()
          .then(() => this.retry(this.tokenRetries > 1))
          .catch((e) => this.failed(e));
        this.setStatus("reconnecting");
        return;
      }
      // Another policy close (say, flooding past the rate limit): come back
      // after a backoff; a room that is no longer ours shows on the retry.
      this.retry(true);
      return;
    }
    if (!this.opened) {
      // A refused handshake looks like a drop to a browser: ask over HTTP
      // whether the room is still ours before retrying.
      this.setStatus(this.status === "connecting" ? "connecting" : "reconnecting");
      this.client.room(this.host, this.slug).then(
        () => this.retry(true),
        (e) => this.failed(e),
      );
      return;
    }
    this.retry(true);
  }

  /** Decides, after an error, between ending and trying again. */
  private failed(e: unknown): void {
    if (this.endReason) return;
    if (!this.client.user) {
      this.end("signed-out");
    } else if (e instanceof ApiError && (e.status === 403 || e.status === 404)) {
      this.end("revoked");
    } else if (e instanceof ApiError && e.status === 401) {
      this.end("signed-out");
    } else {
      this.retry(true);
    }
  }

  /** Schedules the next attempt (after a backoff delay unless `now`). */
  private retry(backoff: boolean): void {
    if (this.endReason || this.retryTimer !== null) return;
    if (this.status !== "connecting") this.setStatus("reconnecting");
    if (this.network && !this.network.onLine) {
      this.setStatus("offline");
      const back = () => {
        this.stopWaitingForNetwork();
        this.setStatus("reconnecting");
        void this.connect();
      };
      this.stopWaitingForNetwork();
      this.onlineHandler = back;
      this.network.addEventListener("online", back);
      return;
    }
    const delay = backoff ? this.backoff.next() : 0;
    this.retryTimer = this.clock.setTimeout(() => void this.connect(), delay);
  }

  private stopWaitingForNetwork(): void {
    if (this.onlineHandler && this.network) this.network.removeEventListener("online", this.onlineHandler);
    this.onlineHandler = null;
  }

  private end(reason: EndReason): void {
    if (this.endReason) return;
    this.endReason = reason;
    this.live = false;
    this.generation += 1;
    if (this.retryTimer !== null) this.clock.clearTimeout(this.retryTimer);
    if (this.typingTimer !== null) this.clock.clearTimeout(this.typingTimer);
    this.retryTimer = null;
    this.stopWaitingForNetwork();
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(CLOSE_NORMAL);
    this.setStatus("offline");
  }

  // ---- frames ----

  private receive(text: string): void {
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    if (typeof frame.error === "string") {
      this.errorFrame(frame as unknown as ErrorFrame);
    } else if (frame.type === "chat_message") {
      this.event(frame as unknown as MessageEvent);
    } else if (frame.type === "chat_event") {
      this.chatEvent(frame);
    }
    // Anything else is from a newer server: ignored.
  }

  private event(event: MessageEvent): void {
    if (typeof event.seq !== "number") return;
    if (this.reloading) {
      this.reloading.push(event);
      return;
    }
    const result = this.timeline.apply(event);
    if (result === "gap") {
      // Something was missed: resume from what we hold.
      this.resync();
      return;
    }
    if (event.action === "new") {
      if (event.clientId) this.pending = this.pending.filter((p) => p.clientId !== event.clientId);
      if (result === "applied") this.typingUntil.delete(event.user);
    }
    if (result === "applied" || event.action === "new") this.changed();
  }

  private chatEvent(frame: Record<string, unknown>): void {
    switch (frame.action) {
      case "synced":
        this.caughtUp();
        break;
      case "reset":
        void this.reload();
        break;
      case "presence":
        if (Array.isArray(frame.users)) this.presence = frame.users.filter((u): u is string => typeof u === "string");
        this.changed();
        break;
      case "join":
        if (typeof frame.user === "string" && this.presence && !this.presence.includes(frame.user)) {
          this.presence = [...this.presence, frame.user];
          this.changed();
        }
        break;
      case "leave":
        if (typeof frame.user === "string" && this.presence) {
          this.presence = this.presence.filter((u) => u !== frame.user);
          this.changed();
        }
        break;
      case "typing":
        if (typeof frame.user === "string" && frame.user !== this.client.user?.username) {
          this.typingUntil.set(frame.user, this.clock.now() + this.typingTtl);
          this.armTypingExpiry();
          this.changed();
        }
        break;
      default:
        break;
    }
  }

  private errorFrame(frame: ErrorFrame): void {
    const mine = frame.clientId ? this.pending.find((p) => p.clientId === frame.clientId) : undefined;
    if (mine) {
      if (frame.code === "unavailable") {
        // Nothing was stored: send it again on the next socket.
        this.sentHere.delete(mine.clientId);
      } else {
        this.pending = this.pending.filter((p) => p !== mine);
        this.changed();
      }
    }
    for (const fn of this.listeners.error) fn(frame);
  }

  /** The socket has replayed what we missed: send what waited. */
  private caughtUp(): void {
    this.live = true;
    this.backoff.reset();
    this.tokenRetries = 0;
    for (const p of this.pending) this.sendPending(p);
    this.changed();
  }

  /** The server no longer has the events after our `seq`: reload over HTTP. */
  private async reload(): Promise<void> {
    this.reloading = [];
    try {
      const page = await this.client.history(this.host, this.slug, { limit: this.pageSize });
      this.timeline.reset(page.messages, page.last_seq);
      this.hasOlder = page.messages.length >= this.pageSize;
    } catch (e) {
      this.reloading = null;
      this.resync();
      return;
    }
    const waiting = this.reloading ?? [];
    this.reloading = null;
    for (const event of waiting) this.event(event);
    this.caughtUp();
  }

  /** Drops this socket and resumes at once from the last applied `seq`. */
  private resync(): void {
    const socket = this.socket;
    this.generation += 1;
    this.socket = null;
    this.live = false;
    socket?.close(CLOSE_NORMAL);
    this.retry(false);
  }

  private sendPending(p: PendingMessage): void {
    if (this.sentHere.has(p.clientId)) return;
    if (this.frame({ type: "text", message: p.body, timestamp: this.now(), clientId: p.clientId })) {
      this.sentHere.add(p.clientId);
    }
  }

  private frame(frame: Record<string, unknown>): boolean {
    if (!this.live || !this.socket) return false;
    try {
      this.socket.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  private armTypingExpiry(): void {
    if (this.typingTimer !== null) this.clock.clearTimeout(this.typingTimer);
    const now = this.clock.now();
    let next = Infinity;
    for (const [user, until] of this.typingUntil) {
      if (until <= now) this.typingUntil.delete(user);
      else next = Math.min(next, until);
    }
    this.typingTimer = null;
    if (next !== Infinity) {
      this.typingTimer = this.clock.setTimeout(() => {
        this.typingTimer = null;
        this.armTypingExpiry();
        this.changed();
      }, next - now);
    }
  }

  private setStatus(status: Status): void {
    if (this.status === status) return;
    this.status = status;
    this.changed();
  }

  private changed(): void {
    if (this.listeners.change.size === 0) return;
    const state = this.state;
    for (const fn of this.listeners.change) fn(state);
  }

  private now(): string {
    return new Date(this.clock.now()).toISOString();
  }
}

function defaultNetwork(): Network | null {
  const w = globalThis as unknown as Partial<Network> & { navigator?: { onLine?: boolean } };
  if (typeof w.addEventListener !== "function" || typeof w.navigator?.onLine !== "boolean") return null;
  return {
    get onLine() {
      return w.navigator?.onLine !== false;
    },
    addEventListener: (t, fn) => w.addEventListener?.(t, fn),
    removeEventListener: (t, fn) => w.removeEventListener?.(t, fn),
  };
}
