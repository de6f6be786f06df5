import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { UsageEvent } from '@m2m/common';
import Database from 'better-sqlite3';
import { SqliteIdempotencyStore } from './sqlite.js';
import { UnsupportedIdempotencySchema } from './store.js';
import { claimAndComplete, describeIdempotencyStoreContract, LEASE_MS, ManualClock, RESPONSE, RETENTION_MS, START_MS } from './store-contract.js';
import { usageEventFixture } from '../../../common/src/testing/usage-event-fixture.js';

let directory: string;
let files = 0;
const newPath = (): string => join(directory, `idempotency-${(files += 1)}.sqlite`);

before(async () => {
  directory = await mkdtemp(join(tmpdir(), 'predictor-idempotency-'));
});

after(async () => {
  await rm(directory, { recursive: true, force: true });
});

describeIdempotencyStoreContract('SqliteIdempotencyStore', (options) => SqliteIdempotencyStore.open(newPath(), options));

interface ChildOutcome {
  stdout: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * Runs `script` (an ES module body, with `SqliteIdempotencyStore` in scope) in another
 * node process. `onStdout` sees each chunk it prints; `send` writes to its stdin.
 */
function runProcess(script: string, onStdout: (chunk: string, send: (line: string) => void) => void = () => {}): Promise<ChildOutcome> {
  const storeModule = new URL('./sqlite.ts', import.meta.url).href;
  const source = `const { SqliteIdempotencyStore } = await import(${JSON.stringify(storeModule)});\n${script}`;
  // Started from this folder so that `--import tsx` resolves the workspace's tsx.
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', source], {
    cwd: fileURLToPath(new URL('.', import.meta.url)),
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    onStdout(chunk, (line) => child.stdin.write(`${line}\n`));
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (exitCode, signal) => resolve({ stdout, exitCode, signal }));
  });
}

