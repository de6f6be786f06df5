import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseRateLimitFields } from './rate-limit-fields.js';

const NOW_MS = Date.UTC(2026, 10, 23, 12, 0, 0);
const parse = (fields: Record<string, string>) => parseRateLimitFields(new Headers(fields), NOW_MS);

describe('parseRateLimitFields', () => {
  it('reads every policy of the IETF fields, as the predictor sends them', () => {
    assert.deepEqual(
      parse({
        'RateLimit-Policy': '"burst";q=30;w=3, "daily";q=100000;w=86400',
        RateLimit: '"burst";r=29;t=1, "daily";r=99999;t=43200',
        'X-RateLimit-Limit': '30',
        'X-RateLimit-Remaining': '29',
        'X-RateLimit-Reset': '1',
      }),
      [
        { name: 'burst', quota: 30, windowSeconds: 3, remaining: 29, resetSeconds: 1 },
        { name: 'daily', quota: 100_000, windowSeconds: 86_400, remaining: 99_999, resetSeconds: 43_200 },
      ],
    );
  });

  it('accepts token names (earlier drafts) and unknown parameters, whatever the spacing', () => {
    assert.deepEqual(parse({ 'RateLimit-Policy': 'burst;q=10;w=1;qu="requests"', RateLimit: 'burst;r=3;t=1;pk=:AAE=:,  other;r=0;t=5' }), [
      { name: 'burst', quota: 10, windowSeconds: 1, remaining: 3, resetSeconds: 1 },
      { name: 'other', quota: undefined, windowSeconds: undefined, remaining: 0, resetSeconds: 5 },
    ]);
  });

  it('resets a policy without t after its window, or after 1 s when that is unknown too', () => {
    assert.deepEqual(parse({ 'RateLimit-Policy': '"hour";q=100;w=3600', RateLimit: '"hour";r=0, "x";r=0' }), [
      { name: 'hour', quota: 100, windowSeconds: 3_600, remaining: 0, resetSeconds: 3_600 },
      { name: 'x', quota: undefined, windowSeconds: undefined, remaining: 0, resetSeconds: 1 },
    ]);
  });

  it('reads X-RateLimit-* alone as one policy', () => {
    assert.deepEqual(parse({ 'X-RateLimit-Limit': '6', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '3' }), [{ name: 'x-ratelimit', quota: 6, windowSeconds: undefined, remaining: 0, resetSeconds: 3 }]);
  });

  it('reads an X-RateLimit-Reset above 10^9 as a Unix time (GitHub style)', () => {
    const resetAt = NOW_MS / 1000 + 90;
    assert.deepEqual(parse({ 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': String(resetAt) }), [{ name: 'x-ratelimit', quota: undefined, windowSeconds: undefined, remaining: 0, resetSeconds: 90 }]);
    assert.equal(parse({ 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': String(NOW_MS / 1000 - 5) })?.[0]?.resetSeconds, 0);
  });

  it('falls back to X-RateLimit-* when the IETF fields are malformed', () => {
    assert.deepEqual(parse({ RateLimit: 'burst;r=', 'X-RateLimit-Remaining': '4', 'X-RateLimit-Reset': '2' }), [{ name: 'x-ratelimit', quota: undefined, windowSeconds: undefined, remaining: 4, resetSeconds: 2 }]);
  });

  for (const [label, fields] of [
    ['no fields at all', {}],
    ['a RateLimit list whose items lack r', { RateLimit: '"burst";t=1' }],
    ['a negative remaining', { 'X-RateLimit-Remaining': '-1' }],
    ['a remaining that is not a number', { 'X-RateLimit-Remaining': 'lots' }],
    ['a remaining that is an sf-string', { 'X-RateLimit-Remaining': '"5"' }],
    ['two values in one field', { 'X-RateLimit-Remaining': '5, 6' }],
  ] as const) {
    it(`reports nothing for ${label}`, () => {
      assert.equal(parse(fields), undefined);
    });
  }

  it('rounds a fractional remaining down and a fractional reset up', () => {
    assert.deepEqual(parse({ 'X-RateLimit-Remaining': '2.7', 'X-RateLimit-Reset': '0.2' }), [{ name: 'x-ratelimit', quota: undefined, windowSeconds: undefined, remaining: 2, resetSeconds: 1 }]);
  });
});
