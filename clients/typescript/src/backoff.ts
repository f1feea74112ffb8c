/**
 * Reconnect delays: exponential, capped, with jitter so that a thousand
 * clients dropped by one restart do not come back in the same millisecond.
 * It never runs out: the connection keeps trying and says so in its status
 * (the client this replaces stopped after five tries).
 */
export interface BackoffOptions {
  /** First delay, in milliseconds. */
  baseMs?: number;
  /** Largest delay, in milliseconds. */
  maxMs?: number;
  /** Uniform in [0, 1). */
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly base: number;
  private readonly max: number;
  private readonly random: () => number;

  constructor(options: BackoffOptions = {}) {
    this.base = options.baseMs ?? 500;
    // A chat should be back within seconds of its server: cap at 10 s.
    this.max = options.maxMs ?? 10_000;
    this.random = options.random ?? Math.random;
  }

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /**
   * The next delay: the exponential step `min(max, base * 2^n)`, of which a
   * random half is kept ("equal jitter"), so it is never zero and never
   * above the cap.
   */
  next(): number {
    const step = Math.min(this.max, this.base * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    return Math.round(step / 2 + this.random() * (step / 2));
  }

  /** After a connection that worked: start small again. */
  reset(): void {
    this.attempt = 0;
  }
}
