import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { encodeUsageEvent, MalformedUsageEvent, type UsageEvent } from '@m2m/common';
import { SqliteLedgerImport, SqliteUsageLedger } from '@m2m/usage';
import Database from 'better-sqlite3';
import { buildApp } from '../app.js';
import type { Principal } from '../auth/principal.js';
import { SqliteIdempotencyStore } from '../idempotency/sqlite.js';
import { testDeps } from '../testing/test-app.js';
import { SqliteOutboxToLedger } from './sql-relay.js';
import { usageEventFixture } from '../../../common/src/testing/usage-event-fixture.js';

const directories: string[] = [];
after(() => directories.forEach((directory) => rmSync(directory, { recursive: true, force: true })));

function setup(options: { busyTimeoutMs?: number } = {}) {
  const directory = mkdtempSync(join(tmpdir(), 'sql-relay-'));
  directories.push(directory);
  const outboxPath = join(directory, 'idempotency.db');
  const ledgerPath = join(directory, 'usage.db');
  const store = SqliteIdempotencyStore.open(outboxPath);
  const ledger = SqliteUsageLedger.open(ledgerPath);
  const ledgerImport = SqliteLedgerImport.open(ledgerPath, outboxPath, options);
  const relay = new SqliteOutboxToLedger(store, ledgerImport);
  /** What went through JavaScript (the rounds SQL did not take). */
  const delivered: string[] = [];
  const deliver = async (events: UsageEvent[]) => {
    delivered.push(...events.map((event) => event.id));
    await ledger.recordBatch(events);
    return new Set(events.map((event) => event.id));
  };
  /** Another connection to the outbox: rows the store's append would never write, and a writer holding the lock. */
  const raw = new Database(outboxPath);
  const insertRaw = (event: string) => raw.prepare('INSERT INTO usage_outbox (event, created_at) VALUES (?, ?)').run(event, Date.now());
  const close = async () => {
    raw.close();
    ledgerImport.close();
    await ledger.close();
    await store.close();
  };
  return { store, ledger, relay, deliver, delivered, raw, insertRaw, outboxPath, close };
}

