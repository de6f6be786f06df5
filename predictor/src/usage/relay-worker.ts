import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '@m2m/common';
import { SqliteLedgerImport, SqliteUsageLedger } from '@m2m/usage';
import { SqliteIdempotencyStore } from '../idempotency/sqlite.js';
import { UsageRelay, type UsageDelivery, type UsageRelayMetrics } from './relay.js';
import { SqliteOutboxToLedger } from './sql-relay.js';
import type { RelayThreadCall, RelayThreadMessage, RelayWorkerData } from './relay-thread.js';

// The embedded default's relay, on a thread of its own (started by UsageRelayThread): its own
// connections to idempotency.db (the outbox) and usage.db (the ledger), and one to usage.db
// with idempotency.db attached, which moves the rounds in SQL (sql-relay.ts).
const data = workerData as RelayWorkerData;
const port = parentPort!;
const post = (message: RelayThreadMessage) => port.postMessage(message);

const forward = (name: keyof UsageRelayMetrics) => ({
  inc: (value = 1) => post({ type: 'metric', name, op: 'inc', value }),
  set: (value: number) => post({ type: 'metric', name, op: 'set', value }),
});
const metrics = {
  usageRelayed: forward('usageRelayed'),
  usageRelayFailures: forward('usageRelayFailures'),
  usageBacklog: forward('usageBacklog'),
  usageOldestAge: forward('usageOldestAge'),
} as unknown as UsageRelayMetrics;

let outbox: SqliteIdempotencyStore;
let ledger: SqliteUsageLedger;
let ledgerImport: SqliteLedgerImport;
try {
  outbox = SqliteIdempotencyStore.open(data.outboxPath);
  ledger = SqliteUsageLedger.open(data.ledgerPath);
  ledgerImport = SqliteLedgerImport.open(data.ledgerPath, data.outboxPath);
} catch (error) {
  post({ type: 'failed', reason: (error as Error).message });
  process.exit(1);
}

// For the rounds SQL does not take. Recorded and duplicate alike are acknowledged: a repeat is exactly what the inbox absorbs.
const deliver: UsageDelivery = async (events) => {
  await ledger.recordBatch(events);
  return new Set(events.map((event) => event.id));
};
const relay = new UsageRelay({ outbox: new SqliteOutboxToLedger(outbox, ledgerImport), deliver, sink: 'in-process', logger: createLogger('predictor', data.logLevel), metrics, ...data.relay });

port.on('message', async ({ id, call }: { id: number; call: RelayThreadCall }) => {
  try {
    let result: unknown;
    if (call === 'start') relay.start();
    else if (call === 'relayOnce') result = await relay.relayOnce();
    else if (call === 'status') result = await relay.status();
    else {
      await relay.stop();
      ledgerImport.close();
      await ledger.close();
      await outbox.close();
    }
    post({ type: 'reply', id, result });
  } catch (error) {
    post({ type: 'reply', id, error: (error as Error).message });
  }
});
post({ type: 'ready' });
