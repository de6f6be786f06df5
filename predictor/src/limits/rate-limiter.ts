import type { Plan } from './plans.js';

export type PolicyName = 'burst' | 'daily';

export interface PolicyState {
  name: PolicyName;
  limit: number;
  remaining: number;
  /** seconds until the policy is fully replenished (burst: bucket full again; daily: next UTC midnight), integer, rounded up */
  resetSeconds: number;
  /** window in seconds used for RateLimit-Policy: burst = ceil(burst / refillPerSecond), daily = 86400 */
  windowSeconds: number;
}

export interface RateLimitDecision {
  /** consume: whether this request was admitted; peek: whether the next one would be. */
  allowed: boolean;
  policies: PolicyState[];
  /** set when !allowed */
  violated?: PolicyName;
  /** set when !allowed: whole seconds, rounded UP so it is never shorter than the real wait (burst: until one token is back; daily: until next UTC midnight) */
  retryAfterSeconds?: number;
}

/**
 * Per-client limits of a plan: a token bucket and a daily quota. Implementations (memory, Redis)
 * must decide atomically over both policies: a request denied by one takes nothing from the other.
 */
export interface RateLimiter {
  /** Charges one request to the client if both policies have room. */
  consume(clientId: string, plan: Plan): Promise<RateLimitDecision>;
  /** The client's state, charging nothing (for replayed responses, which are free). */
  peek(clientId: string, plan: Plan): Promise<RateLimitDecision>;
  close?(): Promise<void>;
}

export const DAY_SECONDS = 86_400;
const DAY_MS = DAY_SECONDS * 1000;

/** Days since the epoch, in UTC: the key of the daily quota. */
export function utcDay(nowMs: number): number {
  return Math.floor(nowMs / DAY_MS);
}

/** Whole seconds until the next UTC midnight, rounded up (86400 at midnight exactly). */
export function secondsToNextUtcMidnight(nowMs: number): number {
  return Math.ceil(((utcDay(nowMs) + 1) * DAY_MS - nowMs) / 1000);
}

/** The time an empty bucket takes to fill, as the `w` of RateLimit-Policy. */
export function burstWindowSeconds(plan: Plan): number {
  return Math.ceil(plan.burst / plan.refillPerSecond);
}
