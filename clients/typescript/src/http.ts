/**
 * The HTTP half of the client: the session (access and refresh tokens) and
 * the `/api` endpoints of docs/protocol.md section 6.
 *
 * The access token is short-lived: it is refreshed through
 * `POST /api/auth/refresh` a margin before it expires (the refresh also
 * renews the browser's `JWT` cookie, which the room socket uses), and once
 * more on a 401. When the refresh token is refused the session ends and
 * listeners hear `null`.
 */
import { type Clock, systemClock } from "./clock.js";
import type {
  AuthResponse,
  CreateRoomInput,
  HistoryPage,
  RegisterInput,
  Room,
  RoomDetail,
  TokenPair,
  User,
} from "./types.js";

/** An HTTP error in the API's shape: `{"error": "...", "code": "..."}`. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** Where a session is kept between page loads (`localStorage` fits). */
export type SessionStorage = Pick<Storage, "getItem" | "setItem" | "removeItem">;

export interface ClientOptions {
  /** Origin of the server, e.g. `http://127.0.0.1:8080`; empty: this page's. */
  baseUrl?: string;
  fetch?: typeof fetch;
  clock?: Clock;
  /** Keeps the session across reloads; none: memory only. */
  storage?: SessionStorage | null;
  storageKey?: string;
  /** Refresh this many milliseconds before the access token expires. */
  refreshMarginMs?: number;
}

interface Saved {
  user: User;
  token: string;
  refresh: string;
}

/** Seconds-since-epoch `exp` of a JWT, or `null` when it cannot be read. */
export function tokenExpiry(token: string): number | null {
  const payload = token.split(".")[1];
  if (!payload) return null;
  try {
    const b64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const json = JSON.parse(atob(padded)) as { exp?: unknown };
    return typeof json.exp === "number" ? json.exp : null;
  } catch {
    return null;
  }
}

const seg = encodeURIComponent;

