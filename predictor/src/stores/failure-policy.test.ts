import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger } from '@m2m/common';
import { createMetrics } from '../http/metrics.js';
import { StoreUnavailable } from '../http/problems.js';
import { MemoryIdempotencyStore } from '../idempotency/memory.js';
import type { IdempotencyStore } from '../idempotency/store.js';
import { MemoryRateLimiter } from '../limits/memory.js';
import type { Plan } from '../limits/plans.js';
import type { RateLimiter } from '../limits/rate-limiter.js';
import { GuardedIdempotencyStore, GuardedRateLimiter, isOutage, StoreGuard, type FailurePolicy } from './failure-policy.js';

const STANDARD: Plan = { name: 'standard', burst: 30, refillPerSecond: 10, dailyQuota: 100_000 };
const NOON = Date.UTC(2026, 10, 23, 12);

/** A shared store that can be switched off, counting the calls that reached it. */
function switchable<T extends object>(inner: T) {
  const state = { up: true, calls: 0 };
  const proxy = new Proxy(inner, {
    get(target, property) {
      const value = Reflect.get(target, property) as unknown;
      if (typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        state.calls += 1;
        if (!state.up) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store: proxy, state };
}

/** A limiter that reports its health, as a shared one must. */
const withHealth = (limiter: RateLimiter) => Object.assign(limiter, { healthy: async () => true });

function setup(policy: FailurePolicy) {
  let now = NOON;
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('predictor', 'info', { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const metrics = createMetrics({ collectProcessMetrics: false });
  const guard = (store: 'rate_limiter' | 'idempotency') => new StoreGuard({ store, engine: 'test-engine', policy, logger, metrics, now: () => now, probeIntervalMs: 1_000 });
  return { guard, metrics, lines, advance: (ms: number) => (now += ms) };
}

async function metricValue(metrics: ReturnType<typeof createMetrics>, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((candidate) => candidate.name === name);
  return metric?.values.find((value) => Object.entries(labels).every(([key, label]) => value.labels[key] === label))?.value;
}

describe('StoreGuard with fail-closed', () => {
  it('answers 503 with Retry-After while Redis is down, logs the change once, and recovers by itself', async () => {
    const { guard, metrics, lines, advance } = setup('fail-closed');
    const shared = switchable(withHealth(new MemoryRateLimiter({ now: () => NOON })));
    const limiter = new GuardedRateLimiter(shared.store, guard('rate_limiter'), 0.5);

    assert.equal((await limiter.consume('c', STANDARD)).allowed, true);
    shared.state.up = false;
    for (let i = 0; i < 3; i += 1) {
      await assert.rejects(limiter.consume('c', STANDARD), (error: unknown) => error instanceof StoreUnavailable && error.status === 503 && error.headers['retry-after'] === '1');
    }
    assert.equal(shared.state.calls, 2, 'while down, only one request per probe interval reaches the store');
    await assert.rejects(limiter.peek('c', STANDARD), StoreUnavailable);
    assert.equal(shared.state.calls, 2, 'the headers of a decided response never probe a store known down');
    assert.equal(lines.filter((line) => line['event'] === 'store.down').length, 1);
    assert.equal(await metricValue(metrics, 'predictor_store_up', { store: 'rate_limiter' }), 0);
    assert.equal(await metricValue(metrics, 'predictor_store_failures_total', { store: 'rate_limiter', action: 'refused' }), 3);

    shared.state.up = true;
    advance(1_000);
    assert.equal((await limiter.consume('c', STANDARD)).allowed, true);
    assert.equal(lines.filter((line) => line['event'] === 'store.up').length, 1);
    assert.equal(await metricValue(metrics, 'predictor_store_up', { store: 'rate_limiter' }), 1);
  });

  it('notices recovery through the readiness probe even without traffic', async () => {
    const { guard } = setup('fail-closed');
    const shared = switchable(withHealth(new MemoryRateLimiter()));
    const limiter = new GuardedRateLimiter(shared.store, guard('rate_limiter'), 0.5);
    shared.state.up = false;
    assert.equal(await limiter.healthy(), false);
    assert.equal(limiter.guard.status, 'down');
    shared.state.up = true;
    assert.equal(await limiter.healthy(), true);
    assert.equal(limiter.guard.status, 'up');
  });
});

describe('what counts as an outage', () => {
  for (const policy of ['fail-closed', 'degrade'] as const) {
    it(`answers 503 for an error of the request itself under ${policy}, logs and counts it, and keeps the store up`, async () => {
      const { guard, metrics, lines } = setup(policy);
      const limiterGuard = guard('rate_limiter');
      const conflict = Object.assign(new Error('could not serialize access (see postgres://app:hunter2@db/prod)'), { code: '40001' });
      await assert.rejects(
        limiterGuard.use(() => Promise.reject(conflict), () => Promise.resolve('fallback')),
        (error: unknown) => error instanceof StoreUnavailable && error.status === 503 && error.headers['retry-after'] === '1' && error.cause === conflict,
      );
      assert.equal(limiterGuard.status, 'up');
      const logged = lines.filter((line) => line['event'] === 'store.error');
      assert.equal(logged.length, 1);
      assert.equal(logged[0]!['code'], '40001');
      assert.match(String(logged[0]!['reason']), /could not serialize access/);
      assert.doesNotMatch(JSON.stringify(logged[0]), /hunter2/, 'a password in the message is masked');
      assert.equal(lines.filter((line) => line['event'] === 'store.down').length, 0);
      assert.equal(await metricValue(metrics, 'predictor_store_errors_total', { store: 'rate_limiter' }), 1);
      assert.equal(await metricValue(metrics, 'predictor_store_up', { store: 'rate_limiter' }), 1);

      // Neither a bug nor a value that is not an Error becomes a 500.
      await assert.rejects(limiterGuard.use(() => Promise.reject(new TypeError('x is undefined')), () => Promise.resolve('fallback')), StoreUnavailable);
      await assert.rejects(limiterGuard.use(() => Promise.reject('a string'), () => Promise.resolve('fallback')), StoreUnavailable);
      assert.equal(limiterGuard.status, 'up');
    });
  }

  it('passes on an HTTP answer decided already', async () => {
    const { guard } = setup('fail-closed');
    const limiterGuard = guard('rate_limiter');
    const decided = new StoreUnavailable('API key');
    await assert.rejects(limiterGuard.use(() => Promise.reject(decided), () => Promise.resolve('fallback')), (error: unknown) => error === decided);
    assert.equal(limiterGuard.status, 'up');
  });

  it('uses the classifier it is given for its engine', async () => {
    const { metrics, lines } = setup('degrade');
    const logger = createLogger('predictor', 'silent');
    const strict = new StoreGuard({ store: 'idempotency', engine: 'test-engine', policy: 'degrade', logger, metrics, isOutage: () => true });
    assert.equal(await strict.use(() => Promise.reject(new Error('anything')), () => Promise.resolve('fallback')), 'fallback');
    assert.equal(strict.status, 'down');
    assert.equal(lines.length, 0);
  });

  it('recognises lost connections, timeouts and cancelled statements of both engines', () => {
    const outages = [
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' }),
      new Error("Stream isn't writeable and enableOfflineQueue options is false"),
      new Error('Command timed out'),
      new Error('Connection terminated unexpectedly'),
      new Error('timeout exceeded when trying to connect'),
      Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }),
      Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
    ];
    for (const error of outages) assert.ok(isOutage(error), error.message);
    assert.ok(!isOutage(Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' })));
    assert.ok(!isOutage(new Error('ERR Error running script')));
  });
});

describe('StoreGuard with degrade', () => {
  it('limits each replica to its fraction of the plan while Redis is down', async () => {
    const { guard, metrics } = setup('degrade');
    const shared = switchable(withHealth(new MemoryRateLimiter({ now: () => NOON })));
    const limiter = new GuardedRateLimiter(shared.store, guard('rate_limiter'), 0.5);
    shared.state.up = false;
    const decisions = [];
    for (let i = 0; i < 20; i += 1) decisions.push(await limiter.consume('c', STANDARD));
    assert.equal(decisions.filter((decision) => decision.allowed).length, 15, 'half the burst of 30');
    assert.equal(decisions[0]?.policies[0]?.limit, 15);
    assert.equal(await metricValue(metrics, 'predictor_store_failures_total', { store: 'rate_limiter', action: 'fallback' }), 20);
  });

  const ANSWER = { status: 200, headers: {}, body: '{"id":"pred_1"}' };

  it('completes a claim taken in the fallback there, even once PostgreSQL is back', async () => {
    const { guard, advance } = setup('degrade');
    const shared = switchable<IdempotencyStore>(new MemoryIdempotencyStore());
    const store = new GuardedIdempotencyStore(shared.store, guard('idempotency'), {});
    shared.state.up = false;
    const claim = await store.claim('c', 'k', 'fp');
    assert.equal(claim.outcome, 'claimed');
    shared.state.up = true;
    advance(1_000);
    assert.equal(await store.renew('c', 'k', claim.token), 'ok');
    assert.equal(await store.complete('c', 'k', claim.token, ANSWER), 'ok');
    assert.equal(shared.state.calls, 1, 'neither the renewal nor the completion went to the shared store');
  });

  it('keeps replaying a key it executed from memory during the outage once PostgreSQL is back, without executing it again', async () => {
    const { guard, advance } = setup('degrade');
    const shared = switchable<IdempotencyStore>(new MemoryIdempotencyStore());
    const store = new GuardedIdempotencyStore(shared.store, guard('idempotency'), {});
    shared.state.up = false;
    const claim = await store.claim('c', 'k', 'fp');
    assert.equal(claim.outcome, 'claimed');
    await store.complete('c', 'k', claim.token, ANSWER);
    assert.deepEqual(await store.claim('c', 'k', 'fp'), { outcome: 'replay', response: ANSWER }, 'replayed during the outage');

    shared.state.up = true;
    advance(1_000);
    assert.deepEqual(await store.claim('c', 'k', 'fp'), { outcome: 'replay', response: ANSWER }, 'replayed after it');
    assert.deepEqual(await store.claim('c', 'k', 'fp-other'), { outcome: 'mismatch' });
    assert.equal(shared.state.calls, 1, 'the shared store was never asked about the key once it was back');
    assert.equal((await store.claim('c', 'other-key', 'fp')).outcome, 'claimed', 'other keys go to the shared store again');
    assert.equal(shared.state.calls, 2);
  });

  it('answers 409 to a duplicate of a key this replica holds in PostgreSQL when PostgreSQL goes down meanwhile', async () => {
    const { guard, advance } = setup('degrade');
    const shared = switchable<IdempotencyStore>(new MemoryIdempotencyStore());
    const store = new GuardedIdempotencyStore(shared.store, guard('idempotency'), {});
    const claim = await store.claim('c', 'k', 'fp');
    assert.equal(claim.outcome, 'claimed');
    shared.state.up = false;
    advance(1_000);
    assert.equal((await store.claim('c', 'unrelated', 'fp')).outcome, 'claimed', 'the store is down: the fallback serves');
    assert.deepEqual(await store.claim('c', 'k', 'fp'), { outcome: 'in-flight', retryAfterSeconds: 1 }, 'not claimed again in memory');
    assert.deepEqual(await store.claim('c', 'k', 'fp-other'), { outcome: 'mismatch' });

    // Its holder cannot store its answer while PostgreSQL is down: it may still release the lease.
    await assert.rejects(store.complete('c', 'k', claim.token, ANSWER));
    shared.state.up = true;
    assert.equal(await store.release('c', 'k', claim.token), 'ok');
    assert.equal(await store.complete('c', 'k', claim.token, ANSWER), 'lost', 'a finished lease is gone');
  });

  it('answers 409 to a duplicate that arrives while the claim is still being made', async () => {
    const { guard } = setup('degrade');
    const store = new GuardedIdempotencyStore(new MemoryIdempotencyStore(), guard('idempotency'), {});
    const [first, second] = await Promise.all([store.claim('c', 'k', 'fp'), store.claim('c', 'k', 'fp')]);
    assert.equal(first.outcome, 'claimed');
    assert.deepEqual(second, { outcome: 'in-flight', retryAfterSeconds: 1 });
  });

  it('forgets a lease the store reports lost, so the key replays the successor\'s answer here instead of 409 forever', async () => {
    const { guard } = setup('fail-closed');
    let now = NOON;
    const shared = new MemoryIdempotencyStore({ leaseMs: 5_000, now: () => now });
    const store = new GuardedIdempotencyStore(shared, guard('idempotency'), {});
    const stalled = await store.claim('c', 'k', 'fp');
    assert.equal(stalled.outcome, 'claimed');
    now += 5_000;
    const successor = await shared.claim('c', 'k', 'fp'); // another replica takes it over
    assert.equal(successor.outcome, 'claimed');
    await shared.complete('c', 'k', successor.token, ANSWER);

    assert.equal(await store.renew('c', 'k', stalled.token), 'lost');
    assert.deepEqual(await store.claim('c', 'k', 'fp'), { outcome: 'replay', response: ANSWER });
  });
});
