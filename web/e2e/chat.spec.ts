// The web client end to end: two people in two browser contexts, a real
// server, the page driven by role and accessible name as a person (or a
// screen reader) would.
import { RoomcastServer } from "./server";
import { bodies, expect, messageWith, say, screenshotPath, shareRoom, signUp, test, username } from "./fixtures";

test("two people sign up, share a room and talk both ways", async ({ browser, server }) => {
  const a = username("alice");
  const b = username("bob");
  const alice = await signUp(browser, server, a);
  const bob = await signUp(browser, server, b);
  await alice.getByLabel("Room name").fill("Book club");
  await alice.getByRole("button", { name: "Create room" }).click();
  await expect(alice.getByRole("status")).toHaveText("connected");
  await alice.getByLabel("Add participant").fill(b);
  await alice.getByRole("button", { name: "Add", exact: true }).click();
  // The room shows up in Bob's list by itself; he opens it from there.
  await bob.getByRole("link", { name: /Book club/ }).click();
  await expect(bob.getByRole("status")).toHaveText("connected");
  await expect(bob.getByRole("heading", { name: "Book club" })).toBeVisible();

  await say(alice, "Hello Bob!");
  await say(bob, "Hi Alice, good to see you.");
  for (const page of [alice, bob]) {
    await expect(messageWith(page, "Hello Bob!")).toHaveCount(1);
    await expect(messageWith(page, "Hi Alice, good to see you.")).toHaveCount(1);
    // Each message holds its author and time.
    const first = messageWith(page, "Hello Bob!");
    await expect(first.getByText(a, { exact: true })).toBeVisible();
    await expect(first.locator("time")).toHaveAttribute("datetime", /\d{4}-\d\d-\d\dT/);
  }
  // Only one's own messages can be edited or deleted.
  await expect(messageWith(alice, "Hello Bob!").getByRole("button", { name: "Edit" })).toBeVisible();
  await expect(messageWith(bob, "Hello Bob!").getByRole("button", { name: "Edit" })).toHaveCount(0);
  await expect(messageWith(bob, "Hello Bob!").getByRole("button", { name: "Delete" })).toHaveCount(0);

  // Shift+Enter is a new line, Enter sends.
  const box = alice.getByRole("textbox", { name: "Message", exact: true });
  await box.fill("line one");
  await box.press("Shift+Enter");
  await box.pressSequentially("line two");
  await expect(alice.getByText("17/500")).toBeVisible();
  await box.press("Enter");
  await expect(bob.getByRole("article").filter({ hasText: "line two" }).locator(".body")).toHaveText("line one\nline two");
  await expect(box).toHaveValue("");

  // The room is in Bob's list after a reload, and history comes back.
  await bob.reload();
  await expect(bob.getByRole("link", { name: /Book club/ })).toBeVisible();
  expect(await bodies(bob)).toEqual(["Hello Bob!", "Hi Alice, good to see you.", "line one\nline two"]);
});

test("log out, then log in with the email, straight into a room opened by its link", async ({ browser, server }) => {
  const a = username("alice");
  const alice = await signUp(browser, server, a);
  await alice.getByLabel("Room name").fill("Plans");
  await alice.getByRole("button", { name: "Create room" }).click();
  await expect(alice.getByRole("status")).toHaveText("connected");
  await say(alice, "remember the milk");
  const link = new URL(alice.url()).pathname;
  await alice.getByRole("button", { name: "Log out" }).click();
  await expect(alice.getByRole("button", { name: "Sign up" })).toBeVisible();

  await alice.goto(server.url + link);
  await alice.getByRole("button", { name: "Log in" }).click();
  await alice.getByLabel("Username or email").fill(`${a}@example.com`);
  await alice.getByLabel("Password").fill("wrong password");
  await alice.getByRole("button", { name: "Log in" }).click();
  await expect(alice.getByRole("alert").first()).toBeVisible();
  await alice.getByLabel("Password").fill("correct horse battery staple");
  await alice.getByRole("button", { name: "Log in" }).click();
  await expect(alice.getByRole("status")).toHaveText("connected");
  await expect(messageWith(alice, "remember the milk")).toHaveCount(1);
});

