import type { Plan } from './plans.js';
import {
  DAY_SECONDS,
  burstWindowSeconds,
  secondsToNextUtcMidnight,
  utcDay,
  type PolicyName,
  type PolicyState,
  type RateLimitDecision,
  type RateLimiter,
} from './rate-limiter.js';

export interface MemoryRateLimiterOptions {
  /** Current time (in milliseconds since the epoch). Default `Date.now`. */
  now?: () => number;
  /**
   * Clients kept in memory. Beyond it the least recently used client is forgotten, so memory is
   * bounded; a forgotten client starts again with a full bucket and an unused daily quota. Default 100 000.
   */
  maxClients?: number;
}

interface ClientState {
  /** Tokens in the bucket at `refilledAtMs`; fractional, because refill is continuous. */
  tokens: number;
  refilledAtMs: number;
  /** The UTC day (`utcDay`) that `used` counts. */
  day: number;
  /** Requests admitted on `day`. */
  used: number;
}

// Float arithmetic can leave 0.9999999999 where exactly one token has been refilled.
const EPSILON = 1e-9;

function wholeTokens(tokens: number): number {
  return Math.max(0, Math.floor(tokens + EPSILON));
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

    const burstRoom = wholeTokens(state.tokens) >= 1;
    const dailyRoom = state.used < plan.dailyQuota;
    const allowed = burstRoom && dailyRoom;
    if (allowed && charge) {
      state.tokens -= 1;
      state.used += 1;
    }
    const decision: RateLimitDecision = { allowed, policies: [burstState(state, plan), dailyState(state, plan, nowMs)] };
    if (allowed) return decision;

    const waits: { policy: PolicyName; seconds: number }[] = [];
    if (!burstRoom) waits.push({ policy: 'burst', seconds: Math.ceil((1 - EPSILON - state.tokens) / plan.refillPerSecond) });
    if (!dailyRoom) waits.push({ policy: 'daily', seconds: secondsToNextUtcMidnight(nowMs) });
    // A retry succeeds only once both policies have room: name the one that keeps the client waiting longest.
    const longest = waits.reduce((a, b) => (b.seconds > a.seconds ? b : a));
    return { ...decision, violated: longest.policy, retryAfterSeconds: Math.max(1, longest.seconds) };
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

function burstState(state: ClientState, plan: Plan): PolicyState {
  return {
    name: 'burst',
    limit: plan.burst,
    remaining: Math.min(plan.burst, wholeTokens(state.tokens)),
    resetSeconds: Math.ceil(Math.max(0, plan.burst - state.tokens - EPSILON) / plan.refillPerSecond),
    windowSeconds: burstWindowSeconds(plan),
  };
}

function dailyState(state: ClientState, plan: Plan, nowMs: number): PolicyState {
  return {
    name: 'daily',
    limit: plan.dailyQuota,
    remaining: Math.max(0, plan.dailyQuota - state.used),
    resetSeconds: secondsToNextUtcMidnight(nowMs),
    windowSeconds: DAY_SECONDS,
  };
}
