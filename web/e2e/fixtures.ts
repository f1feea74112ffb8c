// What every browser test starts from: its own server, and people who
// sign up through the page the way a person does.
import { type Browser, type Page, test as base, expect } from "@playwright/test";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { RoomcastServer } from "./server";

/** Where the tests leave their screenshots (named in the README). */
export const SCREENSHOTS = resolve(import.meta.dirname, "../screenshots");

export const test = base.extend<{ server: RoomcastServer }>({
  server: async ({}, use) => {
    const server = new RoomcastServer();
    await server.start();
    await use(server);
    await server.dispose();
  },
});

export { expect };

let counter = 0;
/** A username unique within the run. */
export function username(prefix: string): string {
  counter += 1;
  return `${prefix}${counter}${Date.now().toString(36).slice(-4)}`;
}

/** A fresh browser context (own storage, own cookie) signed up as `name`. */
export async function signUp(browser: Browser, server: RoomcastServer, name: string, viewport = { width: 1100, height: 800 }): Promise<Page> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("dialog", (d) => void d.accept());
  await page.goto(server.url);
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Email").fill(`${name}@example.com`);
  await page.getByLabel("Password").fill("correct horse battery staple");
  await page.getByRole("button", { name: "Sign up" }).click();
  await expect(page.getByRole("button", { name: "Log out" })).toBeVisible();
  return page;
}

/** `host` creates a room and adds `guest`, who opens it by its link. */
export async function shareRoom(server: RoomcastServer, host: Page, guest: Page, guestName: string, roomName = "Book club") {
  await host.getByLabel("Room name").fill(roomName);
  await host.getByRole("button", { name: "Create room" }).click();
  await expect(host.getByRole("status")).toHaveText("connected");
  await host.getByLabel("Add participant").fill(guestName);
  await host.getByRole("button", { name: "Add", exact: true }).click();
  await expect(host.getByText(`${guestName} was added to the room.`)).toBeVisible();
  const link = new URL(host.url()).pathname;
  await guest.goto(server.url + link);
  await expect(guest.getByRole("status")).toHaveText("connected");
  return link;
}

/** Types a message in the send box and sends it with Enter. */
export async function say(page: Page, text: string) {
  const box = page.getByRole("textbox", { name: "Message", exact: true });
  await box.fill(text);
  await box.press("Enter");
}

/** The message (article) whose body is `text`. */
export function messageWith(page: Page, text: string) {
  return page.getByRole("article").filter({ has: page.getByText(text, { exact: true }) });
}

/** Every message body on the page, in order. */
export async function bodies(page: Page): Promise<string[]> {
  return page.getByRole("article").locator(".body").allTextContents();
}

export function screenshotPath(name: string): string {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return join(SCREENSHOTS, name);
}
