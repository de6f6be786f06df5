import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { encodeUsageEvent, migrateSqlite, type UsageEvent } from '@m2m/common';
import Database from 'better-sqlite3';
import type { OutboxBacklog, RelayRound } from '../usage/outbox.js';
import {
  claimExpiresAt,
  IdempotencyStoreClosed,
  UnsupportedIdempotencySchema,
  judgeExistingRecord,
  resolveBatchSize,
  resolveStoreOptions,
  type ClaimResult,
  type IdempotencyStore,
  type IdempotencyStoreOptions,
  type LeaseOutcome,
  type RecordState,
  type ResolvedStoreOptions,
  type StoredResponse,
} from './store.js';

export interface SqliteIdempotencyStoreOptions extends IdempotencyStoreOptions {
  /**
   * How long a statement waits for another connection's write lock before failing with
   * SQLITE_BUSY (ms). Several predictor processes may share one file. Default 5 000.
   */
  busyTimeoutMs?: number;
}

/** An invariant of the claim transaction did not hold: the database was changed behind the store's back. */
export class IdempotencyStoreCorrupted extends Error {
  override name = 'IdempotencyStoreCorrupted';
}

/**
 * Applied in order on open; `user_version` records how many ran, so opening twice (or
 * two processes opening at once: the migration runs under a write lock) changes nothing.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS idempotency_keys (
     client_id    TEXT    NOT NULL,
     key          TEXT    NOT NULL,
     fingerprint  TEXT    NOT NULL,
     locked_until INTEGER NOT NULL, -- ms since epoch; meaningful while status IS NULL (in flight)
     expires_at   INTEGER NOT NULL, -- ms since epoch; the record is ignored from then on, and purged
     status       INTEGER,          -- NULL while in flight
     headers      TEXT,             -- JSON object
     body         TEXT,
     PRIMARY KEY (client_id, key)
   );
   -- purgeExpired() runs periodically under the write lock; without this index each batch
   -- would scan the whole table and block claims meanwhile. It costs one more b-tree write per claim.
   CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at ON idempotency_keys (expires_at);`,
  // Fenced leases: every claim and take-over draws the next token from one counter, so a
  // token is never reissued, even for a key released and claimed again.
  `ALTER TABLE idempotency_keys ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
   CREATE TABLE IF NOT EXISTS idempotency_fence (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
   INSERT OR IGNORE INTO idempotency_fence (id, last) VALUES (1, 0);`,
  // The usage outbox: an event commits in the transaction of the completion it meters.
  `CREATE TABLE IF NOT EXISTS usage_outbox (
     seq        INTEGER PRIMARY KEY AUTOINCREMENT,
     event      TEXT    NOT NULL, -- the encoded UsageEvent
     created_at INTEGER NOT NULL, -- ms since epoch
     sent_at    INTEGER           -- NULL until its delivery was acknowledged
   );
   CREATE INDEX IF NOT EXISTS usage_outbox_unsent ON usage_outbox (seq) WHERE sent_at IS NULL;
   CREATE INDEX IF NOT EXISTS usage_outbox_sent ON usage_outbox (sent_at) WHERE sent_at IS NOT NULL;`,
];

interface RecordRow {
  fingerprint: string;
  locked_until: number;
  expires_at: number;
  status: number | null;
  headers: string | null;
  body: string | null;
}

interface KeyParams {
  clientId: string;
  key: string;
}

interface ClaimParams extends KeyParams {
  fingerprint: string;
  now: number;
  lockedUntil: number;
  expiresAt: number;
  token: number;
}

interface LeaseParams extends KeyParams {
  token: number;
}

interface RenewParams extends LeaseParams {
  lockedUntil: number;
  expiresAt: number;
}

interface CompleteParams extends LeaseParams {
  now: number;
  expiresAt: number;
  status: number;
  headers: string;
  body: string;
}

/**
 * Idempotency records in an SQLite file: durable across a crash of the predictor, and
 * shared safely by several processes on one host. A claim is one IMMEDIATE transaction,
 * so it holds the file's write lock from its first read to its last write.
 */