test("an edit saved with Ctrl+Enter and a delete show on the other side; Esc cancels", async ({ browser, server }) => {
  const a = username("alice");
  const b = username("bob");
  const alice = await signUp(browser, server, a);
  const bob = await signUp(browser, server, b);
  await shareRoom(server, alice, bob, b);
  await say(alice, "Meet at 5");
  await say(alice, "Bring snacks");
  await expect(messageWith(bob, "Bring snacks")).toHaveCount(1);

  // Esc cancels: nothing changes anywhere.
  await messageWith(alice, "Meet at 5").getByRole("button", { name: "Edit" }).click();
  const editor = alice.getByRole("textbox", { name: "Edit message" });
  await editor.fill("Meet at 9");
  await editor.press("Escape");
  await expect(editor).toHaveCount(0);
  await expect(messageWith(alice, "Meet at 5")).toHaveCount(1);

  // Ctrl+Enter saves: Bob sees the new text, marked edited.
  await messageWith(alice, "Meet at 5").getByRole("button", { name: "Edit" }).click();
  await alice.getByRole("textbox", { name: "Edit message" }).fill("Meet at 6");
  await alice.getByRole("textbox", { name: "Edit message" }).press("Control+Enter");
  await expect(messageWith(bob, "Meet at 6")).toContainText("(edited)");
  await expect(messageWith(bob, "Meet at 5")).toHaveCount(0);
  await expect(messageWith(alice, "Meet at 6")).toContainText("(edited)");

  // Delete asks first; dismissing keeps the message.
  alice.removeAllListeners("dialog");
  alice.once("dialog", (d) => void d.dismiss());
  await messageWith(alice, "Bring snacks").getByRole("button", { name: "Delete" }).click();
  await expect(messageWith(alice, "Bring snacks")).toHaveCount(1);
  let asked = "";
  alice.once("dialog", (d) => {
    asked = d.message();
    void d.accept();
  });
  await messageWith(alice, "Bring snacks").getByRole("button", { name: "Delete" }).click();
  await expect(messageWith(bob, "Bring snacks")).toHaveCount(0);
  await expect(messageWith(alice, "Bring snacks")).toHaveCount(0);
  expect(asked).toContain("Delete this message?");
  expect(await bodies(bob)).toEqual(["Meet at 6"]);
});

test("a server restart while one side keeps typing: same messages, each once, badge back to connected", async ({ browser, server }) => {
  const a = username("alice");
  const b = username("bob");
  const alice = await signUp(browser, server, a);
  const bob = await signUp(browser, server, b);
  await shareRoom(server, alice, bob, b);
  const sent: string[] = [];
  const send = async (text: string) => {
    sent.push(text);
    await say(bob, text);
  };
  await send("before 1");
  await send("before 2");
  await expect(messageWith(alice, "before 2")).toHaveCount(1);

  await server.stop();
  await expect(alice.getByRole("status")).toHaveText("reconnecting");
  await expect(bob.getByRole("status")).toHaveText("reconnecting");
  // Bob keeps typing while the server is down: his messages wait, shown as pending.
  await send("during 1");
  await send("during 2");
  await expect(messageWith(bob, "during 2")).toContainText("pending");

  await server.start();
  await expect(alice.getByRole("status")).toHaveText("connected", { timeout: 30_000 });
  await expect(bob.getByRole("status")).toHaveText("connected", { timeout: 30_000 });
  await send("after 1");
  await expect(messageWith(alice, "after 1")).toHaveCount(1);
  await expect(bob.getByText("pending", { exact: true })).toHaveCount(0);

  for (const page of [alice, bob]) {
    expect(await bodies(page)).toEqual(sent);
  }
});

test("a message typed while offline is delivered once when the server is back", async ({ browser, server }) => {
  const a = username("alice");
  const b = username("bob");
  const alice = await signUp(browser, server, a);
  const bob = await signUp(browser, server, b);
  await shareRoom(server, alice, bob, b);
  await say(alice, "online one");
  await expect(messageWith(bob, "online one")).toHaveCount(1);

  await server.stop();
  await expect(alice.getByRole("status")).toHaveText("reconnecting");
  await say(alice, "typed while offline");
  await expect(messageWith(alice, "typed while offline")).toContainText("pending");
  await server.start();

  await expect(messageWith(bob, "typed while offline")).toHaveCount(1, { timeout: 30_000 });
  await expect(messageWith(alice, "typed while offline")).not.toContainText("pending");
  await expect(messageWith(alice, "typed while offline")).toHaveCount(1);
  // Reloading shows what the server stored: still once.
  await bob.reload();
  await expect(bob.getByRole("status")).toHaveText("connected");
  expect(await bodies(bob)).toEqual(["online one", "typed while offline"]);
});

