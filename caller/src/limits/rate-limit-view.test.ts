import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Clock } from '../retry/clock.js';
import { ManualClock } from '../testing/manual-clock.js';
import { seededRandom } from '../testing/seeded-random.js';
import { VirtualClock } from '../testing/virtual-clock.js';
import type { PolicyReport } from './rate-limit-fields.js';
import { NoRoomError, RateLimitView, type Permit, type RoomRequest } from './rate-limit-view.js';

/** Network latency each way in the simulations (in milliseconds). */
const ONE_WAY_MS = 5;
const NO_LIMITS: RoomRequest = { maxWaitMs: 30_000, deadlineAt: Number.POSITIVE_INFINITY };
/** A policy without `w`, read as a fixed window: `r` now, the whole quota after `t`. */
const burst = (remaining: number, resetSeconds: number, quota = 30): PolicyReport => ({ name: 'burst', quota, windowSeconds: undefined, remaining, resetSeconds });
const daily = (remaining: number, resetSeconds: number): PolicyReport => ({ name: 'daily', quota: 1_000, windowSeconds: 86_400, remaining, resetSeconds });
const answered = (...policies: PolicyReport[]) => ({ answered: true, policies: policies.length > 0 ? policies : undefined });

/** Whether the promise has settled after the pending microtasks ran. */
async function isSettled(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 20; i += 1) await Promise.resolve();
  return settled;
}

/**
 * The predictor's token bucket (predictor/src/limits/rate-limiter.ts) on the test's clock:
 * continuous refill, `r` rounded down, `t` (until full) rounded up, one unit per admitted request.
 */
function tokenBucketServer(clock: Clock, plan: { burst: number; refillPerSecond: number }) {
  let tokens = plan.burst;
  let at = clock.now();
  const counts = { admitted: 0, refused: 0 };
  return {
    counts,
    charge(): PolicyReport {
      tokens = Math.min(plan.burst, tokens + ((clock.now() - at) / 1000) * plan.refillPerSecond);
      at = clock.now();
      if (tokens >= 1 - 1e-9) {
        tokens -= 1;
        counts.admitted += 1;
      } else {
        counts.refused += 1;
      }
      return { name: 'burst', quota: plan.burst, windowSeconds: Math.ceil(plan.burst / plan.refillPerSecond), remaining: Math.floor(tokens + 1e-9), resetSeconds: Math.ceil(Math.max(0, plan.burst - tokens - 1e-9) / plan.refillPerSecond) };
    },
  };
}

