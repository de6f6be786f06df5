import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { migrateSqlite, type UsageEvent } from '@m2m/common';
import Database from 'better-sqlite3';
import {
  checkUsageFilter,
  MAX_TOTAL,
  prepareBatch,
  UnsupportedUsageSchema,
  UsageLedgerClosed,
  UsageTotalOverflow,
  type LedgerEntry,
  type RecordOutcome,
  type UsageFilter,
  type UsageLedger,
  type UsageTotal,
} from './ledger.js';

export interface SqliteUsageLedgerOptions {
  /**
   * How long a statement waits for another connection's write lock before failing with
   * SQLITE_BUSY (ms). The predictor and `npm run usage` may share the file. Default 5 000.
   */
  busyTimeoutMs?: number;
  /** Stamps each inbox entry's `recorded_at` (ms since epoch). Default `Date.now`. */
  now?: () => number;
  /** `false`: refuse to create the file (UsageLedgerNotFound) instead of starting an empty ledger. Default `true`. */
  create?: boolean;
}

/** `create: false` and no file at the path: nothing has recorded usage there yet. */
export class UsageLedgerNotFound extends Error {
  override name = 'UsageLedgerNotFound';
  constructor(readonly path: string) {
    super(`no usage ledger at ${path}`);
  }
}

const TOTALS_CONSTRAINT = 'usage_daily_totals_exact';

/**
 * Applied in order on open; `user_version` records how many ran, so opening twice (or two
 * processes opening at once: the migration runs under the write lock) changes nothing.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS usage_inbox (
     event_id    TEXT    PRIMARY KEY,
     client_id   TEXT    NOT NULL,
     day         TEXT    NOT NULL, -- UTC, YYYY-MM-DD
     rows        INTEGER NOT NULL CHECK (rows >= 1),
     recorded_at INTEGER NOT NULL  -- ms since epoch
   ) WITHOUT ROWID;
   CREATE TABLE IF NOT EXISTS usage_daily (
     client_id   TEXT    NOT NULL,
     day         TEXT    NOT NULL, -- UTC, YYYY-MM-DD
     predictions INTEGER NOT NULL,
     rows        INTEGER NOT NULL,
     PRIMARY KEY (client_id, day),
     -- Totals past 2^53 - 1 would be read back inexactly: the record fails (and rolls back) instead.
     CONSTRAINT ${TOTALS_CONSTRAINT} CHECK (predictions BETWEEN 1 AND ${MAX_TOTAL} AND rows BETWEEN 1 AND ${MAX_TOTAL})
   ) WITHOUT ROWID;
   -- report({ day }) without a client; the primary key serves the client filter.
   CREATE INDEX IF NOT EXISTS usage_daily_day ON usage_daily (day);`,
];

interface EntryParams extends LedgerEntry {
  now: number;
}

interface DailyParams {
  clientId: string;
  day: string;
  predictions: number;
  rows: number;
}

interface FilterParams {
  clientId: string | null;
  day: string | null;
}

/**
 * The usage ledger in an SQLite file (the embedded default: `<PREDICTOR_DATA_DIR>/usage.db`).
 * A record is one IMMEDIATE transaction, so it holds the write lock from the inbox insert to
 * the aggregate update, and a crash between them leaves neither.
 */
export class SqliteUsageLedger implements UsageLedger {
  readonly #db: Database.Database;
  readonly #now: () => number;
  readonly #insertInbox: Database.Statement<EntryParams>;
  readonly #addToDaily: Database.Statement<DailyParams>;
  readonly #report: Database.Statement<FilterParams, UsageTotal>;
  readonly #count: Database.Statement<{ clientId: string | null }, { events: number }>;
  readonly #ping: Database.Statement<[], unknown>;
  readonly #recordTransaction: (entries: readonly LedgerEntry[]) => Set<string>;

