// A real `roomcast serve` for one test: its own free port and a fresh data
// directory, stopped (SIGTERM: sockets close with 1001) and started again on
// the same port and data when a test wants a restart. Defaults everywhere:
// the browser suite runs what people run.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** The server binary: ROOMCAST_BIN, else the workspace's debug build. */
export function binary(): string {
  if (process.env.ROOMCAST_BIN) return process.env.ROOMCAST_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? resolve(import.meta.dirname, "../../target");
  return join(target, "debug", "roomcast");
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      const port = typeof address === "object" && address ? address.port : 0;
      s.close(() => ok(port));
    });
  });
}

export class RoomcastServer {
  /** Extra `serve` flags, for a test that needs a non-default setting. */
  constructor(private readonly extraArgs: string[] = []) {}

  readonly dataDir = mkdtempSync(join(tmpdir(), "roomcast-web-e2e-"));
  port = 0;
  private child: ChildProcess | null = null;
  private log: string[] = [];

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    const child = spawn(binary(), ["serve", "--bind", `127.0.0.1:${this.port}`, "--data-dir", this.dataDir, ...this.extraArgs], {
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    child.stderr?.on("data", (d: Buffer) => this.log.push(d.toString()));
    // Ready when it prints the address to open.
    await new Promise<void>((ok, fail) => {
      let out = "";
      const onData = (d: Buffer) => {
        out += d.toString();
        if (out.includes("Open http://") || out.includes("listening on http://")) {
          child.stdout?.off("data", onData);
          ok();
        }
      };
      child.stdout?.on("data", onData);
      child.once("exit", (code) => fail(new Error(`roomcast exited (${code}) before listening:\n${this.log.join("")}`)));
      child.once("error", fail);
    });
  }

  /** SIGTERM, and wait until the process is gone. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((ok) => {
      child.once("exit", () => ok());
      child.kill("SIGTERM");
    });
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