describe('SqliteOutboxToLedger (the embedded relay round in SQL)', () => {
  it('records the oldest unsent events in SQL, each once, adds them to their daily totals and marks them sent', async () => {
    const { store, ledger, relay, deliver, delivered, close } = setup();
    try {
      await store.append(usageEventFixture('pred_1', { rows: 2 }));
      await store.append(usageEventFixture('pred_2', { clientId: 'client-b', credential: { method: 'bearer-jwt', id: undefined }, idempotencyKey: 'key-1' }));
      await store.append(usageEventFixture('pred_3', { occurredAt: '2026-11-29T00:00:00.000Z' }));
      assert.deepEqual(await relay.relay(2, deliver), { claimed: 2, delivered: 2 });
      assert.deepEqual(await relay.relay(2, deliver), { claimed: 1, delivered: 1 });
      assert.deepEqual(await relay.relay(2, deliver), { claimed: 0, delivered: 0 });
      assert.deepEqual(delivered, [], 'nothing went through JavaScript');
      assert.deepEqual(await ledger.report(), [
        { clientId: 'client-a', day: '2026-11-28', predictions: 1, rows: 2 },
        { clientId: 'client-b', day: '2026-11-28', predictions: 1, rows: 1 },
        { clientId: 'client-a', day: '2026-11-29', predictions: 1, rows: 1 },
      ]);
      assert.equal((await store.backlog()).count, 0);
    } finally {
      await close();
    }
  });

  it('an event the ledger already holds is absorbed and marked sent, and an id twice in a round counts once (the first)', async () => {
    const { store, ledger, relay, deliver, close } = setup();
    try {
      await ledger.record(usageEventFixture('pred_seen', { rows: 5 }));
      await store.append(usageEventFixture('pred_seen', { rows: 5 }));
      await store.append(usageEventFixture('pred_twice', { rows: 3 }));
      await store.append(usageEventFixture('pred_twice', { rows: 7 }));
      assert.deepEqual(await relay.relay(10, deliver), { claimed: 3, delivered: 3 });
      assert.deepEqual(await ledger.report(), [{ clientId: 'client-a', day: '2026-11-28', predictions: 2, rows: 8 }]);
      assert.equal(await ledger.eventCount(), 2);
      assert.equal((await store.backlog()).count, 0);
    } finally {
      await close();
    }
  });

  it('the ledger commits before the outbox marks: a round that cannot mark leaves its events unsent, and the next one counts nothing twice', async () => {
    const { store, ledger, relay, deliver, raw, close } = setup({ busyTimeoutMs: 0 });
    try {
      for (const id of ['pred_a', 'pred_b']) await store.append(usageEventFixture(id));
      // Another writer holds the outbox's write lock: the ledger's transaction does not need it, the mark does.
      raw.prepare('BEGIN IMMEDIATE').run();
      await assert.rejects(relay.relay(10, deliver), (error: Error & { code?: string }) => error.code === 'SQLITE_BUSY');
      raw.prepare('ROLLBACK').run();
      assert.equal(await ledger.eventCount(), 2, 'recorded');
      assert.equal((await store.backlog()).count, 2, 'not marked');
      assert.deepEqual(await relay.relay(10, deliver), { claimed: 2, delivered: 2 });
      assert.deepEqual(await ledger.report(), [{ clientId: 'client-a', day: '2026-11-28', predictions: 2, rows: 2 }]);
      assert.equal((await store.backlog()).count, 0);
    } finally {
      await close();
    }
  });

  it('a round with an event not exactly as the encoder writes it goes through JavaScript, and records the same', async () => {
    const { store, ledger, relay, deliver, delivered, insertRaw, close } = setup();
    try {
      await store.append(usageEventFixture('pred_plain'));
      const event = usageEventFixture('pred_spaced', { occurredAt: '2026-11-28T23:30:00.000-05:00' });
      insertRaw(JSON.stringify(event, null, 2));
      assert.deepEqual(await relay.relay(10, deliver), { claimed: 2, delivered: 2 });
      assert.deepEqual(delivered, ['pred_plain', 'pred_spaced']);
      assert.deepEqual(await ledger.report(), [
        { clientId: 'client-a', day: '2026-11-28', predictions: 1, rows: 1 },
        { clientId: 'client-a', day: '2026-11-29', predictions: 1, rows: 1 },
      ]);
    } finally {
      await close();
    }
  });

  for (const [what, text] of [
    ['not JSON', 'not json'],
    ['rows 0', encodeUsageEvent(usageEventFixture('pred_zero', { rows: 0 }))],
    ['a day that does not exist', encodeUsageEvent(usageEventFixture('pred_day', { occurredAt: '+275760-09-13T00:00:00.000Z' }))],
    ['a repeated key', '{"id":"pred_x",' + encodeUsageEvent(usageEventFixture('pred_x')).slice(1).replace('"rows":1', '"rows":1,"rows":0')],
    ['hour 24 past midnight', encodeUsageEvent(usageEventFixture('pred_h24', { occurredAt: '2026-11-28T24:30:00.000Z' }))],
  ] as const) {
    it(`a malformed event (${what}) fails its round as before: nothing recorded, nothing marked`, async () => {
      const { store, ledger, relay, deliver, insertRaw, close } = setup();
      try {
        await store.append(usageEventFixture('pred_good'));
        insertRaw(text);
        await assert.rejects(relay.relay(10, deliver), (error: Error) => error instanceof MalformedUsageEvent || error instanceof SyntaxError);
        assert.equal(await ledger.eventCount(), 0);
        assert.equal((await store.backlog()).count, 2);
      } finally {
        await close();
      }
    });
  }

  it('an hour 24 that JavaScript reads as the next day goes through JavaScript, and counts on that day', async () => {
    const { ledger, relay, deliver, delivered, insertRaw, close } = setup();
    try {
      insertRaw(encodeUsageEvent(usageEventFixture('pred_h24', { occurredAt: '2026-11-28T24:00:00.000Z' })));
      assert.deepEqual(await relay.relay(10, deliver), { claimed: 1, delivered: 1 });
      assert.deepEqual(delivered, ['pred_h24']);
      assert.deepEqual(await ledger.report(), [{ clientId: 'client-a', day: '2026-11-29', predictions: 1, rows: 1 }]);
    } finally {
      await close();
    }
  });

  it("takes the predictor's own events in SQL (with and without a key, a bearer token and an API key), not through JavaScript", async () => {
    const { store, ledger, relay, deliver, delivered, close } = setup();
    const principals: Record<string, Principal> = {
      jwt: { clientId: 'client-jwt', scopes: new Set(['predict']), plan: 'standard', authMethod: 'bearer-jwt', tokenId: 'jti-1', keyId: 'kid-1', expiresAt: undefined },
      key: { clientId: 'client-key', scopes: new Set(['predict']), plan: 'free', authMethod: 'api-key', tokenId: 'ak_1', expiresAt: undefined },
    };
    const now = Date.UTC(2026, 10, 28, 12);
    const app = buildApp(testDeps({ verifyToken: async (token) => principals[token]!, idempotencyStore: store, now: () => now }));
    const predict = (token: string, key?: string) =>
      app.request('/v1/predict', {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
        body: JSON.stringify({ inputs: [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] }),
      });
    try {
      for (const [token, key] of [['jwt', undefined], ['jwt', 'key-1'], ['key', undefined], ['key', 'key-2']] as const) assert.equal((await predict(token, key)).status, 200);
      assert.deepEqual(await relay.relay(10, deliver), { claimed: 4, delivered: 4 });
      assert.deepEqual(delivered, [], 'every round in SQL: the route writes its events as the encoder does');
      const day = '2026-11-28';
      assert.deepEqual(
        (await ledger.report()).map(({ clientId, day: at, predictions, rows }) => ({ clientId, at, predictions, rows })),
        [
          { clientId: 'client-jwt', at: day, predictions: 2, rows: 4 },
          { clientId: 'client-key', at: day, predictions: 2, rows: 4 },
        ],
      );
    } finally {
      await close();
    }
  });

  it('takes in SQL exactly the events JavaScript would record the same way', async () => {
    const { store, ledger, relay, deliver, delivered, close } = setup();
    const viaJavaScript = SqliteUsageLedger.open(':memory:');
    try {
      const events = [
        usageEventFixture('pred_1', { clientId: 'ü "quoted" \\ / \n\t\u0001 \u2028 😀', plan: '', modelId: 'm', rows: Number.MAX_SAFE_INTEGER - 1 }),
        usageEventFixture('pred_2', { credential: { method: 'bearer-jwt', id: undefined }, idempotencyKey: 'k\u007f' }),
        usageEventFixture('pred_3', { occurredAt: '0001-01-01T00:00:00.000Z' }),
        usageEventFixture('pred_4', { occurredAt: '2024-02-29T23:59:59.999Z' }),
      ];
      for (const event of events) await store.append(event);
      await relay.relay(10, deliver);
      assert.deepEqual(delivered, [], 'all taken in SQL');
      await viaJavaScript.recordBatch(events);
      assert.deepEqual(await ledger.report(), await viaJavaScript.report());
    } finally {
      await viaJavaScript.close();
      await close();
    }
  });

  it('checkpoints the outbox after each round, so its WAL starts over instead of growing', async () => {
    const { store, relay, deliver, outboxPath, close } = setup();
    try {
      store.setAutoCheckpoint(0); // as if the request thread's commits never checkpointed
      const walBytes = () => statSync(`${outboxPath}-wal`).size;
      const sizes: number[] = [];
      for (let round = 0; round < 20; round += 1) {
        for (let index = 0; index < 20; index += 1) await store.append(usageEventFixture(`pred_${round}_${index}`));
        await relay.relay(100, deliver);
        sizes.push(walBytes());
      }
      assert.ok(sizes[19]! <= 2 * sizes[1]!, `the WAL grew from ${sizes[1]} to ${sizes[19]} bytes`);
    } finally {
      await close();
    }
  });
});