test("an error frame from the server shows as a notification", async ({ browser, server }) => {
  const a = username("alice");
  const alice = await signUp(browser, server, a);
  await alice.getByLabel("Room name").fill("Solo");
  await alice.getByRole("button", { name: "Create room" }).click();
  await expect(alice.getByRole("status")).toHaveText("connected");
  const box = alice.getByRole("textbox", { name: "Message", exact: true });
  await box.fill("x".repeat(501));
  await expect(alice.getByText("501/500")).toBeVisible();
  await alice.getByRole("button", { name: "Send" }).click();
  await expect(alice.getByRole("alert").filter({ hasText: "Message exceeds 500 characters." })).toBeVisible();
  await expect(alice.getByRole("article")).toHaveCount(0);
});

test("at phone width (375 px) the room is usable; screenshots in light and dark", async ({ browser, server }) => {
  const a = username("alice");
  const b = username("bob");
  const phone = { width: 375, height: 740 };
  const alice = await signUp(browser, server, a, phone);
  const bob = await signUp(browser, server, b);
  await shareRoom(server, alice, bob, b, "Weekend trip");
  await say(bob, "Are we still on for Saturday?");
  await say(alice, "Yes! Leaving at 8 from the station.");
  await say(bob, "Great, I'll bring the map and some coffee for the road.");
  await messageWith(alice, "Yes! Leaving at 8 from the station.").getByRole("button", { name: "Edit" }).click();
  await alice.getByRole("textbox", { name: "Edit message" }).fill("Yes! Leaving at 8:30 from the station.");
  await alice.getByRole("textbox", { name: "Edit message" }).press("Control+Enter");
  await expect(messageWith(alice, "Yes! Leaving at 8:30 from the station.")).toContainText("(edited)");
  await expect(messageWith(alice, "Great, I'll bring the map and some coffee for the road.")).toBeVisible();
  // Typing is announced at most once per interval (the server's limit):
  // keep typing until it shows.
  const bobBox = bob.getByRole("textbox", { name: "Message", exact: true });
  await expect(async () => {
    await bobBox.press("a");
    await expect(alice.getByText(`${b} is typing…`)).toBeVisible({ timeout: 700 });
  }).toPass({ timeout: 15_000 });
  await bobBox.fill("On my way");

  // Nothing wider than the screen; the controls are on it.
  const width = await alice.evaluate(() => document.documentElement.scrollWidth);
  expect(width).toBeLessThanOrEqual(375);
  for (const control of [
    alice.getByRole("textbox", { name: "Message", exact: true }),
    alice.getByRole("button", { name: "Send" }),
    alice.getByRole("status"),
  ]) {
    await expect(control).toBeInViewport();
  }
  // Screenshots without the transient notices or a hovered button.
  for (const page of [alice, bob]) {
    for (const dismiss of await page.getByRole("button", { name: "Dismiss" }).all()) await dismiss.click();
    await page.mouse.move(1, 1);
  }
  await alice.screenshot({ path: screenshotPath("room-375px.png") });
  await alice.emulateMedia({ colorScheme: "dark" });
  await alice.screenshot({ path: screenshotPath("room-375px-dark.png") });
  await bob.screenshot({ path: screenshotPath("room-desktop.png") });
});

test("a short-lived access token: the page refreshes it, and its socket comes back by itself after the 1008 close", async ({ browser }) => {
  // The one non-default setting of the suite: a 4-second access token, so
  // that expiry happens within the test.
  const server = new RoomcastServer(["--access-token-ttl", "4"]);
  await server.start();
  try {
    const a = username("alice");
    const b = username("bob");
    const alice = await signUp(browser, server, a);
    const bob = await signUp(browser, server, b);
    await shareRoom(server, alice, bob, b);
    const closed = new Promise<void>((ok) => {
      alice.on("websocket", (ws) => {
        if (ws.url().includes("/ws/chat/")) ws.on("close", () => ok());
      });
    });
    const refreshed = alice.waitForResponse((r) => r.url().endsWith("/api/auth/refresh") && r.status() === 200, { timeout: 20_000 });
    const replaced = alice.waitForEvent("websocket", { predicate: (ws) => ws.url().includes("/ws/chat/"), timeout: 20_000 });
    await refreshed;
    await replaced;
    await closed;
    await expect(alice.getByRole("status")).toHaveText("connected");
    await say(alice, "still here after the token changed");
    await expect(messageWith(bob, "still here after the token changed")).toHaveCount(1);
    await expect(messageWith(alice, "still here after the token changed")).not.toContainText("pending");
    await expect(alice.getByRole("button", { name: "Log out" })).toBeVisible();
  } finally {
    await server.dispose();
  }
});
