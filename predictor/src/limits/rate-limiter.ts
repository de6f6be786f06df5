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
  /** Readiness of a shared store (Redis: PING); an in-process limiter needs none. */
  healthy?(): Promise<boolean>;
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

/** A client's limits, caught up to the time of the decision. */
export interface LimitState {
  /** Tokens in the bucket; fractional, because refill is continuous. */
  tokens: number;
  /** Requests admitted on the current UTC day. */
  used: number;
}

/** Float arithmetic can leave 0.9999999999 where exactly one token has been refilled. */
export const TOKEN_EPSILON = 1e-9;

export function wholeTokens(tokens: number): number {
  return Math.max(0, Math.floor(tokens + TOKEN_EPSILON));
}

/** Whether both policies have room for one more request. */
export function hasRoom(state: LimitState, plan: Plan): boolean {
  return wholeTokens(state.tokens) >= 1 && state.used < plan.dailyQuota;
}

/**
 * The decision for `state` at `nowMs`: the state after the charge when a request was admitted,
 * the untouched state otherwise. Every limiter builds its decisions here, so all round alike.
 */
export function decisionFor(plan: Plan, state: LimitState, nowMs: number, allowed: boolean): RateLimitDecision {
  const decision: RateLimitDecision = { allowed, policies: [burstState(state, plan), dailyState(state, plan, nowMs)] };
  if (allowed) return decision;

  const waits: { policy: PolicyName; seconds: number }[] = [];
  if (wholeTokens(state.tokens) < 1) waits.push({ policy: 'burst', seconds: Math.ceil((1 - TOKEN_EPSILON - state.tokens) / plan.refillPerSecond) });
  if (state.used >= plan.dailyQuota) waits.push({ policy: 'daily', seconds: secondsToNextUtcMidnight(nowMs) });
  // A retry succeeds only once both policies have room: name the one that keeps the client waiting longest.
  const longest = waits.reduce<{ policy: PolicyName; seconds: number } | undefined>((a, b) => (a && a.seconds >= b.seconds ? a : b), undefined);
  if (!longest) throw new Error('a denied decision needs a policy without room');
  return { ...decision, violated: longest.policy, retryAfterSeconds: Math.max(1, longest.seconds) };
}

function burstState(state: LimitState, plan: Plan): PolicyState {
  return {
    name: 'burst',
    limit: plan.burst,
    remaining: Math.min(plan.burst, wholeTokens(state.tokens)),
    resetSeconds: Math.ceil(Math.max(0, plan.burst - state.tokens - TOKEN_EPSILON) / plan.refillPerSecond),
    windowSeconds: burstWindowSeconds(plan),
  };
}

function dailyState(state: LimitState, plan: Plan, nowMs: number): PolicyState {
  return {
    name: 'daily',
    limit: plan.dailyQuota,
    remaining: Math.max(0, plan.dailyQuota - state.used),
    resetSeconds: secondsToNextUtcMidnight(nowMs),
    windowSeconds: DAY_SECONDS,
  };
}
