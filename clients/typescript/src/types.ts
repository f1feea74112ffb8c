/**
 * The shapes of the Roomcast wire contract (docs/protocol.md): what the HTTP
 * API answers and the frames a room socket carries. Fields the server may add
 * later are optional here, so an older server still type-checks.
 */

/** `{"id","username","name","avatar"}` */
export interface User {
  id: string;
  username: string;
  name: string;
  avatar: string | null;
}

/** A room as `GET /api/rooms` lists it. */
export interface Room {
  id: string;
  host: string;
  slug: string;
  name: string;
  description: string;
  created: string;
  updated: string;
  participants_count: number;
  /** Newer servers: `private` or `public`. */
  visibility?: "private" | "public";
  last_seq?: number;
  read_seq?: number;
  /** Newer servers: messages of others after the caller's read position. */
  unread?: number;
}

/** A room with who is in it and where its event log stands. */
export interface RoomDetail extends Room {
  participants: User[];
  last_seq: number;
}

/** A stored message: the `new` frame's fields without `type`/`action`. */
export interface Message {
  id: string;
  user: string;
  user_id: string;
  body: string;
  created: string;
  edited: boolean;
  updated: string;
  userAvatar: string | null;
  seq: number;
  clientId?: string;
}

/** One page of history, oldest first, with the room's last `seq`. */
export interface HistoryPage {
  messages: Message[];
  last_seq: number;
}

/** `POST /api/auth/register` and `/login`. */
export interface AuthResponse {
  user: User;
  token: string;
  refresh: string;
}

/** `POST /api/auth/refresh`. */
export interface TokenPair {
  token: string;
  refresh: string;
}

export interface RegisterInput {
  username: string;
  email: string;
  password: string;
  name?: string;
}

export interface CreateRoomInput {
  name: string;
  slug?: string;
  description?: string;
  visibility?: "private" | "public";
}

/** The connection's state, as the badge shows it. */
export type Status = "connecting" | "connected" | "reconnecting" | "offline";

/** Why a connection ended for good (status `offline` without retrying). */
export type EndReason =
  /** `close()` was called. */
  | "closed"
  /** The membership was revoked (1008), or the room is gone. */
  | "revoked"
  /** The session could not be refreshed: log in again. */
  | "signed-out";

/** An error frame (`{"error": ..., "code"?: ...}`), sent to the sender only. */
export interface ErrorFrame {
  error: string;
  code?: string;
  messageId?: string;
  clientId?: string;
}

/** A message typed here that the server has not confirmed yet. */
export interface PendingMessage {
  clientId: string;
  body: string;
  /** When it was typed (ISO 8601). */
  created: string;
}