export class SqliteIdempotencyStore implements IdempotencyStore {
  readonly #db: Database.Database;
  readonly #options: ResolvedStoreOptions;
  readonly #nextToken: Database.Statement<[], { last: number }>;
  readonly #insertClaim: Database.Statement<ClaimParams>;
  readonly #selectRecord: Database.Statement<KeyParams, RecordRow>;
  readonly #takeOverClaim: Database.Statement<ClaimParams>;
  readonly #renew: Database.Statement<RenewParams>;
  readonly #complete: Database.Statement<CompleteParams>;
  readonly #release: Database.Statement<LeaseParams>;
  readonly #purge: Database.Statement<{ now: number; limit: number }>;
  readonly #countExpired: Database.Statement<{ now: number }, { expired: number }>;
  readonly #ping: Database.Statement<[], unknown>;
  readonly #claimTransaction: (clientId: string, key: string, fingerprint: string, now: number) => ClaimResult;
  readonly #completeTransaction: (params: CompleteParams, usage: UsageEvent | undefined) => number;
  readonly #appendEvent: Database.Statement<{ event: string; now: number }>;
  readonly #unsentEvents: Database.Statement<{ limit: number }, { seq: number; event: string }>;
  readonly #markSent: (seqs: number[], now: number) => void;
  readonly #backlog: Database.Statement<[], { count: number; oldest: number | null }>;
  readonly #purgeSent: Database.Statement<{ cutoff: number; limit: number }>;
  /** One relay at a time in this process; processes sharing the file may deliver an event twice, which consumers absorb. */
  #relaying: Promise<unknown> = Promise.resolve();
  readonly #appendAll: (rows: readonly { event: string; now: number }[]) => void;
  /** Events appended since the last group commit, each with its caller's promise. */
  #appending: Array<{ row: { event: string; now: number }; resolve: () => void; reject: (error: unknown) => void }> = [];

