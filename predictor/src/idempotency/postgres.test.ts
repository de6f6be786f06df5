import assert from 'node:assert/strict';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { UsageEvent } from '@m2m/common';
import pg from 'pg';
import { requirePostgres, TEST_DATABASE_URL, uniqueSchemaName } from '../testing/engines.js';
import { TcpFaultProxy } from '../testing/tcp-fault-proxy.js';
import { IdempotencyDatabaseUnreachable, PostgresIdempotencyStore, type PostgresIdempotencyStoreOptions } from './postgres.js';
import { UnsupportedIdempotencySchema } from './store.js';
import { claimAndComplete, describeIdempotencyStoreContract, ManualClock, RESPONSE } from './store-contract.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';

const schemas: string[] = [];
const newSchema = (): string => {
  const schema = uniqueSchemaName('idem');
  schemas.push(schema);
  return schema;
};

/** A connection of the test's own, to look at and tamper with what the stores wrote. */
let admin: pg.Client;

/** Every suite here needs PostgreSQL. */
const skip = skipUnlessEngines(['postgres']);

before(async () => {
  if (skip) return;
  await requirePostgres();
  admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await admin.connect();
});

after(async () => {
  if (!admin) return;
  for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.end();
});

const open = (options: Partial<PostgresIdempotencyStoreOptions> = {}): Promise<PostgresIdempotencyStore> =>
  PostgresIdempotencyStore.open({ connectionString: TEST_DATABASE_URL, schema: newSchema(), ...options });

describeIdempotencyStoreContract('PostgresIdempotencyStore', (options) => open(options), { skip });

