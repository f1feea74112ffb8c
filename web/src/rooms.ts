// The signed-in user's rooms, shared by the list and the room view, kept
// fresh by the user socket (`/ws/user`) where the server has it, else by
// asking `GET /api/rooms` every few seconds.
import { type Room, UserFeed } from "roomcast-client";
import { shallowRef } from "vue";
import { describe, notify } from "./notifications";
import { client } from "./session";

export const rooms = shallowRef<Room[] | null>(null);

export async function reloadRooms(quiet = false): Promise<void> {
  try {
    rooms.value = await client.rooms();
  } catch (e) {
    if (!quiet) notify(describe(e));
  }
}

const POLL_MS = 4000;

/** Keeps `rooms` fresh until the returned function is called. */
export function watchRooms(): () => void {
  void reloadRooms();
  let poll: ReturnType<typeof setInterval> | null = null;
  const startPolling = () => {
    poll ??= setInterval(() => void reloadRooms(true), POLL_MS);
  };
  const feed = new UserFeed(client);
  feed.on("open", () => {
    if (poll) clearInterval(poll);
    poll = null;
    void reloadRooms(true);
  });
  feed.on("unavailable", startPolling);
  feed.on("event", (event) => {
    if (event.action === "activity" && rooms.value) {
      const known = rooms.value.some((r) => `${r.host}/${r.slug}` === event.room);
      if (known) {
        rooms.value = rooms.value.map((r) =>
          `${r.host}/${r.slug}` === event.room ? { ...r, last_seq: event.seq, unread: event.unread } : r,
        );
        return;
      }
    }
    void reloadRooms(true);
  });
  // Until the feed opens (or if it never does), the list still moves.
  startPolling();
  feed.start();
  return () => {
    feed.close();
    if (poll) clearInterval(poll);
  };
}
