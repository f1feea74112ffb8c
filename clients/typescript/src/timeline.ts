/**
 * A room's messages as its event log makes them: events are applied in
 * `seq` order, each exactly once. An event at or below the last applied
 * `seq` is a duplicate (a replay after a resume) and is dropped; one that
 * skips ahead means something was missed, and the caller resumes instead of
 * applying it. Messages are kept oldest first, one per id.
 */
import type { Message } from "./types.js";

/** A `chat_message` frame, as the server broadcasts it. */
export type MessageEvent =
  | ({ type: "chat_message"; action: "new" } & Message)
  | { type: "chat_message"; action: "update"; id: string; body: string; edited: boolean; updated: string; seq: number }
  | { type: "chat_message"; action: "delete"; id: string; seq: number };

/** What applying one event did. */
export type Applied = "applied" | "duplicate" | "gap";

export class Timeline {
  private list: Message[] = [];
  private seqSeen = 0;

  /** Messages, oldest first. */
  get messages(): readonly Message[] {
    return this.list;
  }

  /** The last applied event's `seq` (0 before any). */
  get lastSeq(): number {
    return this.seqSeen;
  }

  /** Replaces everything with a page of history and its `last_seq`. */
  reset(messages: Message[], lastSeq: number): void {
    this.list = [];
    this.seqSeen = lastSeq;
    for (const m of messages) this.upsert(m);
  }

  /** Adds an older page in front (from HTTP, so no `seq` bookkeeping). */
  prepend(messages: Message[]): void {
    for (const m of messages) this.upsert(m);
  }

  /** Applies one event if it is the next one. */
  apply(event: MessageEvent): Applied {
    if (event.seq <= this.seqSeen) return "duplicate";
    if (event.seq !== this.seqSeen + 1) return "gap";
    this.seqSeen = event.seq;
    switch (event.action) {
      case "new": {
        const { type: _t, action: _a, ...message } = event;
        this.upsert(message);
        break;
      }
      case "update": {
        const i = this.list.findIndex((m) => m.id === event.id);
        const old = this.list[i];
        if (old) this.list[i] = { ...old, body: event.body, edited: event.edited, updated: event.updated };
        break;
      }
      case "delete":
        this.list = this.list.filter((m) => m.id !== event.id);
        break;
    }
    return "applied";
  }

  /** The oldest message held, for loading the page before it. */
  oldest(): Message | undefined {
    return this.list[0];
  }

  /** Inserts or replaces by id, keeping creation order. */
  private upsert(message: Message): void {
    const at = this.list.findIndex((m) => m.id === message.id);
    if (at >= 0) {
      this.list[at] = message;
      return;
    }
    let i = this.list.length;
    while (i > 0 && before(message, this.list[i - 1] as Message)) i -= 1;
    this.list.splice(i, 0, message);
  }
}

/** Whether `a` comes before `b`: by `seq` of its `new` event, then time. */
function before(a: Message, b: Message): boolean {
  if (a.seq && b.seq) return a.seq < b.seq;
  return a.created < b.created;
}
