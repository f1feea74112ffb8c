// The one API client of the page and the signed-in user as reactive state.
import { Client, type User } from "roomcast-client";
import { shallowRef } from "vue";

export const client = new Client({ storage: globalThis.localStorage ?? null });

/** The signed-in user; `null` shows the sign-up / log-in page. */
export const currentUser = shallowRef<User | null>(client.user);
client.onSession((user) => {
  currentUser.value = user;
});
