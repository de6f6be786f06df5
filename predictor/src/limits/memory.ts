import type { Plan } from './plans.js';
import { decisionFor, hasRoom, utcDay, type LimitState, type RateLimitDecision, type RateLimiter } from './rate-limiter.js';

export interface MemoryRateLimiterOptions {
  /** Current time (in milliseconds since the epoch). Default `Date.now`. */
  now?: () => number;
  /**
   * Clients kept in memory. Beyond it the least recently used client is forgotten, so memory is
   * bounded; a forgotten client starts again with a full bucket and an unused daily quota. Default 100 000.
   */
  maxClients?: number;
}

interface ClientState extends LimitState {
  /** When `tokens` was last caught up. */
  refilledAtMs: number;
  /** The UTC day (`utcDay`) that `used` counts. */
  day: number;
}

/**
 * Token bucket and daily quota per client, in this process's memory: right for one predictor;
 * replicas sharing limits need the Redis implementation.
 */
export class MemoryRateLimiter implements RateLimiter {
  readonly #now: () => number;
  readonly #maxClients: number;
  // A Map iterates in insertion order: re-inserting a client on each use keeps the least recently used first.
  readonly #clients = new Map<string, ClientState>();

  constructor(options: MemoryRateLimiterOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#maxClients = options.maxClients ?? 100_000;
    if (!Number.isSafeInteger(this.#maxClients) || this.#maxClients < 1) {
      throw new RangeError(`maxClients must be an integer >= 1, got ${this.#maxClients}`);
    }
  }

  /** Clients currently remembered. */
  get size(): number {
    return this.#clients.size;
  }

  // Both methods decide without awaiting anything: JS runs each to completion, so two concurrent
  // requests can never both see the last token.
  async consume(clientId: string, plan: Plan): Promise<RateLimitDecision> {
    return this.#decide(clientId, plan, true);
  }

  async peek(clientId: string, plan: Plan): Promise<RateLimitDecision> {
    return this.#decide(clientId, plan, false);
  }

  async close(): Promise<void> {
    this.#clients.clear();
  }

  #decide(clientId: string, plan: Plan, charge: boolean): RateLimitDecision {
    const nowMs = this.#now();
    const state = this.#stateOf(clientId, plan, nowMs, charge);
    this.#catchUp(state, plan, nowMs);

    const allowed = hasRoom(state, plan);
    if (allowed && charge) {
      state.tokens -= 1;
      state.used += 1;
    }
    return decisionFor(plan, state, nowMs, allowed);
  }

  /** The client's state, now the most recently used; `peek` of an unknown client remembers nothing. */
  #stateOf(clientId: string, plan: Plan, nowMs: number, remember: boolean): ClientState {
    const known = this.#clients.get(clientId);
    const state = known ?? { tokens: plan.burst, refilledAtMs: nowMs, day: utcDay(nowMs), used: 0 };
    if (!known && !remember) return state;
    this.#clients.delete(clientId);
    this.#clients.set(clientId, state);
    for (const oldest of this.#clients.keys()) {
      if (this.#clients.size <= this.#maxClients) break;
      this.#clients.delete(oldest);
    }
    return state;
  }

  #catchUp(state: ClientState, plan: Plan, nowMs: number): void {
    // A clock that steps backwards refills nothing rather than draining the bucket.
    const elapsedSeconds = Math.max(0, nowMs - state.refilledAtMs) / 1000;
    state.tokens = Math.min(plan.burst, state.tokens + elapsedSeconds * plan.refillPerSecond);
    state.refilledAtMs = Math.max(state.refilledAtMs, nowMs);
    const day = utcDay(nowMs);
    if (day > state.day) {
      state.day = day;
      state.used = 0;
    }
  }
}