describe('SqliteIdempotencyStore on a shared file', () => {
  it('gives a key to exactly one of two connections on the same file', async () => {
    const path = newPath();
    const clock = new ManualClock();
    const first = SqliteIdempotencyStore.open(path, { now: clock.now });
    const second = SqliteIdempotencyStore.open(path, { now: clock.now });
    try {
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, index) => (index % 2 === 0 ? first : second).claim('client-a', 'key-1', 'fp-1')),
      );
      assert.equal(results.filter((result) => result.outcome === 'claimed').length, 1);

      const winner = results.find((result) => result.outcome === 'claimed')!;
      assert.equal(await (results.indexOf(winner) % 2 === 0 ? first : second).complete('client-a', 'key-1', winner.token, RESPONSE), 'ok');
      assert.deepEqual(await second.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('gives each key to exactly one of several processes claiming at once', { timeout: 60_000 }, async () => {
    const path = newPath();
    await SqliteIdempotencyStore.open(path).close(); // create the schema before the race
    const processes = 4;
    const keys = 1_000;
    // Every process opens the store and says "ready"; once all are, they are told one instant
    // (a few ms ahead, on the shared wall clock) at which all start claiming the same keys.
    const script = `
      const store = SqliteIdempotencyStore.open(${JSON.stringify(path)}, { now: () => ${START_MS} });
      const won = [];
      process.stdout.write('ready\\n');
      process.stdin.once('data', async (startAt) => {
        while (Date.now() < Number(startAt)) {}
        for (let index = 0; index < ${keys}; index += 1) {
          const result = await store.claim('client-a', 'key-' + index, 'fp-1');
          if (result.outcome === 'claimed') won.push(index);
          else if (result.outcome !== 'in-flight') throw new Error('unexpected ' + result.outcome);
        }
        await store.close();
        process.stdout.write(JSON.stringify(won) + '\\n');
        process.exit(0);
      });`;
    let ready = 0;
    const senders: ((line: string) => void)[] = [];
    const outcomes = await Promise.all(
      Array.from({ length: processes }, () =>
        runProcess(script, (chunk, send) => {
          if (!chunk.includes('ready')) return;
          senders.push(send);
          ready += 1;
          if (ready !== processes) return;
          const startAt = Date.now() + 50;
          for (const go of senders) go(String(startAt));
        }),
      ),
    );

    const wins = new Map<number, number>();
    for (const outcome of outcomes) {
      assert.equal(outcome.exitCode, 0);
      const won = JSON.parse(outcome.stdout.slice(outcome.stdout.indexOf('\n') + 1)) as number[];
      for (const index of won) wins.set(index, (wins.get(index) ?? 0) + 1);
    }
    assert.equal(wins.size, keys);
    assert.deepEqual([...wins].filter(([, count]) => count !== 1), [], 'keys claimed by more than one process');
  });
});

describe('SqliteIdempotencyStore durability', () => {
  it('keeps a completed record across close and reopen', async () => {
    const path = newPath();
    const clock = new ManualClock();
    const original = SqliteIdempotencyStore.open(path, { now: clock.now });
    await claimAndComplete(original, 'client-a', 'key-1', 'fp-1', RESPONSE);
    await original.close();

    const reopened = SqliteIdempotencyStore.open(path, { now: clock.now });
    try {
      assert.deepEqual(await reopened.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    } finally {
      await reopened.close();
    }
  });

  it('shows a completed record to a new connection while the writer never closed', async () => {
    const path = newPath();
    const clock = new ManualClock();
    const crashed = SqliteIdempotencyStore.open(path, { now: clock.now });
    const restarted = SqliteIdempotencyStore.open(path, { now: clock.now });
    try {
      await claimAndComplete(crashed, 'client-a', 'key-1', 'fp-1', RESPONSE);
      assert.deepEqual(await restarted.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    } finally {
      await crashed.close();
      await restarted.close();
    }
  });

  it('keeps a completed record, and the claim still in flight, when the process is killed', { timeout: 30_000 }, async () => {
    const path = newPath();
    const killed = await runProcess(`
      const store = SqliteIdempotencyStore.open(${JSON.stringify(path)}, { now: () => ${START_MS} });
      const done = await store.claim('client-a', 'done', 'fp-1');
      await store.complete('client-a', 'done', done.token, ${JSON.stringify(RESPONSE)});
      await store.claim('client-a', 'running', 'fp-1');
      process.kill(process.pid, 'SIGKILL');`);
    assert.equal(killed.signal, 'SIGKILL');

    const clock = new ManualClock();
    const restarted = SqliteIdempotencyStore.open(path, { now: clock.now });
    try {
      assert.deepEqual(await restarted.claim('client-a', 'done', 'fp-1'), { outcome: 'replay', response: RESPONSE });
      assert.deepEqual(await restarted.claim('client-a', 'running', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 5 });
      clock.advance(LEASE_MS);
      assert.equal((await restarted.claim('client-a', 'running', 'fp-1')).outcome, 'claimed');
    } finally {
      await restarted.close();
    }
  });
});

describe('SqliteIdempotencyStore usage outbox (group commit)', () => {
  const usage = (id: string): UsageEvent => usageEventFixture(id);
  const unsentIn = (path: string): string[] => {
    const reader = new Database(path, { readonly: true });
    try {
      return reader.prepare<[], { event: string }>('SELECT event FROM usage_outbox WHERE sent_at IS NULL ORDER BY seq').all().map((row) => (JSON.parse(row.event) as UsageEvent).id);
    } finally {
      reader.close();
    }
  };

  it('commits the events appended at once together, in the order appended, each append resolving only once its event is in the file', async () => {
    const path = newPath();
    const store = SqliteIdempotencyStore.open(path);
    try {
      const ids = Array.from({ length: 50 }, (_, index) => `pred_${index}`);
      const appending = ids.map((id) => store.append(usage(id)));
      assert.deepEqual(unsentIn(path), [], 'nothing committed before the end of this turn of the event loop');
      await Promise.all(appending);
      assert.deepEqual(unsentIn(path), ids);
    } finally {
      await store.close();
    }
  });

  it('commits on close what was appended before it', async () => {
    const path = newPath();
    const store = SqliteIdempotencyStore.open(path);
    const appended = store.append(usage('pred_last'));
    await store.close();
    await appended;
    assert.deepEqual(unsentIn(path), ['pred_last']);
  });

  it('rejects every append of a group whose commit failed, and commits the next group', async () => {
    const path = newPath();
    const store = SqliteIdempotencyStore.open(path, { busyTimeoutMs: 0 });
    const other = new Database(path);
    try {
      other.exec('BEGIN IMMEDIATE'); // another process holds the write lock
      const results = await Promise.allSettled([store.append(usage('pred_1')), store.append(usage('pred_2'))]);
      assert.deepEqual(results.map((result) => result.status), ['rejected', 'rejected']);
      other.exec('ROLLBACK');
      await store.append(usage('pred_3'));
      assert.deepEqual(unsentIn(path), ['pred_3']);
    } finally {
      other.close();
      await store.close();
    }
  });
});

describe('SqliteIdempotencyStore schema', () => {
  it('creates the file in WAL mode with the current schema version', async () => {
    const path = newPath();
    await SqliteIdempotencyStore.open(path).close();
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
      assert.equal(db.pragma('user_version', { simple: true }), 3);
      const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'idempotency_keys'").pluck().all();
      assert.ok(indexes.includes('idempotency_keys_expires_at'));
    } finally {
      db.close();
    }
  });

  it('migrates idempotently: opening the file again, while open or after, keeps the records', async () => {
    const path = newPath();
    const clock = new ManualClock();
    const first = SqliteIdempotencyStore.open(path, { now: clock.now });
    await claimAndComplete(first, 'client-a', 'key-1', 'fp-1', RESPONSE);
    const second = SqliteIdempotencyStore.open(path, { now: clock.now });
    await first.close();
    await second.close();

    const third = SqliteIdempotencyStore.open(path, { now: clock.now });
    try {
      assert.equal((await third.claim('client-a', 'key-1', 'fp-1')).outcome, 'replay');
    } finally {
      await third.close();
    }
  });

  it('migrates a version-1 file with records in it: completed ones replay, a claim left by the old version is taken over after the lease', async () => {
    const path = newPath();
    const old = new Database(path);
    old.exec(`CREATE TABLE idempotency_keys (client_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, locked_until INTEGER NOT NULL,
      expires_at INTEGER NOT NULL, status INTEGER, headers TEXT, body TEXT, PRIMARY KEY (client_id, key));
      CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);`);
    const insert = old.prepare('INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    insert.run('client-a', 'done', 'fp-1', START_MS, START_MS + RETENTION_MS, RESPONSE.status, JSON.stringify(RESPONSE.headers), RESPONSE.body);
    insert.run('client-a', 'running', 'fp-1', START_MS + LEASE_MS, START_MS + RETENTION_MS, null, null, null);
    old.pragma('user_version = 1');
    old.close();

    const clock = new ManualClock();
    const store = SqliteIdempotencyStore.open(path, { now: clock.now });
    try {
      assert.deepEqual(await store.claim('client-a', 'done', 'fp-1'), { outcome: 'replay', response: RESPONSE });
      assert.equal((await store.claim('client-a', 'running', 'fp-1')).outcome, 'in-flight');
      clock.advance(LEASE_MS);
      const takenOver = await store.claim('client-a', 'running', 'fp-1');
      assert.ok(takenOver.outcome === 'claimed' && takenOver.token > 0);
      assert.equal(await store.complete('client-a', 'running', 0, RESPONSE), 'lost', 'no token of the old version matches');
    } finally {
      await store.close();
    }
  });

  it('refuses a file written by a newer schema', async () => {
    const path = newPath();
    await SqliteIdempotencyStore.open(path).close();
    const db = new Database(path);
    db.pragma('user_version = 4');
    db.close();
    assert.throws(() => SqliteIdempotencyStore.open(path), UnsupportedIdempotencySchema);
  });

  it('finds expired records through the expires_at index', async () => {
    const path = newPath();
    const clock = new ManualClock();
    const store = SqliteIdempotencyStore.open(path, { now: clock.now });
    await store.claim('client-a', 'key-1', 'fp-1');
    await store.close();
    const db = new Database(path, { readonly: true });
    try {
      const plan = db
        .prepare('EXPLAIN QUERY PLAN SELECT rowid FROM idempotency_keys WHERE expires_at <= ? LIMIT ?')
        .all(START_MS + RETENTION_MS, 10) as { detail: string }[];
      assert.ok(plan.some((step) => step.detail.includes('idempotency_keys_expires_at')), JSON.stringify(plan));
    } finally {
      db.close();
    }
  });
});
