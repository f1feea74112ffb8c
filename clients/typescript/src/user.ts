/**
 * The user socket (`/ws/user`, docs/protocol.md section 7): one socket per
 * signed-in user that says when something happens in any of their rooms
 * (`activity`, with the unread count) and when they are added to or removed
 * from a room. It carries no message bodies.
 *
 * It reconnects with backoff like a room. A server without `/ws/user`
 * refuses the handshake: after a few refusals in a row without ever having
 * opened, the feed says `unavailable` and stops, so the caller can poll
 * `GET /api/rooms` instead.
 */
import { Backoff, type BackoffOptions } from "./backoff.js";
import type { Clock } from "./clock.js";
import type { Client } from "./http.js";
import type { SocketFactory, SocketLike } from "./room.js";

export type UserEvent =
  | { action: "activity"; room: string; seq: number; unread: number }
  | { action: "added" | "removed"; room: string };

export interface UserFeedOptions {
  socket?: SocketFactory;
  clock?: Clock;
  backoff?: BackoffOptions;
  /** Refused handshakes in a row (never opened) before giving up as unavailable. */
  refusalsBeforeUnavailable?: number;
}

type Handlers = {
  event: (event: UserEvent) => void;
  /** Open again after a drop: reload the room list. */
  open: () => void;
  unavailable: () => void;
};

export class UserFeed {
  private readonly client: Client;
  private readonly clock: Clock;
  private readonly makeSocket: SocketFactory;
  private readonly backoff: Backoff;
  private readonly maxRefusals: number;
  private socket: SocketLike | null = null;
  private timer: unknown = null;
  private refusals = 0;
  private everOpened = false;
  private stopped = false;
  private listeners: { [K in keyof Handlers]: Set<Handlers[K]> } = { event: new Set(), open: new Set(), unavailable: new Set() };

  constructor(client: Client, options: UserFeedOptions = {}) {
    this.client = client;
    this.clock = options.clock ?? client.clock;
    this.makeSocket = options.socket ?? ((url) => new WebSocket(url) as unknown as SocketLike);
    this.backoff = new Backoff(options.backoff);
    this.maxRefusals = options.refusalsBeforeUnavailable ?? 3;
  }

  on<K extends keyof Handlers>(event: K, fn: Handlers[K]): () => void {
    this.listeners[event].add(fn);
    return () => this.listeners[event].delete(fn);
  }

  start(): void {
    this.connect();
  }

  close(): void {
    this.stopped = true;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000);
  }

  private connect(): void {
    this.timer = null;
    if (this.stopped) return;
    let opened = false;
    const socket = this.makeSocket(this.client.userSocketUrl());
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      opened = true;
      this.everOpened = true;
      this.refusals = 0;
      this.backoff.reset();
      for (const fn of this.listeners.open) fn();
    };
    socket.onmessage = (ev) => {
      if (this.socket !== socket || typeof ev.data !== "string") return;
      let frame: Record<string, unknown>;
      try {
        frame = JSON.parse(ev.data) as Record<string, unknown>;
      } catch {
        return;
      }
      if (frame.type !== "chat_event" || typeof frame.room !== "string") return;
      if (frame.action === "activity" && typeof frame.seq === "number") {
        const unread = typeof frame.unread === "number" ? frame.unread : 0;
        this.emit({ action: "activity", room: frame.room, seq: frame.seq, unread });
      } else if (frame.action === "added" || frame.action === "removed") {
        this.emit({ action: frame.action, room: frame.room });
      }
    };
    socket.onerror = () => {};
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (ev.code === 1008) {
        // Token expired: refresh and come back; anything else 1008 ends it.
        if (/token/i.test(ev.reason ?? "")) {
          this.client.refresh().then(() => this.connect(), () => this.stop());
        } else {
          this.stop();
        }
        return;
      }
      if (!opened && !this.everOpened) {
        this.refusals += 1;
        if (this.refusals >= this.maxRefusals) {
          this.stop();
          for (const fn of this.listeners.unavailable) fn();
          return;
        }
      }
      this.timer = this.clock.setTimeout(() => this.connect(), this.backoff.next());
    };
  }

  private stop(): void {
    this.stopped = true;
  }

  private emit(event: UserEvent): void {
    for (const fn of this.listeners.event) fn(event);
  }
}
