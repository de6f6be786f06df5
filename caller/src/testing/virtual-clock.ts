import type { Clock } from '../retry/clock.js';

interface Timer {
  at: number;
  resolve: () => void;
}

/**
 * A clock for simulations with many concurrent sleepers: time stands still while anything can
 * still run, and `run` moves it to the next timer only when everything waits. Unlike
 * ManualClock, where every sleep jumps time at once, a sleep here can be overtaken by work
 * that would have happened first in real time.
 */
export class VirtualClock implements Clock {
  #now = 1_000;
  readonly #epochAtZero = Date.UTC(2026, 10, 23, 12, 0, 0);
  #timers: Timer[] = [];

  now(): number {
    return this.#now;
  }

  wallNow(): number {
    return this.#epochAtZero + this.#now;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const timer: Timer = {
        at: this.#now + Math.max(0, ms),
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        this.#timers = this.#timers.filter((entry) => entry !== timer);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#timers.push(timer);
    });
  }

  /** Runs `task` to its end, firing the timers in time order whenever nothing else can run. */
  async run<T>(task: Promise<T>): Promise<T> {
    let done = false;
    const settled = task.finally(() => (done = true));
    for (;;) {
      // setImmediate runs after every pending promise job (and I/O callback) of this turn.
      await new Promise((resolve) => setImmediate(resolve));
      if (done) return settled;
      const next = this.#timers.reduce<Timer | undefined>((earliest, timer) => (!earliest || timer.at < earliest.at ? timer : earliest), undefined);
      if (!next) throw new Error('VirtualClock: the task waits, but no timer is set');
      this.#timers = this.#timers.filter((timer) => timer !== next);
      this.#now = Math.max(this.#now, next.at);
      next.resolve();
    }
  }
}