  private constructor(db: Database.Database, options: ResolvedStoreOptions) {
    this.#db = db;
    this.#options = options;
    this.#nextToken = db.prepare('UPDATE idempotency_fence SET last = last + 1 WHERE id = 1 RETURNING last');
    this.#insertClaim = db.prepare(
      `INSERT INTO idempotency_keys (client_id, key, fingerprint, locked_until, expires_at, fence)
       VALUES (@clientId, @key, @fingerprint, @lockedUntil, @expiresAt, @token)
       ON CONFLICT (client_id, key) DO NOTHING`,
    );
    this.#selectRecord = db.prepare(
      'SELECT fingerprint, locked_until, expires_at, status, headers, body FROM idempotency_keys WHERE client_id = @clientId AND key = @key',
    );
    // Takes over an expired record, or an abandoned claim of the same request. The WHERE
    // restates that condition, so this can never take a live claim away from its holder.
    this.#takeOverClaim = db.prepare(
      `UPDATE idempotency_keys
       SET fingerprint = @fingerprint, locked_until = @lockedUntil, expires_at = @expiresAt, fence = @token, status = NULL, headers = NULL, body = NULL
       WHERE client_id = @clientId AND key = @key
         AND (expires_at <= @now OR (status IS NULL AND fingerprint = @fingerprint AND locked_until <= @now))`,
    );
    // Each lease operation is one compare-and-set on the token: a holder whose claim was taken
    // over (or released, or purged) changes nothing and learns it from the count.
    this.#renew = db.prepare(
      `UPDATE idempotency_keys SET locked_until = @lockedUntil, expires_at = max(expires_at, @expiresAt)
       WHERE client_id = @clientId AND key = @key AND fence = @token AND status IS NULL`,
    );
    this.#complete = db.prepare(
      `UPDATE idempotency_keys SET locked_until = @now, expires_at = @expiresAt, status = @status, headers = @headers, body = @body
       WHERE client_id = @clientId AND key = @key AND fence = @token AND status IS NULL`,
    );
    this.#release = db.prepare('DELETE FROM idempotency_keys WHERE client_id = @clientId AND key = @key AND fence = @token AND status IS NULL');
    this.#purge = db.prepare(
      'DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM idempotency_keys WHERE expires_at <= @now LIMIT @limit)',
    );
    this.#countExpired = db.prepare('SELECT count(*) AS expired FROM idempotency_keys WHERE expires_at <= @now');
    this.#appendEvent = db.prepare('INSERT INTO usage_outbox (event, created_at) VALUES (@event, @now)');
    this.#completeTransaction = db.transaction((params: CompleteParams, usage: UsageEvent | undefined) => {
      const { changes } = this.#complete.run(params);
      if (changes === 1 && usage) this.#appendEvent.run({ event: encodeUsageEvent(usage), now: params.now });
      return changes;
    });
    this.#appendAll = db.transaction((rows: readonly { event: string; now: number }[]) => {
      for (const row of rows) this.#appendEvent.run(row);
    });
    this.#unsentEvents = db.prepare('SELECT seq, event FROM usage_outbox WHERE sent_at IS NULL ORDER BY seq LIMIT @limit');
    const markOne = db.prepare<{ seq: number; now: number }>('UPDATE usage_outbox SET sent_at = @now WHERE seq = @seq');
    this.#markSent = db.transaction((seqs: number[], now: number) => {
      for (const seq of seqs) markOne.run({ seq, now });
    });
    this.#backlog = db.prepare('SELECT count(*) AS count, min(created_at) AS oldest FROM usage_outbox WHERE sent_at IS NULL');
    this.#purgeSent = db.prepare(
      'DELETE FROM usage_outbox WHERE seq IN (SELECT seq FROM usage_outbox WHERE sent_at IS NOT NULL AND sent_at <= @cutoff LIMIT @limit)',
    );
    // Reads the table, not just the connection: a missing or unreadable file shows here.
    this.#ping = db.prepare('SELECT 1 FROM idempotency_keys LIMIT 1');

    const claim = db.transaction((clientId: string, key: string, fingerprint: string, now: number): ClaimResult => {
      const row = this.#selectRecord.get({ clientId, key });
      if (row && row.expires_at > now) {
        const verdict = judgeExistingRecord(toRecordState(row), fingerprint, now, options.leaseMs);
        if (verdict.outcome !== 'abandoned') return verdict;
      }
      const token = this.#nextToken.get()!.last;
      const params: ClaimParams = { clientId, key, fingerprint, now, lockedUntil: now + options.leaseMs, expiresAt: claimExpiresAt(now, options), token };
      const changes = row ? this.#takeOverClaim.run(params).changes : this.#insertClaim.run(params).changes;
      if (changes !== 1) throw new IdempotencyStoreCorrupted(`the claim of ${clientId}/${key} changed nothing under the write lock`);
      return { outcome: 'claimed', token };
    });
    // BEGIN IMMEDIATE takes the write lock up front, waiting up to busy_timeout for it. A
    // deferred transaction would read first and could then fail with SQLITE_BUSY_SNAPSHOT
    // on upgrading to a write, without waiting (https://sqlite.org/rescode.html#busy_snapshot).
    this.#claimTransaction = (clientId, key, fingerprint, now) => claim.immediate(clientId, key, fingerprint, now);
  }

  /** Opens (creating if needed) the database file and brings its schema up to date. */
  static open(path: string, options: SqliteIdempotencyStoreOptions = {}): SqliteIdempotencyStore {
    const resolved = resolveStoreOptions(options);
    const { busyTimeoutMs = 5_000 } = options;
    if (path !== ':memory:' && path !== '') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // `timeout` is SQLite's busy_timeout, set before any statement so even the pragmas below wait.
    const db = new Database(path, { timeout: busyTimeoutMs });
    try {
      // WAL: readers never block the writer and a commit is one append to the log.
      db.pragma('journal_mode = WAL');
      // In WAL mode NORMAL syncs the log only at checkpoints, not at every commit. A commit
      // is still in the OS before `run()` returns, so it survives a crash of the process
      // (the requirement); only a power loss or kernel crash can lose the latest commits.
      db.pragma('synchronous = NORMAL');
      migrateSqlite(db, MIGRATIONS, (found, supported) => new UnsupportedIdempotencySchema(found, supported));
      return new SqliteIdempotencyStore(db, resolved);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  get leaseMs(): number {
    return this.#options.leaseMs;
  }

  async claim(clientId: string, key: string, fingerprint: string): Promise<ClaimResult> {
    this.#assertOpen();
    return this.#claimTransaction(clientId, key, fingerprint, this.#options.now());
  }

  async renew(clientId: string, key: string, token: number): Promise<LeaseOutcome> {
    this.#assertOpen();
    const now = this.#options.now();
    return outcome(this.#renew.run({ clientId, key, token, lockedUntil: now + this.#options.leaseMs, expiresAt: claimExpiresAt(now, this.#options) }).changes);
  }

  async complete(clientId: string, key: string, token: number, response: StoredResponse, usage?: UsageEvent): Promise<LeaseOutcome> {
    this.#assertOpen();
    const now = this.#options.now();
    const params = { clientId, key, token, now, expiresAt: now + this.#options.retentionMs, status: response.status, headers: JSON.stringify(response.headers), body: response.body };
    return outcome(this.#completeTransaction(params, usage));
  }

  /**
   * Resolves once the event is committed. The events appended in one turn of the event loop
   * commit together, in one transaction at its end (a group commit): a commit of its own per
   * request writes its pages to the WAL again each time and brings the checkpoints (which
   * run in the committing request) that much sooner; under the bench's load that alone took
   * the predictor from 0.74 to 0.51 of its throughput without metering (docs/benchmark.md).
   * If that commit fails, every append in it rejects.
   */
  async append(event: UsageEvent): Promise<void> {
    this.#assertOpen();
    const row = { event: encodeUsageEvent(event), now: this.#options.now() };
    return new Promise((resolve, reject) => {
      if (this.#appending.push({ row, resolve, reject }) === 1) setImmediate(() => this.#commitAppends());
    });
  }

  #commitAppends(): void {
    const appending = this.#appending;
    if (appending.length === 0) return;
    this.#appending = [];
    try {
      this.#assertOpen();
      this.#appendAll(appending.map(({ row }) => row));
    } catch (error) {
      for (const { reject } of appending) reject(error);
      return;
    }
    for (const { resolve } of appending) resolve();
  }

  relay(limit: number, deliver: (events: UsageEvent[]) => Promise<ReadonlySet<string>>): Promise<RelayRound> {
    const round = this.#relaying.then(async () => {
      this.#assertOpen();
      // Read, deliver, then mark in a short transaction: holding SQLite's one write lock
      // while a broker answers would stall every request's claim meanwhile.
      const rows = this.#unsentEvents.all({ limit });
      const events = rows.map((row) => JSON.parse(row.event) as UsageEvent);
      const delivered = await deliver(events);
      const sent = rows.filter((_, index) => delivered.has(events[index]!.id)).map((row) => row.seq);
      if (sent.length > 0) this.#markSent(sent, this.#options.now());
      return { claimed: rows.length, delivered: sent.length };
    });
    this.#relaying = round.catch(() => {});
    return round;
  }

  /**
   * How many pages this connection's commits may leave in the WAL before the committing one
   * copies them into the database (SQLite's wal_autocheckpoint, 1 000 by default). Where
   * another thread checkpoints (the embedded relay thread, after each round), the request
   * thread's connection raises it to a backstop: a checkpoint in a commit blocks that
   * request's thread while it copies pages and syncs the files.
   */
  setAutoCheckpoint(pages: number): void {
    this.#assertOpen();
    if (!Number.isSafeInteger(pages) || pages < 0) throw new RangeError(`pages must be a non-negative integer, got ${pages}`);
    // PRAGMA takes no bound parameters; the value is a checked integer.
    this.#db.pragma(`wal_autocheckpoint = ${pages}`);
  }

  /** Copies the WAL's committed pages into the database now, as far as readers allow (PASSIVE: never waits for another connection). */
  checkpoint(): void {
    this.#assertOpen();
    this.#db.pragma('wal_checkpoint(PASSIVE)');
  }

  async backlog(): Promise<OutboxBacklog> {
    this.#assertOpen();
    const { count, oldest } = this.#backlog.get()!;
    return { count, oldestAgeMs: oldest === null ? undefined : Math.max(0, this.#options.now() - oldest) };
  }

  async purgeSent(batchSize?: number): Promise<number> {
    this.#assertOpen();
    return this.#purgeSent.run({ cutoff: this.#options.now() - this.#options.outboxRetentionMs, limit: resolveBatchSize(batchSize) }).changes;
  }

  async release(clientId: string, key: string, token: number): Promise<LeaseOutcome> {
    this.#assertOpen();
    return outcome(this.#release.run({ clientId, key, token }).changes);
  }

  async purgeExpired(batchSize?: number): Promise<number> {
    this.#assertOpen();
    return this.#purge.run({ now: this.#options.now(), limit: resolveBatchSize(batchSize) }).changes;
  }

  async countExpired(): Promise<number> {
    this.#assertOpen();
    return this.#countExpired.get({ now: this.#options.now() })!.expired;
  }

  async healthy(): Promise<boolean> {
    if (!this.#db.open) return false;
    try {
      this.#ping.get();
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    // Appends accepted before the close are committed, not dropped.
    if (this.#db.open) this.#commitAppends();
    if (this.#db.open) this.#db.close();
  }

  #assertOpen(): void {
    if (!this.#db.open) throw new IdempotencyStoreClosed();
  }
}


const outcome = (changes: number): LeaseOutcome => (changes === 1 ? 'ok' : 'lost');

function toRecordState(row: RecordRow): RecordState {
  return {
    fingerprint: row.fingerprint,
    lockedUntil: row.locked_until,
    response: row.status === null ? undefined : { status: row.status, headers: parseHeaders(row.headers), body: row.body ?? '' },
  };
}

function parseHeaders(json: string | null): Record<string, string> {
  const parsed: unknown = json === null ? {} : JSON.parse(json);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return {};
  return Object.fromEntries(Object.entries(parsed).filter((entry): entry is [string, string] => typeof entry[1] === 'string'));
}
