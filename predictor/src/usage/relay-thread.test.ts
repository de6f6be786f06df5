import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createLogger, type UsageEvent } from '@m2m/common';
import { SqliteUsageLedger } from '@m2m/usage';
import { createMetrics } from '../http/metrics.js';
import { SqliteIdempotencyStore } from '../idempotency/sqlite.js';
import { UsageRelayThread, UsageRelayThreadFailed } from './relay-thread.js';
import { usageEventFixture } from '../../../common/src/testing/usage-event-fixture.js';

const RELAY_WORKER = new URL('./relay-worker.ts', import.meta.url);
const EXITS_ONCE = new URL('../testing/relay-worker-exits-once.ts', import.meta.url);

const event = (id: string): UsageEvent => usageEventFixture(id, { rows: 2 });

const directories: string[] = [];
after(() => directories.forEach((directory) => rmSync(directory, { recursive: true, force: true })));

async function until(what: string, condition: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, `gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function setup(entry = RELAY_WORKER, onRunning?: (running: boolean) => void) {
  const directory = mkdtempSync(join(tmpdir(), 'relay-thread-'));
  directories.push(directory);
  const outboxPath = join(directory, 'idempotency.db');
  const ledgerPath = join(directory, 'usage.db');
  const outbox = SqliteIdempotencyStore.open(outboxPath);
  const ledger = SqliteUsageLedger.open(ledgerPath);
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('predictor', 'info', { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const metrics = createMetrics({ collectProcessMetrics: false });
  const relay = await UsageRelayThread.start({ entry, outboxPath, ledgerPath, logLevel: 'warn', outbox, logger, metrics, relay: { idleMs: 5, batchSize: 4 }, restartDelayMs: 5, onRunning });
  const close = async () => {
    await relay.stop();
    await ledger.close();
    await outbox.close();
  };
  return { outbox, ledger, relay, lines, metrics, close };
}

const recorded = async (ledger: SqliteUsageLedger) => (await ledger.report()).reduce((sum, total) => sum + total.predictions, 0);

describe('UsageRelayThread (the embedded relay off the request thread)', () => {
  it('records what this thread appends into the ledger, once each, and forwards its metrics', async () => {
    const { outbox, ledger, relay, metrics, close } = await setup();
    try {
      for (let index = 0; index < 10; index += 1) await outbox.append(event(`pred_${index}`));
      relay.start();
      await until('ten events in the ledger', async () => (await recorded(ledger)) === 10);
      assert.deepEqual(await ledger.report(), [{ clientId: 'client-a', day: '2026-11-28', predictions: 10, rows: 20 }]);
      await until('the outbox empty', async () => (await relay.status()).backlog === 0);
      assert.deepEqual(await relay.status(), { sink: 'in-process', up: true, backlog: 0, oldestAgeSeconds: undefined });
      const exposition = await metrics.registry.metrics();
      assert.match(exposition, /predictor_usage_relayed_total 10/);
      assert.equal(await relay.relayOnce(), 0, 'nothing left to relay');
    } finally {
      await close();
    }
  });

  it('after stop: no thread, and the status reads the backlog on this thread (up: false)', async () => {
    const { outbox, relay, close } = await setup();
    await relay.stop();
    try {
      await outbox.append(event('pred_late'));
      assert.deepEqual(await relay.status(), { sink: 'in-process', up: false, backlog: 1, oldestAgeSeconds: 0 });
      await assert.rejects(relay.relayOnce(), /not running/);
    } finally {
      await close();
    }
  });

  it('a thread that cannot open its databases is a start-up error naming the reason', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'relay-thread-'));
    directories.push(directory);
    const outbox = SqliteIdempotencyStore.open(join(directory, 'idempotency.db'));
    try {
      await assert.rejects(
        UsageRelayThread.start({
          entry: RELAY_WORKER,
          outboxPath: join(directory, 'idempotency.db'),
          ledgerPath: join(directory, 'idempotency.db', 'usage.db'),
          logLevel: 'warn',
          outbox,
          logger: createLogger('predictor', 'silent'),
          metrics: createMetrics({ collectProcessMetrics: false }),
        }),
        (error: unknown) => error instanceof UsageRelayThreadFailed && /cannot start/.test(error.message),
      );
    } finally {
      await outbox.close();
    }
  });

  it('a thread that dies unasked is logged, said (onRunning) and started again; the events it left in the outbox are then recorded', async () => {
    const running: boolean[] = [];
    const { outbox, ledger, relay, lines, close } = await setup(EXITS_ONCE, (value) => running.push(value));
    try {
      for (let index = 0; index < 6; index += 1) await outbox.append(event(`pred_${index}`));
      relay.start();
      await until('the restart', () => lines.some((line) => line['event'] === 'usage.relay_thread_restarted'));
      assert.equal(lines.filter((line) => line['event'] === 'usage.relay_thread_failed').length, 1);
      assert.deepEqual(running, [false, true]);
      await until('six events in the ledger', async () => (await recorded(ledger)) === 6);
    } finally {
      await close();
    }
  });
});