describe('PostgresIdempotencyStore shared by replicas', { skip }, () => {
  it('gives a key to exactly one of two stores on the same schema, and lets the other replay it', async () => {
    const schema = newSchema();
    const clock = new ManualClock();
    const first = await open({ schema, now: clock.now });
    const second = await open({ schema, now: clock.now });
    try {
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, index) => (index % 2 === 0 ? first : second).claim('client-a', 'key-1', 'fp-1')),
      );
      assert.equal(results.filter((result) => result.outcome === 'claimed').length, 1);
      assert.equal(results.filter((result) => result.outcome === 'in-flight').length, 99);

      const winner = results.find((result) => result.outcome === 'claimed')!;
      assert.equal(await (results.indexOf(winner) % 2 === 0 ? first : second).complete('client-a', 'key-1', winner.token, RESPONSE), 'ok');
      assert.deepEqual(await second.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('keeps a completed record for a store opened after the first one closed', async () => {
    const schema = newSchema();
    const clock = new ManualClock();
    const original = await open({ schema, now: clock.now });
    await claimAndComplete(original, 'client-a', 'key-1', 'fp-1', RESPONSE);
    await original.close();

    const restarted = await open({ schema, now: clock.now });
    try {
      assert.deepEqual(await restarted.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    } finally {
      await restarted.close();
    }
  });
});

describe('PostgresIdempotencyStore on the database clock', { skip }, () => {
  it('ignores the replicas\' own clocks: one an hour ahead cannot take over a live claim', async () => {
    const schema = newSchema();
    const skewed = new ManualClock(Date.now() + 60 * 60 * 1000);
    const holder = await open({ schema, clock: 'database' });
    const aheadByAnHour = await open({ schema, clock: 'database', now: skewed.now });
    try {
      const claim = await holder.claim('client-a', 'key-1', 'fp-1');
      assert.equal(claim.outcome, 'claimed');
      assert.equal((await aheadByAnHour.claim('client-a', 'key-1', 'fp-1')).outcome, 'in-flight');
      assert.equal(await holder.complete('client-a', 'key-1', claim.token, RESPONSE), 'ok');
      assert.deepEqual(await aheadByAnHour.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
      const { rows } = await admin.query<{ skew: string }>(
        `SELECT abs(expires_at - (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1) AS skew FROM "${schema}".idempotency_keys`,
        [24 * 60 * 60 * 1000],
      );
      assert.ok(Number(rows[0]?.skew) < 60_000, 'the retention counts from the database\'s now');
    } finally {
      await holder.close();
      await aheadByAnHour.close();
    }
  });
});

describe('PostgresIdempotencyStore schema', { skip }, () => {
  const migrationsOf = async (schema: string): Promise<number[]> =>
    (await admin.query<{ version: number }>(`SELECT version FROM "${schema}".idempotency_schema_migrations ORDER BY version`)).rows.map(
      (row) => row.version,
    );

  it('creates the tables, the expires_at index and records versions 1 to 3', async () => {
    const schema = newSchema();
    await (await open({ schema })).close();
    assert.deepEqual(await migrationsOf(schema), [1, 2, 3]);
    const { rows } = await admin.query<{ indexname: string; indexdef: string }>(
      "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'idempotency_keys'",
      [schema],
    );
    const expiresAt = rows.find((row) => row.indexname === 'idempotency_keys_expires_at');
    assert.ok(expiresAt?.indexdef.includes('(expires_at)'), JSON.stringify(rows));
  });

  it('migrates once when two stores open a fresh schema at the same time, and again changes nothing', async () => {
    const schema = newSchema();
    const clock = new ManualClock();
    const stores = await Promise.all([open({ schema, now: clock.now }), open({ schema, now: clock.now })]);
    try {
      assert.deepEqual(await migrationsOf(schema), [1, 2, 3]);
      await claimAndComplete(stores[0]!, 'client-a', 'key-1', 'fp-1', RESPONSE);

      const third = await open({ schema, now: clock.now });
      stores.push(third);
      assert.deepEqual(await migrationsOf(schema), [1, 2, 3]);
      assert.deepEqual(await third.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    } finally {
      await Promise.all(stores.map((store) => store.close()));
    }
  });

  it('refuses a schema written by a newer predictor', async () => {
    const schema = newSchema();
    await (await open({ schema })).close();
    await admin.query(`INSERT INTO "${schema}".idempotency_schema_migrations (version) VALUES (4)`);
    await assert.rejects(open({ schema }), UnsupportedIdempotencySchema);
  });

  it('refuses a schema name that is not a plain identifier', async () => {
    for (const schema of ['Idem', 'idem-1', '1idem', 'idem"; DROP TABLE x; --', '', 'a'.repeat(64)]) {
      await assert.rejects(PostgresIdempotencyStore.open({ connectionString: TEST_DATABASE_URL, schema }), RangeError, schema);
    }
  });
});

/**
 * A TCP relay in front of PostgreSQL that the test can cut: 'down' closes every connection
 * and refuses new ones at once; 'silent' keeps connections open but never answers.
 */
class Relay {
  mode: 'up' | 'down' | 'silent' = 'up';
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();

  private constructor(server: Server, target: URL) {
    this.#server = server;
    server.on('connection', (socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
      socket.on('error', () => {});
      if (this.mode === 'down') return void socket.destroy();
      if (this.mode === 'silent') return void socket.resume();
      const upstream = connect(Number(target.port || 5432), target.hostname);
      this.#sockets.add(upstream);
      upstream.on('close', () => this.#sockets.delete(upstream));
      upstream.on('error', () => socket.destroy());
      socket.on('close', () => upstream.destroy());
      upstream.on('close', () => socket.destroy());
      socket.on('data', (chunk) => {
        if (this.mode === 'up') upstream.write(chunk);
      });
      upstream.on('data', (chunk) => {
        if (this.mode === 'up') socket.write(chunk);
      });
    });
  }

  static async start(databaseUrl: string): Promise<{ relay: Relay; url: string }> {
    const target = new URL(databaseUrl);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const relayed = new URL(databaseUrl);
    relayed.hostname = '127.0.0.1';
    relayed.port = String((server.address() as AddressInfo).port);
    return { relay: new Relay(server, target), url: relayed.href };
  }

  cut(mode: 'down' | 'silent'): void {
    this.mode = mode;
    if (mode === 'down') for (const socket of this.#sockets) socket.destroy();
  }

  async stop(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

describe('PostgresIdempotencyStore without its database', { skip }, () => {
  it('fails to open at once, naming the database without its password', { timeout: 10_000 }, async () => {
    await assert.rejects(
      PostgresIdempotencyStore.open({ connectionString: 'postgres://postgres:s3cret@127.0.0.1:1/test', schema: newSchema() }),
      (error: unknown) => {
        assert.ok(error instanceof IdempotencyDatabaseUnreachable);
        assert.match(error.message, /127\.0\.0\.1:1/);
        assert.doesNotMatch(error.message, /s3cret/);
        return true;
      },
    );
  });

  it('turns unhealthy when the connection drops, survives it, and recovers', { timeout: 10_000 }, async () => {
    const { relay, url } = await Relay.start(TEST_DATABASE_URL);
    // One connection, so after the failure below no stale idle connection can be handed out.
    const store = await open({ connectionString: url, pool: { max: 1 } });
    try {
      assert.equal(await store.healthy(), true);
      relay.cut('down');
      assert.equal(await store.healthy(), false);
      await assert.rejects(store.claim('client-a', 'key-1', 'fp-1'));
      relay.mode = 'up';
      assert.equal(await store.healthy(), true);
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'claimed');
    } finally {
      await store.close();
      await relay.stop();
    }
  });

  it('fails instead of hanging when the database stops answering', { timeout: 10_000 }, async () => {
    const { relay, url } = await Relay.start(TEST_DATABASE_URL);
    const schema = newSchema();
    await (await open({ schema })).close(); // migrated first: the migration itself needs more than 100 ms
    const store = await open({ connectionString: url, schema, pool: { max: 1 }, statementTimeoutMs: 100 });
    try {
      relay.cut('silent');
      assert.equal(await store.healthy(), false);
      await assert.rejects(store.claim('client-a', 'key-1', 'fp-1'));
    } finally {
      relay.cut('down');
      await store.close();
      await relay.stop();
    }
  });
});

describe('PostgresIdempotencyStore outbox when the database goes away mid-round', { skip }, () => {
  it('fails the relay round (the rows stay unsent) instead of ending the process, and relays them once it is back', { timeout: 20_000 }, async () => {
    const { proxy, url } = await TcpFaultProxy.forUrl(TEST_DATABASE_URL, 5432);
    const schema = newSchema();
    await (await open({ schema })).close();
    const store = await open({ connectionString: url, schema, pool: { max: 2 } });
    const event = (id: string): UsageEvent => ({ id, type: 'prediction.executed', clientId: 'c', plan: 'standard', credential: { method: 'api-key', id: 'k' }, rows: 1, modelId: 'm', idempotencyKey: undefined, occurredAt: new Date().toISOString() });
    try {
      await store.append(event('pred_1'));
      // The connection drops while the relay holds its rows and waits for the broker.
      await assert.rejects(
        store.relay(10, async (events) => {
          proxy.set('refuse');
          await new Promise((resolve) => setTimeout(resolve, 100));
          return new Set(events.map((each) => each.id));
        }),
      );
      proxy.set('up');
      const seen: string[] = [];
      const deadline = Date.now() + 10_000;
      while (seen.length === 0) {
        await store.relay(10, async (events) => (seen.push(...events.map((each) => each.id)), new Set(seen))).catch(() => undefined);
        assert.ok(Date.now() < deadline, 'relayed once the database is back');
      }
      assert.deepEqual(seen, ['pred_1']);
    } finally {
      await store.close();
      await proxy.close();
    }
  });
});

describe('PostgresIdempotencyStore usage outbox (group commit)', { skip }, () => {
  const usage = (id: string): UsageEvent => ({ id, type: 'prediction.executed', clientId: 'c', plan: 'standard', credential: { method: 'api-key', id: 'k' }, rows: 1, modelId: 'm', idempotencyKey: undefined, occurredAt: '2026-11-28T12:00:00.000Z' });

  it('commits the events appended at once in one statement, in order, each append resolving once its event is stored', async () => {
    const schema = newSchema();
    const store = await open({ schema });
    try {
      const ids = Array.from({ length: 50 }, (_, index) => `pred_${index}`);
      await Promise.all(ids.map((id) => store.append(usage(id))));
      const { rows } = await admin.query<{ id: string }>(`SELECT event::jsonb->>'id' AS id FROM "${schema}".usage_outbox ORDER BY seq`);
      assert.deepEqual(rows.map((row) => row.id), ids);
    } finally {
      await store.close();
    }
  });

  it('rejects every append of a group whose statement failed, and stores the next group', { timeout: 20_000 }, async () => {
    const { proxy, url } = await TcpFaultProxy.forUrl(TEST_DATABASE_URL, 5432);
    const schema = newSchema();
    await (await open({ schema })).close();
    const store = await open({ connectionString: url, schema, pool: { max: 1 }, statementTimeoutMs: 500 });
    try {
      proxy.set('refuse');
      const results = await Promise.allSettled([store.append(usage('pred_1')), store.append(usage('pred_2'))]);
      assert.deepEqual(results.map((result) => result.status), ['rejected', 'rejected']);
      proxy.set('up');
      await store.append(usage('pred_3'));
      const { rows } = await admin.query<{ id: string }>(`SELECT event::jsonb->>'id' AS id FROM "${schema}".usage_outbox ORDER BY seq`);
      assert.deepEqual(rows.map((row) => row.id), ['pred_3']);
    } finally {
      await store.close();
      await proxy.close();
    }
  });
});
