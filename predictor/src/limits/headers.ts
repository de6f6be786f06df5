import type { PolicyName, PolicyState, RateLimitDecision } from './rate-limiter.js';

/** What a 429 problem body says about the policy that refused the request. */
export interface Violation {
  policy: PolicyName;
  limit: number;
  windowSeconds: number;
  retryAfterSeconds: number;
}

/**
 * The rate-limit fields of a response: the de facto `X-RateLimit-*` trio for the most constrained
 * policy, the IETF `RateLimit-Policy` and `RateLimit` fields for all of them
 * (draft-ietf-httpapi-ratelimit-headers-11, sections 3 and 4), and `Retry-After` on a denial.
 */
export function rateLimitHeaders(decision: RateLimitDecision): Record<string, string> {
  const shown = mostConstrained(decision);
  const headers: Record<string, string> = {
    'X-RateLimit-Limit': sfInteger(shown.limit),
    'X-RateLimit-Remaining': sfInteger(shown.remaining),
    'X-RateLimit-Reset': sfInteger(shown.resetSeconds),
    'RateLimit-Policy': decision.policies.map((p) => `${POLICY_NAMES[p.name]};q=${sfInteger(p.limit)};w=${sfInteger(p.windowSeconds)}`).join(', '),
    RateLimit: decision.policies.map((p) => `${POLICY_NAMES[p.name]};r=${sfInteger(p.remaining)};t=${sfInteger(p.resetSeconds)}`).join(', '),
  };
  if (!decision.allowed) headers['Retry-After'] = sfInteger(retryAfterOf(decision));
  return headers;
}

/** The violated policy of a denied decision; throws when given an allowed one (a bug in the caller). */
export function describeViolation(decision: RateLimitDecision): Violation {
  if (decision.allowed) throw new Error('describeViolation needs a denied decision');
  const policy = violatedPolicy(decision);
  return { policy: policy.name, limit: policy.limit, windowSeconds: policy.windowSeconds, retryAfterSeconds: retryAfterOf(decision) };
}

/** The violated policy if any, else the one with the smallest share left (the first on a tie). */
function mostConstrained(decision: RateLimitDecision): PolicyState {
  if (!decision.allowed) return violatedPolicy(decision);
  const [first, ...rest] = decision.policies;
  if (!first) throw new Error('a rate-limit decision must report at least one policy');
  return rest.reduce((shown, p) => (p.remaining / p.limit < shown.remaining / shown.limit ? p : shown), first);
}

function violatedPolicy(decision: RateLimitDecision): PolicyState {
  const policy = decision.policies.find((p) => p.name === decision.violated);
  if (!policy) throw new Error(`a denied decision must name one of its policies as violated, got ${String(decision.violated)}`);
  return policy;
}

function retryAfterOf(decision: RateLimitDecision): number {
  if (decision.retryAfterSeconds === undefined) throw new Error('a denied decision must carry retryAfterSeconds');
  return decision.retryAfterSeconds;
}

/** RFC 9651 section 4.1.5: an Integer, here never negative. */
function sfInteger(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > 999_999_999_999_999) {
    throw new RangeError(`rate-limit header values must be non-negative integers, got ${value}`);
  }
  return String(value);
}

/** The policy names as RFC 9651 Strings (section 4.1.6); none needs escaping. */
const POLICY_NAMES: Record<PolicyName, string> = { burst: '"burst"', daily: '"daily"' };
