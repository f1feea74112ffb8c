// Small display helpers.

/** Up to two initials for an avatar: "alice_b" -> "AB", "bob" -> "B". */
export function initials(name: string): string {
  const parts = name.split(/[\s._-]+/).filter(Boolean);
  const letters = parts.length > 1 ? [parts[0]?.[0], parts[1]?.[0]] : [name[0]];
  return letters.join("").toUpperCase();
}

/** A stable hue per name, so each person keeps one avatar colour. */
export function hue(name: string): number {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)!) % 360;
  return h;
}

const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayTime = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

/** "14:05" today, "Nov 3, 14:05" before. */
export function shortTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return d.toDateString() === new Date().toDateString() ? time.format(d) : dayTime.format(d);
}

export function longTime(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleString();
}

/** Characters as the server counts them (Unicode scalar values). */
export function charCount(text: string): number {
  return [...text.trim()].length;
}

export const MAX_MESSAGE = 500;
