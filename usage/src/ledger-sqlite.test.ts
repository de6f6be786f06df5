import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { describeUsageLedgerContract, usageEvent } from './ledger-contract.js';
import { SqliteUsageLedger, UsageLedgerNotFound } from './ledger-sqlite.js';

let directory: string;
let files = 0;
const newPath = (): string => join(directory, `usage-${(files += 1)}.db`);

before(async () => {
  directory = await mkdtemp(join(tmpdir(), 'usage-ledger-'));
});

after(async () => {
  await rm(directory, { recursive: true, force: true });
});

describeUsageLedgerContract('SqliteUsageLedger', {
  newPlace: newPath,
  open: async (path) => SqliteUsageLedger.open(path),
  markNewerSchema: async (path) => {
    const db = new Database(path);
    db.pragma('user_version = 2');
    db.close();
  },
});

describe('SqliteUsageLedger on a shared file', () => {
  it('counts an event once when two connections on the same file record it at once', async () => {
    const path = newPath();
    const first = SqliteUsageLedger.open(path);
    const second = SqliteUsageLedger.open(path);
    try {
      const event = usageEvent({ rows: 2 });
      const outcomes = await Promise.all(Array.from({ length: 100 }, (_, index) => (index % 2 === 0 ? first : second).record(event)));
      assert.equal(outcomes.filter((outcome) => outcome === 'recorded').length, 1);
      assert.deepEqual(await second.report(), [{ clientId: 'client-a', day: '2024-03-01', predictions: 1, rows: 2 }]);
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('shows a record to another connection as soon as it resolved, while the writer stays open', async () => {
    const path = newPath();
    const writer = SqliteUsageLedger.open(path);
    const reader = SqliteUsageLedger.open(path);
    try {
      await writer.record(usageEvent());
      assert.equal(await reader.eventCount(), 1);
    } finally {
      await writer.close();
      await reader.close();
    }
  });
});

describe('SqliteUsageLedger file', () => {
  it('creates the file in WAL mode with schema version 1, stamping recorded_at from now', async () => {
    const path = newPath();
    const ledger = SqliteUsageLedger.open(path, { now: () => 1_700_000_000_000 });
    await ledger.record(usageEvent({ id: 'pred_stamped' }));
    await ledger.close();
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
      assert.equal(db.pragma('user_version', { simple: true }), 1);
      assert.deepEqual(db.prepare('SELECT event_id, client_id, day, rows, recorded_at FROM usage_inbox').all(), [
        { event_id: 'pred_stamped', client_id: 'client-a', day: '2024-03-01', rows: 1, recorded_at: 1_700_000_000_000 },
      ]);
    } finally {
      db.close();
    }
  });

  it('refuses to create a missing file when asked not to, and creates nothing', async () => {
    const path = join(directory, 'absent', 'usage.db');
    assert.throws(() => SqliteUsageLedger.open(path, { create: false }), (error: unknown) => error instanceof UsageLedgerNotFound && error.path === path);
    assert.equal(existsSync(join(directory, 'absent')), false);
  });

  it('opens an existing file with create: false', async () => {
    const path = newPath();
    const writer = SqliteUsageLedger.open(path);
    await writer.record(usageEvent());
    await writer.close();
    const reader = SqliteUsageLedger.open(path, { create: false });
    try {
      assert.equal(await reader.eventCount(), 1);
    } finally {
      await reader.close();
    }
  });
});
