// Notifications: the server's error frames and failed requests, shown to
// the person (the client this replaces only logged them).
import { shallowRef } from "vue";

export interface Notice {
  id: number;
  text: string;
  kind: "error" | "info";
}

export const notices = shallowRef<Notice[]>([]);
let next = 1;

export function notify(text: string, kind: Notice["kind"] = "error", ms = 8000): void {
  const id = next++;
  notices.value = [...notices.value, { id, text, kind }].slice(-4);
  setTimeout(() => dismiss(id), ms);
}

export function dismiss(id: number): void {
  notices.value = notices.value.filter((n) => n.id !== id);
}

/** A thrown value as a sentence for a person. */
export function describe(e: unknown): string {
  if (e instanceof Error && e.name === "ApiError") return e.message;
  if (e instanceof TypeError) return "The server cannot be reached.";
  return e instanceof Error ? e.message : String(e);
}
