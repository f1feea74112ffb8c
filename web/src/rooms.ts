// The signed-in user's rooms, shared by the list and the room view.
import type { Room } from "roomcast-client";
import { shallowRef } from "vue";
import { describe, notify } from "./notifications";
import { client } from "./session";

export const rooms = shallowRef<Room[] | null>(null);

export async function reloadRooms(): Promise<void> {
  try {
    rooms.value = await client.rooms();
  } catch (e) {
    notify(describe(e));
  }
}