  private constructor(db: Database.Database, now: () => number) {
    this.#db = db;
    this.#now = now;
    // ON CONFLICT (event_id), not INSERT OR IGNORE: OR IGNORE would also swallow a NOT NULL or
    // CHECK violation, and the event would be reported a duplicate instead of failing.
    this.#insertInbox = db.prepare(
      `INSERT INTO usage_inbox (event_id, client_id, day, rows, recorded_at) VALUES (@eventId, @clientId, @day, @rows, @now)
       ON CONFLICT (event_id) DO NOTHING`,
    );
    this.#addToDaily = db.prepare(
      `INSERT INTO usage_daily (client_id, day, predictions, rows) VALUES (@clientId, @day, @predictions, @rows)
       ON CONFLICT (client_id, day) DO UPDATE SET predictions = predictions + excluded.predictions, rows = rows + excluded.rows`,
    );
    this.#report = db.prepare(
      `SELECT client_id AS clientId, day, predictions, rows FROM usage_daily
       WHERE (@clientId IS NULL OR client_id = @clientId) AND (@day IS NULL OR day = @day)
       ORDER BY day, client_id`,
    );
    this.#count = db.prepare('SELECT count(*) AS events FROM usage_inbox WHERE @clientId IS NULL OR client_id = @clientId');
    // Reads the tables, not just the connection: a missing or unreadable file shows here.
    this.#ping = db.prepare('SELECT (SELECT 1 FROM usage_inbox LIMIT 1), (SELECT 1 FROM usage_daily LIMIT 1)');

    const record = db.transaction((entries: readonly LedgerEntry[]): Set<string> => {
      const now = this.#now();
      const inserted = new Set<string>();
      // One update per client and day of the batch, not one per event: a batch is mostly a few clients' events.
      const totals = new Map<string, DailyParams>();
      for (const entry of entries) {
        if (this.#insertInbox.run({ ...entry, now }).changes !== 1) continue; // seen before: the inbox absorbs it
        inserted.add(entry.eventId);
        const group = `${entry.day} ${entry.clientId}`;
        const total = totals.get(group);
        if (total) {
          total.predictions += 1;
          total.rows += entry.rows;
        } else totals.set(group, { clientId: entry.clientId, day: entry.day, predictions: 1, rows: entry.rows });
      }
      for (const total of totals.values()) this.#addToDaily.run(total);
      return inserted;
    });
    // BEGIN IMMEDIATE takes the write lock up front, waiting up to busy_timeout for it; a
    // deferred transaction could fail with SQLITE_BUSY_SNAPSHOT on its first write instead.
    this.#recordTransaction = (entries) => record.immediate(entries);
  }

  /** Opens (creating it unless `create: false`) the database file and brings its schema up to date. */
  static open(path: string, options: SqliteUsageLedgerOptions = {}): SqliteUsageLedger {
    const { busyTimeoutMs = 5_000, now = Date.now, create = true } = options;
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) throw new RangeError(`busyTimeoutMs must be a non-negative integer, got ${busyTimeoutMs}`);
    const inMemory = path === ':memory:' || path === '';
    if (!inMemory && !create && !existsSync(path)) throw new UsageLedgerNotFound(path);
    if (!inMemory && create) mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // `timeout` is SQLite's busy_timeout, set before any statement so even the pragmas below wait.
    const db = new Database(path, { timeout: busyTimeoutMs, fileMustExist: !inMemory && !create });
    try {
      // WAL: readers (a report) never block the writer, and a commit is one append to the log.
      db.pragma('journal_mode = WAL');
      // A commit is in the OS before `run()` returns, so it survives a crash of the process;
      // only a power loss can lose the latest commits, which JetStream then re-delivers if unacked.
      db.pragma('synchronous = NORMAL');
      migrateSqlite(db, MIGRATIONS, (found, supported) => new UnsupportedUsageSchema(found, supported));
      return new SqliteUsageLedger(db, now);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  async record(event: UsageEvent): Promise<RecordOutcome> {
    return (await this.recordBatch([event]))[0]!;
  }

  async recordBatch(events: readonly UsageEvent[]): Promise<RecordOutcome[]> {
    this.#assertOpen();
    const batch = prepareBatch(events);
    if (batch.entries.length === 0) return [];
    try {
      return batch.outcomes(this.#recordTransaction(batch.entries));
    } catch (error) {
      if (error instanceof Database.SqliteError && error.code === 'SQLITE_CONSTRAINT_CHECK' && error.message.includes(TOTALS_CONSTRAINT)) {
        throw new UsageTotalOverflow(`a daily total would exceed ${MAX_TOTAL}; nothing of this batch was recorded`, { cause: error });
      }
      throw error;
    }
  }

  async report(filter?: UsageFilter): Promise<UsageTotal[]> {
    this.#assertOpen();
    const { clientId, day } = checkUsageFilter(filter);
    return this.#report.all({ clientId: clientId ?? null, day: day ?? null });
  }

  async eventCount(clientId?: string): Promise<number> {
    this.#assertOpen();
    return this.#count.get({ clientId: clientId ?? null })!.events;
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
    if (this.#db.open) this.#db.close();
  }

  #assertOpen(): void {
    if (!this.#db.open) throw new UsageLedgerClosed();
  }
}

