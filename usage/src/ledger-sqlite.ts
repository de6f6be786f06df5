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
    this.#addToDaily = prepareAddToDaily(db);
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
      const inserted: LedgerEntry[] = [];
      for (const entry of entries) {
        if (this.#insertInbox.run({ ...entry, now }).changes === 1) inserted.push(entry); // else seen before: the inbox absorbs it
      }
      addToDailyTotals(this.#addToDaily, inserted);
      return new Set(inserted.map((entry) => entry.eventId));
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
      throw asOverflow(error);
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


/** A daily total's CHECK failing is UsageTotalOverflow; any other error is returned as it is. */
function asOverflow(error: unknown): unknown {
  if (error instanceof Database.SqliteError && error.code === 'SQLITE_CONSTRAINT_CHECK' && error.message.includes(TOTALS_CONSTRAINT)) {
    return new UsageTotalOverflow(`a daily total would exceed ${MAX_TOTAL}; nothing of this batch was recorded`, { cause: error });
  }
  return error;
}

function prepareAddToDaily(db: Database.Database): Database.Statement<DailyParams> {
  return db.prepare(
    `INSERT INTO usage_daily (client_id, day, predictions, rows) VALUES (@clientId, @day, @predictions, @rows)
     ON CONFLICT (client_id, day) DO UPDATE SET predictions = predictions + excluded.predictions, rows = rows + excluded.rows`,
  );
}

/** Adds events just inserted into the inbox to their daily totals: one update per client and day, not one per event (a batch is mostly a few clients' events). */
function addToDailyTotals(addToDaily: Database.Statement<DailyParams>, inserted: Iterable<Pick<LedgerEntry, 'clientId' | 'day' | 'rows'>>): void {
  const totals = new Map<string, DailyParams>();
  for (const entry of inserted) {
    const group = `${entry.day} ${entry.clientId}`;
    const total = totals.get(group);
    if (total) {
      total.predictions += 1;
      total.rows += entry.rows;
    } else totals.set(group, { clientId: entry.clientId, day: entry.day, predictions: 1, rows: entry.rows });
  }
  for (const total of totals.values()) addToDaily.run(total);
}

/**
 * The ledger's file opened once more, with another SQLite database attached as `source`, to
 * record the events a query over that database yields without bringing each into
 * JavaScript: the embedded predictor's relay moves its SQLite outbox this way
 * (predictor/src/usage/sql-relay.ts), a few statements a round instead of a parse, a check
 * and an insert per event. The caller runs the transactions on `db`: a BEGIN IMMEDIATE there
 * would take the source's write lock too, and in WAL mode a transaction is not atomic across
 * attached files, so the caller commits the ledger's records before it changes the source.
 */
export class SqliteLedgerImport {
  readonly db: Database.Database;
  readonly #now: () => number;
  readonly #addToDaily: Database.Statement<DailyParams>;

  private constructor(db: Database.Database, now: () => number) {
    this.db = db;
    this.#now = now;
    this.#addToDaily = prepareAddToDaily(db);
  }

  /** Opens the ledger (it must exist; its schema is brought up to date as by SqliteUsageLedger.open) and attaches `sourcePath` as `source`. */
  static open(ledgerPath: string, sourcePath: string, options: Pick<SqliteUsageLedgerOptions, 'busyTimeoutMs' | 'now'> = {}): SqliteLedgerImport {
    const { busyTimeoutMs = 5_000, now = Date.now } = options;
    const db = new Database(ledgerPath, { timeout: busyTimeoutMs, fileMustExist: true });
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      migrateSqlite(db, MIGRATIONS, (found, supported) => new UnsupportedUsageSchema(found, supported));
      db.prepare('ATTACH DATABASE ? AS source').run(sourcePath);
      db.pragma('source.synchronous = NORMAL');
      return new SqliteLedgerImport(db, now);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /**
   * Prepares the record of what `select` yields: one row per event with the columns
   * `position` (of two events with the same id, the lower records), `event_id`, `client_id`,
   * `day` and `rows`, each already checked as `toLedgerEntry` checks an event. Run inside the
   * caller's transaction, the returned function inserts into the inbox the events whose id it
   * does not hold and adds exactly those to the daily totals; it returns how many it inserted.
   * A total past 2^53 - 1 throws UsageTotalOverflow (the caller rolls back).
   */
  prepareRecord<P extends Record<string, unknown>>(select: string): (params: P) => number {
    // WHERE true: an upsert's SELECT needs a WHERE, else its ON could be read as a join's.
    const insert = this.db
      .prepare<P & { now: number }, { clientId: string; day: string; rows: number }>(
        `INSERT INTO main.usage_inbox (event_id, client_id, day, rows, recorded_at)
         SELECT event_id, client_id, day, rows, @now FROM (${select}) WHERE true ORDER BY position
         ON CONFLICT (event_id) DO NOTHING
         RETURNING client_id AS clientId, day, rows`,
      );
    return (params) => {
      try {
        const inserted = insert.all({ ...params, now: this.#now() });
        addToDailyTotals(this.#addToDaily, inserted);
        return inserted.length;
      } catch (error) {
        throw asOverflow(error);
      }
    };
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
