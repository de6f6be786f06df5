import type { Clock } from '../retry/clock.js';

/** A clock for tests: `sleep` records the wait and jumps time forward at once. */
export class ManualClock implements Clock {
  readonly sleeps: number[] = [];
  #now = 1_000;
  readonly #epochAtZero = Date.UTC(2026, 10, 23, 12, 0, 0);

  now(): number {
    return this.#now;
  }

  wallNow(): number {
    return this.#epochAtZero + this.#now;
  }

  advance(ms: number): void {
    this.#now += ms;
  }

  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw signal.reason;
    this.sleeps.push(ms);
    this.#now += ms;
  }
}
