// Browser end-to-end tests: Debian's Chromium (never a Playwright browser
// download), headless, against real `roomcast serve` processes that the
// tests start themselves (see e2e/server.ts). `cargo xtask ci` runs them.
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "./e2e",
  timeout: 60_000,
  expect: { timeout: 10_000 },
  // Two cores shared with the Rust build: one test at a time is enough.
  workers: 1,
  fullyParallel: false,
  forbidOnly: true,
  retries: 0,
  reporter: [["list"]],
  outputDir: "test-results",
  use: {
    browserName: "chromium",
    headless: true,
    launchOptions: {
      executablePath: process.env.ROOMCAST_CHROMIUM ?? "/usr/bin/chromium",
      // Playwright gives every launch a fresh temporary profile. The machine
      // has no network beyond localhost: keep Chromium from trying.
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
      ],
    },
    trace: "off",
    screenshot: "only-on-failure",
  },
});
