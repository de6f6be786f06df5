import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TEST_DATABASE_URL, withTestDatabase } from '../../predictor/src/testing/engines.js';
import { describeUsageLedgerContract, usageEvent } from './ledger-contract.js';
import { PostgresUsageLedger, UsageDatabaseUnreachable, type PostgresUsageLedgerOptions } from './ledger-postgres.js';
import { skipUnlessEngines } from '../../common/src/testing/skip-unless-engines.js';

/** Every suite here needs PostgreSQL. */
const skip = skipUnlessEngines(['postgres']);
const database = withTestDatabase();

const open = (options: Partial<PostgresUsageLedgerOptions> = {}): Promise<PostgresUsageLedger> =>
  PostgresUsageLedger.open({ connectionString: TEST_DATABASE_URL, schema: database.schema('usage'), ...options });

describeUsageLedgerContract('PostgresUsageLedger', {
  newPlace: () => database.schema('usage'),
  open: (schema) => PostgresUsageLedger.open({ connectionString: TEST_DATABASE_URL, schema }),
  markNewerSchema: async (schema) => {
    await database.admin().query(`INSERT INTO "${schema}".usage_schema_migrations (version) VALUES (2)`);
  },
}, { skip });

describe('PostgresUsageLedger shared by consumers', { skip }, () => {
  it('counts an event once when two consumers on the same schema record it at once', async () => {
    const schema = database.schema('usage');
    const consumers = await Promise.all([open({ schema }), open({ schema })]);
    try {
      const event = usageEvent({ rows: 2 });
      const outcomes = await Promise.all(Array.from({ length: 200 }, (_, index) => consumers[index % 2]!.record(event)));
      assert.equal(outcomes.filter((outcome) => outcome === 'recorded').length, 1);
      assert.deepEqual(await consumers[1]!.report(), [{ clientId: 'client-a', day: '2024-03-01', predictions: 1, rows: 2 }]);
      assert.equal(await consumers[0]!.eventCount(), 1);
    } finally {
      await Promise.all(consumers.map((ledger) => ledger.close()));
    }
  });

  it('never deadlocks on overlapping batches in opposite orders, and records each id once', async () => {
    const schema = database.schema('usage');
    const ledger = await open({ schema, statementTimeoutMs: 20_000 });
    const gate = database.admin();
    try {
      const days = ['2024-03-01', '2024-03-02', '2024-03-03'];
      const events = Array.from({ length: 2_000 }, (_, index) => usageEvent({ clientId: `client-${index % 4}`, occurredAt: `${days[index % 3]}T12:00:00.000Z` }));
      const batches = [events, [...events].reverse(), events, [...events].reverse()];
      // The batches queue behind a table lock and start together once it is released; unsorted,
      // they would then deadlock on each other's uncommitted ids.
      await gate.query('BEGIN');
      await gate.query(`LOCK TABLE "${schema}".usage_inbox IN SHARE MODE`);
      const recorded = Promise.all(batches.map((batch) => ledger.recordBatch(batch)));
      // pg_locks, not pg_stat_activity: the latter is a snapshot frozen for the rest of the gate's transaction.
      await waitUntil(async () => {
        const { rows } = await gate.query<{ waiting: string }>('SELECT count(*) AS waiting FROM pg_locks WHERE NOT granted AND relation = $1::regclass', [
          `"${schema}".usage_inbox`,
        ]);
        return Number(rows[0]!.waiting) === batches.length;
      });
      await gate.query('COMMIT');
      const outcomes = (await recorded).flat();
      assert.equal(outcomes.filter((outcome) => outcome === 'recorded').length, events.length);
      assert.equal(await ledger.eventCount(), events.length);
      const totals = await ledger.report();
      assert.equal(totals.length, 12);
      assert.equal(totals.reduce((sum, total) => sum + total.predictions, 0), events.length);
    } finally {
      await gate.query('ROLLBACK').catch(() => {});
      await ledger.close();
    }
  });
});

/** Polls `condition` until it holds; the test's own timeout bounds the wait. */
async function waitUntil(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 10));
}

describe('PostgresUsageLedger schema', { skip }, () => {
  const migrationsOf = async (schema: string): Promise<number[]> =>
    (await database.admin().query<{ version: number }>(`SELECT version FROM "${schema}".usage_schema_migrations ORDER BY version`)).rows.map((row) => row.version);

  it('migrates once when two consumers open a fresh schema at once, and stamps recorded_at from now', async () => {
    const schema = database.schema('usage');
    const ledgers = await Promise.all([open({ schema, now: () => 1_700_000_000_000 }), open({ schema })]);
    try {
      assert.deepEqual(await migrationsOf(schema), [1]);
      await ledgers[0]!.record(usageEvent({ id: 'pred_stamped' }));
      const { rows } = await database.admin().query(`SELECT event_id, client_id, to_char(day, 'YYYY-MM-DD') AS day, rows, recorded_at FROM "${schema}".usage_inbox`);
      assert.deepEqual(rows, [{ event_id: 'pred_stamped', client_id: 'client-a', day: '2024-03-01', rows: '1', recorded_at: '1700000000000' }]);
    } finally {
      await Promise.all(ledgers.map((ledger) => ledger.close()));
    }
  });

  it('keeps its own migrations table and lock, next to the idempotency store\'s in the same schema', async () => {
    const schema = database.schema('usage');
    await database.admin().query(`CREATE SCHEMA "${schema}"; CREATE TABLE "${schema}".idempotency_schema_migrations (version integer PRIMARY KEY); INSERT INTO "${schema}".idempotency_schema_migrations VALUES (1), (2)`);
    await (await open({ schema })).close();
    assert.deepEqual(await migrationsOf(schema), [1]);
  });

  it('refuses a schema name that is not a plain identifier', async () => {
    for (const schema of ['Usage', 'usage-1', '1usage', 'usage"; DROP TABLE x; --', '', 'a'.repeat(64)]) {
      await assert.rejects(PostgresUsageLedger.open({ connectionString: TEST_DATABASE_URL, schema }), RangeError, schema);
    }
  });

  it('fails to open at once without its database, naming it without the password', { timeout: 10_000 }, async () => {
    await assert.rejects(open({ connectionString: 'postgres://postgres:s3cret@127.0.0.1:1/test' }), (error: unknown) => {
      assert.ok(error instanceof UsageDatabaseUnreachable);
      assert.match(error.message, /127\.0\.0\.1:1/);
      assert.doesNotMatch(error.message, /s3cret/);
      return true;
    });
  });
});