describe('RateLimitView', () => {
  it('sends one request at a time until the first answer tells the limits', async () => {
    const view = new RateLimitView({ clock: new ManualClock() });
    const first = await view.acquire(NO_LIMITS);
    const second = view.acquire(NO_LIMITS);
    assert.equal(await isSettled(second), false);
    first.settle(answered(burst(29, 1)));
    assert.equal(await isSettled(second), true);
  });

  it('stops pacing once an answer carries no rate-limit fields', async () => {
    const view = new RateLimitView({ clock: new ManualClock() });
    (await view.acquire(NO_LIMITS)).settle(answered());
    const permits = await Promise.all(Array.from({ length: 100 }, () => view.acquire(NO_LIMITS)));
    assert.equal(permits.length, 100);
  });

  it('keeps probing one at a time while attempts get no answer at all', async () => {
    const view = new RateLimitView({ clock: new ManualClock() });
    (await view.acquire(NO_LIMITS)).settle({ answered: false, policies: undefined });
    await view.acquire(NO_LIMITS);
    assert.equal(await isSettled(view.acquire(NO_LIMITS)), false);
  });

  it('spends what the server says is left, then waits until its reset, and has the whole quota again', async () => {
    const clock = new ManualClock();
    const view = new RateLimitView({ clock });
    (await view.acquire(NO_LIMITS)).settle(answered(burst(2, 3, 5)));
    (await view.acquire(NO_LIMITS)).settle(answered(burst(1, 3, 5)));
    (await view.acquire(NO_LIMITS)).settle(answered(burst(0, 3, 5)));
    assert.deepEqual(clock.sleeps, []);
    const third = await view.acquire(NO_LIMITS);
    assert.deepEqual(clock.sleeps, [3_000]);
    assert.equal(third.waitedMs, 3_000);
    // The whole quota (5) is back: the third took one, four more go without waiting.
    for (let i = 0; i < 4; i += 1) await view.acquire(NO_LIMITS);
    assert.deepEqual(clock.sleeps, [3_000]);
    assert.equal(view.policies()[0]?.remaining, 0);
  });

  it('reads a short window as a token bucket: once drained, one unit comes back every w / q', async () => {
    const clock = new ManualClock();
    const view = new RateLimitView({ clock });
    (await view.acquire(NO_LIMITS)).settle(answered({ name: 'burst', quota: 30, windowSeconds: 3, remaining: 0, resetSeconds: 3 }));
    for (let i = 0; i < 3; i += 1) (await view.acquire(NO_LIMITS)).settle({ answered: true, policies: undefined });
    assert.deepEqual(clock.sleeps, [100, 100, 100]);
  });

  it('reads a long window (a daily quota) as a fixed one: nothing comes back before its reset', async () => {
    const clock = new ManualClock();
    const view = new RateLimitView({ clock });
    (await view.acquire(NO_LIMITS)).settle(answered({ name: 'hourly', quota: 3_600, windowSeconds: 3_600, remaining: 0, resetSeconds: 20 }));
    await view.acquire(NO_LIMITS);
    assert.deepEqual(clock.sleeps, [20_000]);
  });

  it('serves waiting calls first come, first served', async () => {
    const clock = new ManualClock();
    const view = new RateLimitView({ clock });
    (await view.acquire(NO_LIMITS)).settle(answered(burst(0, 1, 2)));
    const order: number[] = [];
    const call = async (n: number) => {
      const permit = await view.acquire(NO_LIMITS);
      order.push(n);
      permit.settle(answered(burst(0, 1, 2)));
    };
    await Promise.all([1, 2, 3, 4, 5].map(call));
    assert.deepEqual(order, [1, 2, 3, 4, 5]);
    // Two per reset: 1 and 2, then 3 and 4, then 5.
    assert.deepEqual(clock.sleeps, [1_000, 1_000, 1_000]);
  });

  it('counts the requests still in flight or settled while an answer was out, which the server may have counted after it, and ignores an answer older than one applied', async () => {
    const view = new RateLimitView({ clock: new ManualClock() });
    (await view.acquire(NO_LIMITS)).settle(answered(burst(10, 1)));
    const [a, b, c] = [await view.acquire(NO_LIMITS), await view.acquire(NO_LIMITS), await view.acquire(NO_LIMITS)];
    a.settle(answered(burst(9, 1))); // b and c still in flight
    assert.equal(view.policies()[0]?.remaining, 7);
    // b still in flight: the server may have charged it before c, or not yet; a answered while c
    // was out: the server may have charged it after c's r (answers need not come in its order).
    c.settle(answered(burst(7, 1)));
    assert.equal(view.policies()[0]?.remaining, 5);
    b.settle(answered(burst(8, 1))); // sent before c, whose answer is applied: ignored
    assert.equal(view.policies()[0]?.remaining, 5);
  });

  it('refuses at once, with the time it resets, when a quota is spent beyond the wait cap', async () => {
    const clock = new ManualClock();
    const view = new RateLimitView({ clock });
    (await view.acquire(NO_LIMITS)).settle(answered(burst(29, 1), daily(0, 43_200)));
    await assert.rejects(view.acquire(NO_LIMITS), (error: unknown) => error instanceof NoRoomError && error.policy === 'daily' && error.waitMs === 43_200_000 && error.why === 'beyond-wait-cap');
    assert.deepEqual(clock.sleeps, []);
    assert.deepEqual(view.blockedUntil(), { policy: 'daily', atMs: clock.now() + 43_200_000 });
  });

  it('refuses at once when the room comes after the deadline', async () => {
    const clock = new ManualClock();
    const view = new RateLimitView({ clock });
    (await view.acquire(NO_LIMITS)).settle(answered(burst(0, 3)));
    await assert.rejects(view.acquire({ maxWaitMs: 30_000, deadlineAt: clock.now() + 2_000 }), (error: unknown) => error instanceof NoRoomError && error.why === 'beyond-deadline');
    assert.deepEqual(clock.sleeps, []);
  });

  it('lets an aborted call leave the queue without taking room', async () => {
    const view = new RateLimitView({ clock: new ManualClock() });
    const probe = await view.acquire(NO_LIMITS);
    const controller = new AbortController();
    const leaving = view.acquire({ ...NO_LIMITS, signal: controller.signal });
    const staying = view.acquire(NO_LIMITS);
    controller.abort(new Error('gave up'));
    await assert.rejects(leaving, /gave up/);
    assert.equal(view.waiting, 1);
    probe.settle(answered(burst(5, 1)));
    await staying;
    assert.equal(view.waiting, 0);
  });

  for (const plan of [
    { name: 'standard', burst: 30, refillPerSecond: 10, concurrency: 20 },
    { name: 'free', burst: 6, refillPerSecond: 2, concurrency: 100 },
  ]) {
    it(`keeps ${plan.concurrency} concurrent callers inside a ${plan.name} token bucket: 1 000 sends, no refusal, ≥ 90% of the sustained rate`, async () => {
      const clock = new VirtualClock();
      const view = new RateLimitView({ clock });
      const server = tokenBucketServer(clock, plan);
      const started = clock.now();
      let sent = 0;
      const worker = async () => {
        while (sent < 1_000) {
          sent += 1;
          const permit: Permit = await view.acquire(NO_LIMITS);
          await clock.sleep(ONE_WAY_MS);
          const report = server.charge();
          await clock.sleep(ONE_WAY_MS);
          permit.settle(answered(report));
        }
      };
      await clock.run(Promise.all(Array.from({ length: plan.concurrency }, worker)));
      assert.equal(server.counts.refused, 0);
      assert.equal(server.counts.admitted, 1_000);
      const sustainedSeconds = (clock.now() - started) / 1000;
      const rate = (1_000 - plan.burst) / sustainedSeconds;
      assert.ok(rate >= 0.9 * plan.refillPerSecond, `${rate.toFixed(2)} req/s after the burst, plan ${plan.refillPerSecond}`);
    });
  }

  it('keeps 100 callers inside a token bucket when answers come back out of order (latency 1-400 ms each way): no refusal', async () => {
    // An answer older than one applied is ignored, so the charges of the requests it answers
    // show only in the refill: a level set back to the whole quota at the applied answer's
    // reset (which knew nothing of them) was optimistic, and under load 2% of sends got 429.
    const clock = new VirtualClock();
    const view = new RateLimitView({ clock });
    const server = tokenBucketServer(clock, { burst: 90, refillPerSecond: 30 });
    const latency = seededRandom(7);
    let sent = 0;
    const worker = async () => {
      while (sent < 1_000) {
        sent += 1;
        const permit = await view.acquire(NO_LIMITS);
        await clock.sleep(1 + latency() * 399);
        const report = server.charge();
        await clock.sleep(1 + latency() * 399);
        permit.settle(answered(report));
      }
    };
    await clock.run(Promise.all(Array.from({ length: 100 }, worker)));
    assert.equal(server.counts.refused, 0);
    assert.equal(server.counts.admitted, 1_000);
  });

  it('keeps to X-RateLimit-* alone (one policy, the most constrained) inside the same bucket', async () => {
    const clock = new VirtualClock();
    const view = new RateLimitView({ clock });
    const server = tokenBucketServer(clock, { burst: 30, refillPerSecond: 10 });
    let sent = 0;
    const worker = async () => {
      while (sent < 300) {
        sent += 1;
        const permit = await view.acquire(NO_LIMITS);
        await clock.sleep(ONE_WAY_MS);
        const { remaining, resetSeconds } = server.charge();
        await clock.sleep(ONE_WAY_MS);
        permit.settle(answered({ name: 'x-ratelimit', quota: 30, windowSeconds: undefined, remaining, resetSeconds }));
      }
    };
    await clock.run(Promise.all(Array.from({ length: 20 }, worker)));
    assert.equal(server.counts.refused, 0);
  });
});
