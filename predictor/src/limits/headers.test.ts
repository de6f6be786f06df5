import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeViolation, rateLimitHeaders } from './headers.js';
import { MemoryRateLimiter } from './memory.js';
import type { Plan } from './plans.js';
import type { RateLimitDecision } from './rate-limiter.js';

const FREE: Plan = { name: 'free', burst: 6, refillPerSecond: 2, dailyQuota: 1000 };
const STANDARD: Plan = { name: 'standard', burst: 30, refillPerSecond: 10, dailyQuota: 100_000 };
const NOON = Date.UTC(2025, 5, 1, 12, 0, 0);

describe('rateLimitHeaders', () => {
  it('describes a fresh standard client after one request', async () => {
    const limiter = new MemoryRateLimiter({ now: () => NOON });
    assert.deepEqual(rateLimitHeaders(await limiter.consume('c', STANDARD)), {
      'X-RateLimit-Limit': '30',
      'X-RateLimit-Remaining': '29',
      'X-RateLimit-Reset': '1',
      'RateLimit-Policy': '"burst";q=30;w=3, "daily";q=100000;w=86400',
      RateLimit: '"burst";r=29;t=1, "daily";r=99999;t=43200',
    });
  });

  it('adds Retry-After and shows the violated policy for a client over its burst', async () => {
    const limiter = new MemoryRateLimiter({ now: () => NOON });
    for (let i = 0; i < 6; i += 1) await limiter.consume('c', FREE);
    assert.deepEqual(rateLimitHeaders(await limiter.consume('c', FREE)), {
      'X-RateLimit-Limit': '6',
      'X-RateLimit-Remaining': '0',
      'X-RateLimit-Reset': '3',
      'RateLimit-Policy': '"burst";q=6;w=3, "daily";q=1000;w=86400',
      RateLimit: '"burst";r=0;t=3, "daily";r=994;t=43200',
      'Retry-After': '1',
    });
  });

  it('shows the daily quota once it is the violated policy, even with tokens left', () => {
    const decision: RateLimitDecision = {
      allowed: false,
      violated: 'daily',
      retryAfterSeconds: 600,
      policies: [
        { name: 'burst', limit: 6, remaining: 6, resetSeconds: 0, windowSeconds: 3 },
        { name: 'daily', limit: 1000, remaining: 0, resetSeconds: 600, windowSeconds: 86_400 },
      ],
    };
    const headers = rateLimitHeaders(decision);
    assert.deepEqual(
      [headers['X-RateLimit-Limit'], headers['X-RateLimit-Remaining'], headers['X-RateLimit-Reset'], headers['Retry-After']],
      ['1000', '0', '600', '600'],
    );
  });

  it('shows the policy with the smallest share left when nothing is violated', () => {
    const decision: RateLimitDecision = {
      allowed: true,
      policies: [
        { name: 'burst', limit: 30, remaining: 25, resetSeconds: 1, windowSeconds: 3 },
        { name: 'daily', limit: 100_000, remaining: 10, resetSeconds: 7200, windowSeconds: 86_400 },
      ],
    };
    const headers = rateLimitHeaders(decision);
    assert.deepEqual([headers['X-RateLimit-Limit'], headers['X-RateLimit-Remaining'], headers['X-RateLimit-Reset']], ['100000', '10', '7200']);
    assert.equal(headers['Retry-After'], undefined);
  });

  it('refuses values that are not structured-field integers', () => {
    const decision: RateLimitDecision = {
      allowed: true,
      policies: [{ name: 'burst', limit: 30, remaining: 2.5, resetSeconds: 1, windowSeconds: 3 }],
    };
    assert.throws(() => rateLimitHeaders(decision), RangeError);
  });
});

describe('describeViolation', () => {
  it('names the violated policy, its limit and window, and when to retry', async () => {
    const limiter = new MemoryRateLimiter({ now: () => NOON });
    for (let i = 0; i < 6; i += 1) await limiter.consume('c', FREE);
    assert.deepEqual(describeViolation(await limiter.consume('c', FREE)), {
      policy: 'burst',
      limit: 6,
      windowSeconds: 3,
      retryAfterSeconds: 1,
    });
  });

  it('refuses an allowed decision', async () => {
    const limiter = new MemoryRateLimiter({ now: () => NOON });
    const allowed = await limiter.consume('c', FREE);
    assert.throws(() => describeViolation(allowed), /denied decision/);
  });
});
