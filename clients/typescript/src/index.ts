/**
 * roomcast-client: the browser twin of the Rust `roomcast-client` crate.
 *
 * - {@link Client}: the HTTP API and a session that refreshes itself.
 * - {@link RoomConnection}: one room's live state over its WebSocket, with
 *   reconnect, resume by `seq`, pending messages and token refresh.
 * - {@link UserFeed}: the user socket (`/ws/user`): activity and membership
 *   changes across all of one's rooms.
 */
export { Backoff, type BackoffOptions } from "./backoff.js";
export { type Clock, systemClock } from "./clock.js";
export { ApiError, Client, type ClientOptions, type SessionStorage, tokenExpiry } from "./http.js";
export { RoomConnection, type Network, type RoomOptions, type RoomState, type SocketFactory, type SocketLike } from "./room.js";
export { type UserEvent, UserFeed, type UserFeedOptions } from "./user.js";
export { type Applied, type MessageEvent, Timeline } from "./timeline.js";
export type * from "./types.js";
