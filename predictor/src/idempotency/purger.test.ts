import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger } from '@m2m/common';
import { createMetrics } from '../http/metrics.js';
import { TEST_DATABASE_URL, withTestDatabase } from '../testing/engines.js';
import { MemoryIdempotencyStore } from './memory.js';
import { PostgresIdempotencyStore } from './postgres.js';
import { IdempotencyPurger } from './purger.js';
import { claimAndComplete, ManualClock, RESPONSE } from './store-contract.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';

const quietLogger = () => createLogger('predictor', 'silent');

async function gauge(metrics: ReturnType<typeof createMetrics>, name: string): Promise<number | undefined> {
  return (await metrics.registry.getMetricsAsJSON()).find((metric) => metric.name === name)?.values[0]?.value;
}

describe('IdempotencyPurger', () => {
  it('deletes every expired record in one run, batch after batch, and reports none left', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore({ retentionMs: 60_000, now: clock.now });
    for (let index = 0; index < 25; index += 1) await claimAndComplete(store, 'client-a', `old-${index}`, 'fp', RESPONSE);
    clock.advance(60_000);
    await claimAndComplete(store, 'client-a', 'fresh', 'fp', RESPONSE);
    const metrics = createMetrics({ collectProcessMetrics: false });
    const purger = new IdempotencyPurger({ store, logger: quietLogger(), metrics, batchSize: 10 });

    assert.deepEqual(await purger.runOnce(), { purged: 25, batches: 3, expiredLeft: 0, sentEventsPurged: 0 });
    assert.equal(store.size, 1);
    assert.equal(await gauge(metrics, 'predictor_idempotency_expired_records'), 0);
    assert.equal(await gauge(metrics, 'predictor_idempotency_purged_total'), 25);
  });

  it('shows in the gauge the expired records a run leaves behind: those that expired while it ran', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore({ retentionMs: 60_000, now: clock.now });
    for (let index = 0; index < 25; index += 1) await claimAndComplete(store, 'client-a', `old-${index}`, 'fp', RESPONSE);
    clock.advance(30_000);
    for (let index = 0; index < 7; index += 1) await claimAndComplete(store, 'client-a', `later-${index}`, 'fp', RESPONSE);
    clock.advance(30_000);
    // The run's last batch (short of the batch size) ends the loop; meanwhile time passes and the later records expire too.
    const purgeExpired = store.purgeExpired.bind(store);
    store.purgeExpired = async (batchSize) => {
      const deleted = await purgeExpired(batchSize);
      if (deleted < batchSize!) clock.advance(30_000);
      return deleted;
    };
    const metrics = createMetrics({ collectProcessMetrics: false });
    const purger = new IdempotencyPurger({ store, logger: quietLogger(), metrics, batchSize: 10 });

    assert.deepEqual(await purger.runOnce(), { purged: 25, batches: 3, expiredLeft: 7, sentEventsPurged: 0 });
    assert.equal(await gauge(metrics, 'predictor_idempotency_expired_records'), 7);
    assert.match(await metrics.registry.metrics(), /^predictor_idempotency_expired_records 7$/m);

    store.purgeExpired = purgeExpired;
    assert.equal((await purger.runOnce()).expiredLeft, 0);
    assert.equal(await gauge(metrics, 'predictor_idempotency_expired_records'), 0, 'the next run clears them and the gauge');
  });

  it('joins a run under way instead of starting a second one', async () => {
    const store = new MemoryIdempotencyStore();
    const purger = new IdempotencyPurger({ store, logger: quietLogger(), metrics: createMetrics({ collectProcessMetrics: false }) });
    const [first, second] = [purger.runOnce(), purger.runOnce()];
    assert.equal(first, second);
    await first;
  });
});

