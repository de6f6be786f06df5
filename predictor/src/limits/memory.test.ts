import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryRateLimiter } from './memory.js';
import type { Plan } from './plans.js';
import type { PolicyName, RateLimitDecision } from './rate-limiter.js';

const FREE: Plan = { name: 'free', burst: 6, refillPerSecond: 2, dailyQuota: 1000 };
const STANDARD: Plan = { name: 'standard', burst: 30, refillPerSecond: 10, dailyQuota: 100_000 };
/** A plan whose daily quota runs out long before the bucket does. */
const TINY_DAILY: Plan = { name: 'tiny-daily', burst: 10, refillPerSecond: 10, dailyQuota: 3 };

const NOON = Date.UTC(2025, 5, 1, 12, 0, 0);

/** A clock that moves only when told to. */
function manualClock(startMs = NOON) {
  let nowMs = startMs;
  return {
    now: () => nowMs,
    advance(ms: number) {
      nowMs += ms;
    },
    set(ms: number) {
      nowMs = ms;
    },
  };
}

function remaining(decision: RateLimitDecision, policy: PolicyName): number | undefined {
  return decision.policies.find((p) => p.name === policy)?.remaining;
}

describe('MemoryRateLimiter', () => {
  it('admits exactly the burst of 100 concurrent requests at one instant', async () => {
    const limiter = new MemoryRateLimiter({ now: manualClock().now });
    const decisions = await Promise.all(Array.from({ length: 100 }, () => limiter.consume('c', FREE)));
    assert.equal(decisions.filter((d) => d.allowed).length, 6);
    assert.deepEqual(decisions.slice(0, 6).map((d) => d.allowed), [true, true, true, true, true, true]);
    const denied = decisions[6];
    assert.equal(denied?.violated, 'burst');
    assert.equal(denied?.retryAfterSeconds, 1, 'one token takes 0.5 s on free, rounded up');
  });

  it('admits the next request once retryAfterSeconds have passed', async () => {
    const clock = manualClock();
    const limiter = new MemoryRateLimiter({ now: clock.now });
    for (let i = 0; i < 6; i += 1) await limiter.consume('c', FREE);
    const denied = await limiter.consume('c', FREE);
    assert.equal(denied.allowed, false);
    clock.advance((denied.retryAfterSeconds ?? Number.NaN) * 1000);
    assert.equal((await limiter.consume('c', FREE)).allowed, true);
  });

  it('never tells a client to retry before a token is back, whatever the rate', async () => {
    for (const refillPerSecond of [0.3, 1 / 3, 0.7, 3, 7, 10]) {
      const plan: Plan = { name: 'odd', burst: 1, refillPerSecond, dailyQuota: 1000 };
      const clock = manualClock(NOON + 123);
      const limiter = new MemoryRateLimiter({ now: clock.now });
      for (let round = 0; round < 20; round += 1) {
        let denied = await limiter.consume('c', plan);
        while (denied.allowed) denied = await limiter.consume('c', plan);
        clock.advance((denied.retryAfterSeconds ?? Number.NaN) * 1000);
        assert.equal((await limiter.consume('c', plan)).allowed, true, `rate ${refillPerSecond}, round ${round}`);
      }
    }
  });

  it('counts a token refilled in many small steps as whole, despite float rounding', async () => {
    const plan: Plan = { name: 'slow', burst: 1, refillPerSecond: 0.1, dailyQuota: 1000 };
    const clock = manualClock();
    const limiter = new MemoryRateLimiter({ now: clock.now });
    await limiter.consume('c', plan);
    const denied = await limiter.consume('c', plan);
    assert.equal(denied.retryAfterSeconds, 10);
    for (let ms = 0; ms < 10_000; ms += 1) {
      clock.advance(1);
      await limiter.peek('c', plan);
    }
    assert.equal((await limiter.consume('c', plan)).allowed, true);
  });

  it('refills continuously: half a second on free gives back one token', async () => {
    const clock = manualClock();
    const limiter = new MemoryRateLimiter({ now: clock.now });
    for (let i = 0; i < 6; i += 1) await limiter.consume('c', FREE);
    clock.advance(499);
    assert.equal(remaining(await limiter.peek('c', FREE), 'burst'), 0);
    clock.advance(1);
    assert.equal(remaining(await limiter.peek('c', FREE), 'burst'), 1);
    assert.equal((await limiter.consume('c', FREE)).allowed, true);
    assert.equal((await limiter.consume('c', FREE)).allowed, false);
  });

  it('admits burst + rate x time over 10 s of requests every 10 ms', async () => {
    const clock = manualClock();
    const limiter = new MemoryRateLimiter({ now: clock.now });
    let admitted = 0;
    for (let elapsedMs = 0; elapsedMs <= 10_000; elapsedMs += 10) {
      if ((await limiter.consume('c', FREE)).allowed) admitted += 1;
      clock.advance(10);
    }
    const expected = FREE.burst + FREE.refillPerSecond * 10;
    assert.ok(Math.abs(admitted - expected) <= 1, `admitted ${admitted}, expected ${expected} +- 1`);
  });

  it('stops a spent bucket from growing past the burst while idle', async () => {
    const clock = manualClock();
    const limiter = new MemoryRateLimiter({ now: clock.now });
    await limiter.consume('c', FREE);
    clock.advance(3_600_000);
    const decision = await limiter.peek('c', FREE);
    assert.equal(remaining(decision, 'burst'), FREE.burst);
    assert.equal(decision.policies.find((p) => p.name === 'burst')?.resetSeconds, 0);
  });

  it('denies an exhausted daily quota until the next UTC midnight, rounded up', async () => {
    const clock = manualClock(Date.UTC(2025, 5, 1, 23, 58, 59, 250));
    const limiter = new MemoryRateLimiter({ now: clock.now });
    for (let i = 0; i < 3; i += 1) assert.equal((await limiter.consume('c', TINY_DAILY)).allowed, true);
    const denied = await limiter.consume('c', TINY_DAILY);
    assert.equal(denied.allowed, false);
    assert.equal(denied.violated, 'daily');
    assert.equal(denied.retryAfterSeconds, 61, '60.75 s to midnight');
    assert.equal(remaining(denied, 'daily'), 0);

    clock.set(Date.UTC(2025, 5, 1, 23, 59, 59, 999));
    assert.equal((await limiter.consume('c', TINY_DAILY)).allowed, false);
    clock.set(Date.UTC(2025, 5, 2, 0, 0, 0, 0));
    const nextDay = await limiter.consume('c', TINY_DAILY);
    assert.equal(nextDay.allowed, true);
    assert.equal(remaining(nextDay, 'daily'), 2);
    assert.equal(nextDay.policies.find((p) => p.name === 'daily')?.resetSeconds, 86_400);
  });

  it('does not charge the daily quota for requests the bucket refused', async () => {
    const limiter = new MemoryRateLimiter({ now: manualClock().now });
    for (let i = 0; i < 100; i += 1) await limiter.consume('c', FREE);
    assert.equal(remaining(await limiter.peek('c', FREE), 'daily'), FREE.dailyQuota - FREE.burst);
  });

  it('does not take tokens for requests the daily quota refused', async () => {
    const limiter = new MemoryRateLimiter({ now: manualClock().now });
    for (let i = 0; i < 10; i += 1) await limiter.consume('c', TINY_DAILY);
    assert.equal(remaining(await limiter.peek('c', TINY_DAILY), 'burst'), TINY_DAILY.burst - TINY_DAILY.dailyQuota);
  });

  it('names the policy with the longer wait when both are exhausted', async () => {
    const plan: Plan = { name: 'both', burst: 2, refillPerSecond: 0.001, dailyQuota: 2 };
    const clock = manualClock(Date.UTC(2025, 5, 1, 23, 59, 0));
    const limiter = new MemoryRateLimiter({ now: clock.now });
    await limiter.consume('c', plan);
    await limiter.consume('c', plan);
    const nearMidnight = await limiter.consume('c', plan);
    assert.deepEqual([nearMidnight.violated, nearMidnight.retryAfterSeconds], ['burst', 1000]);

    clock.set(Date.UTC(2025, 5, 2, 0, 0, 0));
    await limiter.consume('early', plan);
    await limiter.consume('early', plan);
    const earlyInTheDay = await limiter.consume('early', plan);
    assert.deepEqual([earlyInTheDay.violated, earlyInTheDay.retryAfterSeconds], ['daily', 86_400]);
  });

  it('peek reports the state without taking anything', async () => {
    const limiter = new MemoryRateLimiter({ now: manualClock().now });
    await limiter.consume('c', STANDARD);
    for (let i = 0; i < 50; i += 1) await limiter.peek('c', STANDARD);
    const peeked = await limiter.peek('c', STANDARD);
    assert.equal(peeked.allowed, true);
    assert.equal(remaining(peeked, 'burst'), 29);
    assert.equal(remaining(peeked, 'daily'), 99_999);
  });

  it('peek of a spent bucket says the next request would be refused, and when to retry', async () => {
    const limiter = new MemoryRateLimiter({ now: manualClock().now });
    for (let i = 0; i < 6; i += 1) await limiter.consume('c', FREE);
    const peeked = await limiter.peek('c', FREE);
    assert.deepEqual([peeked.allowed, peeked.violated, peeked.retryAfterSeconds], [false, 'burst', 1]);
  });

  it('keeps clients independent', async () => {
    const limiter = new MemoryRateLimiter({ now: manualClock().now });
    for (let i = 0; i < 10; i += 1) await limiter.consume('a', FREE);
    assert.equal((await limiter.consume('a', FREE)).allowed, false);
    const other = await limiter.consume('b', FREE);
    assert.equal(other.allowed, true);
    assert.equal(remaining(other, 'burst'), 5);
  });

  it('reports whole remaining counts and reset times for a fresh standard client', async () => {
    const limiter = new MemoryRateLimiter({ now: manualClock().now });
    const decision = await limiter.consume('c', STANDARD);
    assert.deepEqual(decision, {
      allowed: true,
      policies: [
        { name: 'burst', limit: 30, remaining: 29, resetSeconds: 1, windowSeconds: 3 },
        { name: 'daily', limit: 100_000, remaining: 99_999, resetSeconds: 43_200, windowSeconds: 86_400 },
      ],
    });
  });

  it('forgets the least recently used clients beyond maxClients', async () => {
    const limiter = new MemoryRateLimiter({ now: manualClock().now, maxClients: 3 });
    for (const client of ['a', 'b', 'c']) await limiter.consume(client, FREE);
    await limiter.consume('a', FREE); // 'b' is now the least recently used
    await limiter.consume('d', FREE);
    await limiter.consume('e', FREE);
    assert.equal(limiter.size, 3);
    assert.equal(remaining(await limiter.peek('a', FREE), 'daily'), FREE.dailyQuota - 2, "'a' was kept");
    assert.equal(remaining(await limiter.peek('b', FREE), 'daily'), FREE.dailyQuota, "'b' was forgotten");
    assert.equal(limiter.size, 3, 'peek of an unknown client remembers nothing');
  });

  it('refills nothing when the clock steps backwards', async () => {
    const clock = manualClock();
    const limiter = new MemoryRateLimiter({ now: clock.now });
    for (let i = 0; i < 6; i += 1) await limiter.consume('c', FREE);
    clock.advance(-60_000);
    assert.equal((await limiter.consume('c', FREE)).allowed, false);
    clock.advance(60_500);
    assert.equal((await limiter.consume('c', FREE)).allowed, true);
  });

  it('rejects a maxClients below 1', () => {
    assert.throws(() => new MemoryRateLimiter({ maxClients: 0 }), RangeError);
  });
});