/** The Roomcast HTTP API with a session that refreshes itself. */
export class Client {
  readonly baseUrl: string;
  readonly clock: Clock;
  private readonly fetchImpl: typeof fetch;
  private readonly storage: SessionStorage | null;
  private readonly storageKey: string;
  private readonly margin: number;
  private saved: Saved | null = null;
  /** How long the current access token lived when it was set (ms). */
  private lifetime = Infinity;
  private refreshing: Promise<void> | null = null;
  private timer: unknown = null;
  private listeners = new Set<(user: User | null) => void>();

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? "").replace(/\/$/, "");
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.clock = options.clock ?? systemClock;
    this.storage = options.storage ?? null;
    this.storageKey = options.storageKey ?? "roomcast.session";
    this.margin = options.refreshMarginMs ?? 60_000;
    const saved = this.readStored();
    if (saved) this.setSession(saved, false);
  }

  /** The signed-in user, or `null`. */
  get user(): User | null {
    return this.saved?.user ?? null;
  }

  /** The current access token (for a `Authorization: Bearer` header). */
  get token(): string | null {
    return this.saved?.token ?? null;
  }

  /** Hears every change of session: a user after log-in, `null` after it ends. */
  onSession(fn: (user: User | null) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  // ---- accounts ----

  async register(input: RegisterInput): Promise<User> {
    const res = await this.request<AuthResponse>("POST", "/api/auth/register", input, false);
    this.setSession(res, true);
    return res.user;
  }

  /** Log in with a username or an email. */
  async login(login: string, password: string): Promise<User> {
    const body = login.includes("@") ? { email: login, password } : { username: login, password };
    const res = await this.request<AuthResponse>("POST", "/api/auth/login", body, false);
    this.setSession(res, true);
    return res.user;
  }

  /** Ends the session here and revokes its refresh token on the server. */
  async logout(): Promise<void> {
    const refresh = this.saved?.refresh;
    try {
      await this.request<void>("POST", "/api/auth/logout", refresh ? { refresh } : {}, false);
    } finally {
      this.endSession();
    }
  }

  async me(): Promise<User> {
    const user = await this.request<User>("GET", "/api/me");
    if (this.saved) this.setSession({ ...this.saved, user }, true);
    return user;
  }

  /**
   * Trades the refresh token for a new pair now (one request at a time,
   * however many callers). A refused refresh token ends the session.
   */
  refresh(): Promise<void> {
    if (this.refreshing) return this.refreshing;
    const current = this.saved;
    if (!current) return Promise.reject(new ApiError(401, "unauthorized", "Not signed in."));
    // Another tab of this page may have rotated the pair already: refresh
    // tokens are single-use, so take its pair instead of spending ours.
    const shared = this.readStored();
    if (shared && shared.user.id === current.user.id && shared.refresh !== current.refresh) {
      this.setSession(shared, false);
      return Promise.resolve();
    }
    this.refreshing = (async () => {
      try {
        const pair = await this.request<TokenPair>("POST", "/api/auth/refresh", { refresh: current.refresh }, false);
        if (this.saved === current) this.setSession({ ...current, ...pair }, true);
      } catch (e) {
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) this.endSession();
        throw e;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** Refreshes first if the access token expires within the margin. */
  async ensureFresh(): Promise<void> {
    const exp = this.saved ? tokenExpiry(this.saved.token) : null;
    if (exp !== null && exp * 1000 - this.clock.now() <= this.marginMs()) await this.refresh();
  }

  /** The refresh margin, at most a fifth of the token's life (short TTLs). */
  private marginMs(): number {
    return Math.min(this.margin, this.lifetime / 5);
  }

  // ---- rooms ----

  /** The rooms the caller participates in. */
  rooms(): Promise<Room[]> {
    return this.request<Room[]>("GET", "/api/rooms");
  }

  createRoom(input: CreateRoomInput): Promise<Room> {
    return this.request<Room>("POST", "/api/rooms", input);
  }

  room(host: string, slug: string): Promise<RoomDetail> {
    return this.request<RoomDetail>("GET", `/api/rooms/${seg(host)}/${seg(slug)}`);
  }

  /** The host adds `username` to the room. */
  async addParticipant(host: string, slug: string, username: string): Promise<void> {
    await this.request<unknown>("PUT", `/api/rooms/${seg(host)}/${seg(slug)}/participants/${seg(username)}`);
  }

  /** The host removes `username`: their sockets in the room close with 1008. */
  async removeParticipant(host: string, slug: string, username: string): Promise<void> {
    await this.request<unknown>("DELETE", `/api/rooms/${seg(host)}/${seg(slug)}/participants/${seg(username)}`);
  }

  /** A page of history, oldest first: the latest one, or the one before message `before`. */
  history(host: string, slug: string, page: { before?: string; limit?: number } = {}): Promise<HistoryPage> {
    const query = new URLSearchParams();
    if (page.before) query.set("before", page.before);
    if (page.limit) query.set("limit", String(page.limit));
    const q = query.toString();
    return this.request<HistoryPage>("GET", `/api/rooms/${seg(host)}/${seg(slug)}/messages${q ? `?${q}` : ""}`);
  }

  /**
   * Records that the caller has read the room up to `seq` (newer servers;
   * an older one answers 404, which callers may ignore).
   */
  async markRead(host: string, slug: string, seq: number): Promise<void> {
    await this.request<unknown>("PUT", `/api/rooms/${seg(host)}/${seg(slug)}/read`, { seq });
  }

  /** The user socket's URL (`/ws/user`: activity and membership of all one's rooms). */
  userSocketUrl(): string {
    const url = new URL("/ws/user", this.baseUrl || (typeof location !== "undefined" ? location.origin : "http://localhost"));
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }

  /** The room socket's URL, resuming after `since` when given. */
  socketUrl(host: string, slug: string, since?: number): string {
    const base = this.baseUrl || (typeof location !== "undefined" ? location.origin : "http://localhost");
    const url = new URL(`/ws/chat/${seg(host)}/${seg(slug)}`, base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (since !== undefined) url.searchParams.set("since", String(since));
    return url.toString();
  }

  // ---- plumbing ----

  private async request<T>(method: string, path: string, body?: unknown, retryOn401 = true): Promise<T> {
    const send = () => {
      const headers: Record<string, string> = { Accept: "application/json" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (this.saved) headers.Authorization = `Bearer ${this.saved.token}`;
      return this.fetchImpl(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    };
    let res = await send();
    if (res.status === 401 && retryOn401 && this.saved) {
      await this.refresh();
      res = await send();
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let json: unknown = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const err = (json ?? {}) as { error?: string; code?: string };
      throw new ApiError(res.status, err.code ?? "http_" + res.status, err.error ?? `HTTP ${res.status}`);
    }
    return json as T;
  }

  private readStored(): Saved | null {
    try {
      const raw = this.storage?.getItem(this.storageKey);
      const saved = raw ? (JSON.parse(raw) as Saved) : null;
      return saved?.user && saved.token && saved.refresh ? saved : null;
    } catch {
      return null;
    }
  }

  private setSession(saved: Saved, persist: boolean): void {
    const changed = this.saved?.user.id !== saved.user.id;
    this.saved = { user: saved.user, token: saved.token, refresh: saved.refresh };
    const exp = tokenExpiry(saved.token);
    this.lifetime = exp === null ? Infinity : Math.max(0, exp * 1000 - this.clock.now());
    if (persist) this.storage?.setItem(this.storageKey, JSON.stringify(this.saved));
    this.schedule();
    if (changed) for (const fn of this.listeners) fn(saved.user);
  }

  private endSession(): void {
    const had = this.saved !== null;
    this.saved = null;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.storage?.removeItem(this.storageKey);
    if (had) for (const fn of this.listeners) fn(null);
  }

  /** Arms the refresh a margin before the access token's expiry. */
  private schedule(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    const exp = this.saved ? tokenExpiry(this.saved.token) : null;
    if (exp === null) return;
    const wait = Math.max(0, exp * 1000 - this.marginMs() - this.clock.now());
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.refresh().catch(() => {
        // Network trouble: try again soon; a refused token already ended the session.
        if (this.saved && this.timer === null) this.timer = this.clock.setTimeout(() => this.schedule(), 5_000);
      });
    }, wait);
  }
}