describe('IdempotencyPurger on PostgreSQL', { skip: skipUnlessEngines(['postgres']) }, () => {
  const database = withTestDatabase();

  it('shows in the gauge the expired rows a run had to skip (locked by another transaction), and clears it once they are purged', async () => {
    const clock = new ManualClock();
    const schema = database.schema('purge_left');
    const admin = database.admin();
    const store = await PostgresIdempotencyStore.open({ connectionString: TEST_DATABASE_URL, schema, retentionMs: 60_000, now: clock.now });
    const metrics = createMetrics({ collectProcessMetrics: false });
    const purger = new IdempotencyPurger({ store, logger: quietLogger(), metrics, batchSize: 10 });
    try {
      for (let index = 0; index < 25; index += 1) await claimAndComplete(store, 'client-a', `old-${index}`, 'fp', RESPONSE);
      clock.advance(60_000);
      // Another transaction (a replica taking a key over, a purge elsewhere) holds 5 expired rows: SKIP LOCKED leaves them.
      await admin.query('BEGIN');
      try {
        const locked = await admin.query(`SELECT key FROM "${schema}".idempotency_keys WHERE key = ANY($1) FOR UPDATE`, [['old-0', 'old-1', 'old-2', 'old-3', 'old-4']]);
        assert.equal(locked.rowCount, 5);
        assert.deepEqual(await purger.runOnce(), { purged: 20, batches: 3, expiredLeft: 5, sentEventsPurged: 0 });
        assert.equal(await gauge(metrics, 'predictor_idempotency_expired_records'), 5);
        assert.match(await metrics.registry.metrics(), /^predictor_idempotency_expired_records 5$/m);
      } finally {
        await admin.query('ROLLBACK');
      }
      assert.deepEqual(await purger.runOnce(), { purged: 5, batches: 1, expiredLeft: 0, sentEventsPurged: 0 });
      assert.equal(await gauge(metrics, 'predictor_idempotency_expired_records'), 0);
      assert.equal(await gauge(metrics, 'predictor_idempotency_purged_total'), 25);
    } finally {
      await store.close();
    }
  });
});

describe('IdempotencyPurger on PostgreSQL at a high keyed rate', { skip: skipUnlessEngines(['postgres']) }, () => {
  const database = withTestDatabase();

  it('keeps the table within what the retention holds at 1 000 keyed requests per second, with no expired row left after each run', async () => {
    const clock = new ManualClock();
    const retentionMs = 60_000;
    const intervalMs = 10_000;
    const ratePerSecond = 1_000;
    const schema = database.schema('purge');
    const admin = database.admin();
    const store = await PostgresIdempotencyStore.open({ connectionString: TEST_DATABASE_URL, schema, retentionMs, now: clock.now });
    const metrics = createMetrics({ collectProcessMetrics: false });
    const purger = new IdempotencyPurger({ store, logger: quietLogger(), metrics, batchSize: 1_000 });
    const rows = async () => Number((await admin.query<{ n: string }>(`SELECT count(*) AS n FROM "${schema}".idempotency_keys`)).rows[0]!.n);
    try {
      const sizes: number[] = [];
      // Two simulated minutes: each interval, the completions a predictor would write at that
      // rate (inserted in bulk: the store's own writes are proven by its contract), then a purge run.
      for (let interval = 0; interval < 12; interval += 1) {
        const start = clock.now();
        await admin.query(
          `INSERT INTO "${schema}".idempotency_keys (client_id, key, fingerprint, locked_until, expires_at, status, headers, body, fence)
           SELECT 'client-a', 'k-' || $1 || '-' || i, 'fp', $2::bigint + i, $2::bigint + i + $3::bigint, 200, '{}', '\\x7b7d', 0 FROM generate_series(0, $4 - 1) AS i`,
          [interval, start, retentionMs, (ratePerSecond * intervalMs) / 1000],
        );
        clock.advance(intervalMs);
        const run = await purger.runOnce();
        assert.equal(run.expiredLeft, 0, `interval ${interval}: every expired row purged`);
        sizes.push(await rows());
      }
      const bound = (ratePerSecond * (retentionMs + intervalMs)) / 1000;
      assert.ok(Math.max(...sizes) <= bound, `the table peaked at ${Math.max(...sizes)} rows; retention plus one interval at this rate is ${bound}`);
      assert.equal(sizes.at(-1), sizes.at(-2), 'steady state: the table no longer grows');
      assert.equal(await gauge(metrics, 'predictor_idempotency_expired_records'), 0);
    } finally {
      await store.close();
    }
  });
});
