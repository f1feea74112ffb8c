// The app's two pages, on real paths (the server answers index.html for
// them), so that a room's link can be shared and opened directly:
//   /                      my rooms
//   /rooms/{host}/{slug}   a room
import { computed, shallowRef } from "vue";

const path = shallowRef(location.pathname);
addEventListener("popstate", () => {
  path.value = location.pathname;
});

export type Route = { name: "home" } | { name: "room"; host: string; slug: string };

export const route = computed<Route>(() => {
  const m = /^\/rooms\/([^/]+)\/([^/]+)\/?$/.exec(path.value);
  if (m && m[1] && m[2]) return { name: "room", host: decodeURIComponent(m[1]), slug: decodeURIComponent(m[2]) };
  return { name: "home" };
});

export function roomPath(host: string, slug: string): string {
  return `/rooms/${encodeURIComponent(host)}/${encodeURIComponent(slug)}`;
}

export function navigate(to: string): void {
  if (to === location.pathname) return;
  history.pushState(null, "", to);
  path.value = to;
}
