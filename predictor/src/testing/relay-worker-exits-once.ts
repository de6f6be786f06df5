import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import type { RelayWorkerData } from '../usage/relay-thread.js';

// For relay-thread.test.ts: the first thread started on a data directory opens, says it is
// ready, and exits when told to start (a thread dying unasked); every later one is the real relay.
const marker = join((workerData as RelayWorkerData).ledgerPath, '..', 'relay-thread-exited-once');
if (existsSync(marker)) {
  await import('../usage/relay-worker.js');
} else {
  writeFileSync(marker, '');
  parentPort!.on('message', () => process.exit(3));
  parentPort!.postMessage({ type: 'ready' });
}
