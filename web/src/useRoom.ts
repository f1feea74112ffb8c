// One room's live state for a view: the library's RoomConnection as a
// reactive ref, closed with the component that opened it.
import { type RoomState, RoomConnection } from "roomcast-client";
import { onScopeDispose, shallowRef } from "vue";
import { notify } from "./notifications";
import { client } from "./session";

export function useRoom(host: string, slug: string) {
  const connection = new RoomConnection(client, host, slug);
  const state = shallowRef<RoomState>(connection.state);
  connection.on("change", (s) => {
    state.value = s;
  });
  connection.on("error", (frame) => notify(frame.error));
  connection.start();
  onScopeDispose(() => connection.close());
  return { connection, state };
}
