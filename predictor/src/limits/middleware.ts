import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { AppEnv } from '../http/app-env.js';
import type { Metrics } from '../http/metrics.js';
import { RateLimited } from '../http/problems.js';
import { describeViolation, rateLimitHeaders } from './headers.js';
import type { PlanTable } from './plans.js';
import type { RateLimiter } from './rate-limiter.js';

export interface RateLimitDeps {
  limiter: RateLimiter;
  plans: PlanTable;
  metrics: Metrics;
}

/** Takes one request from the principal's plan, or throws 429. The decision is kept for the headers and the log. */
export async function chargeRateLimit(c: Context<AppEnv>, deps: RateLimitDeps): Promise<void> {
  const principal = c.get('principal')!;
  const plan = deps.plans.resolve(principal.plan);
  const decision = await deps.limiter.consume(principal.clientId, plan);
  c.set('rateLimit', decision);
  // Set before the response exists: mutating a finished response's headers makes
  // @hono/node-server give up its fast path and stream the body.
  for (const [name, value] of Object.entries(rateLimitHeaders(decision))) c.header(name, value);
  if (!decision.allowed) {
    const violation = describeViolation(decision);
    deps.metrics.rateLimited.inc({ policy: violation.policy, plan: plan.name });
    throw new RateLimited(violation);
  }
}

/** For routes charged as a whole (GET /v1/models). */
export function rateLimit(deps: RateLimitDeps) {
  return createMiddleware<AppEnv>(async function chargeRequest(c, next) {
    await chargeRateLimit(c, deps);
    await next();
  });
}

/**
 * Rate-limit headers on every response to an authenticated client. Responses that
 * were not charged (403, validation errors, replays, 409) show the current state.
 */
export function rateLimitHeadersFor(deps: RateLimitDeps) {
  return createMiddleware<AppEnv>(async function addRateLimitHeaders(c, next) {
    await next();
    const principal = c.get('principal');
    if (!principal || c.get('rateLimit')) return; // a charged request has its headers already
    // The answer is decided already: a store outage costs these headers, not the response.
    const decision = await deps.limiter.peek(principal.clientId, deps.plans.resolve(principal.plan)).catch(() => undefined);
    if (!decision) return;
    for (const [name, value] of Object.entries(rateLimitHeaders(decision))) {
      // Only a 429 tells the client to wait; a peek may say the *next* request would be refused.
      if (name === 'Retry-After' && c.res.status !== 429) continue;
      c.res.headers.set(name, value);
    }
  });
}
