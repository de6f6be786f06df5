import { openMigratedPool, postgresPoolConfig, quotePostgresIdentifier, type UsageEvent } from '@m2m/common';
import pg from 'pg';
import {
  checkUsageFilter,
  MAX_TOTAL,
  prepareBatch,
  UnsupportedUsageSchema,
  UsageLedgerClosed,
  UsageTotalOverflow,
  type RecordOutcome,
  type UsageFilter,
  type UsageLedger,
  type UsageTotal,
} from './ledger.js';

export interface PostgresUsageLedgerOptions {
  /** e.g. postgres://user:password@host:5432/database */
  connectionString: string;
  /** Schema holding the tables, created if missing. Default `public`. */
  schema?: string;
  pool?: {
    /** Connections kept by this process. Default 10. */
    max?: number;
  };
  /**
   * Longest wait for a connection or a statement (ms). Default 2 000: a lost database fails a
   * record quickly, and the consumer leaves the message unacked for re-delivery.
   */
  statementTimeoutMs?: number;
  /** Stamps each inbox entry's `recorded_at` (ms since epoch). Default `Date.now`. */
  now?: () => number;
}

/** The database could not be reached when the ledger was opened. */
export class UsageDatabaseUnreachable extends Error {
  override name = 'UsageDatabaseUnreachable';
}

const DEFAULT_POOL_MAX = 10;
const DEFAULT_STATEMENT_TIMEOUT_MS = 2_000;
/** Not the idempotency store's (7_318_450_261): the two may migrate the same database at once, independently. */
const MIGRATION_LOCK_ID = 7_318_450_262;
const TOTALS_CONSTRAINT = 'usage_daily_totals_exact';
const CHECK_VIOLATION = '23514';
const NUMERIC_VALUE_OUT_OF_RANGE = '22003';

/**
 * Applied in order on open; each one's number is recorded in usage_schema_migrations.
 * `s` is the quoted schema name.
 */
const MIGRATIONS: readonly ((s: string) => string)[] = [
  (s) => `
    CREATE TABLE IF NOT EXISTS ${s}.usage_inbox (
      event_id    text   PRIMARY KEY,
      client_id   text   NOT NULL,
      day         date   NOT NULL, -- UTC
      rows        bigint NOT NULL CHECK (rows >= 1),
      recorded_at bigint NOT NULL  -- ms since epoch
    );
    CREATE TABLE IF NOT EXISTS ${s}.usage_daily (
      client_id   text   NOT NULL,
      day         date   NOT NULL, -- UTC
      predictions bigint NOT NULL,
      rows        bigint NOT NULL,
      PRIMARY KEY (client_id, day),
      -- Totals past 2^53 - 1 would be read back inexactly: the record fails (and rolls back) instead.
      CONSTRAINT ${TOTALS_CONSTRAINT} CHECK (predictions BETWEEN 1 AND ${MAX_TOTAL} AND rows BETWEEN 1 AND ${MAX_TOTAL})
    );
    -- report({ day }) without a client; the primary key serves the client filter.
    CREATE INDEX IF NOT EXISTS usage_daily_day ON ${s}.usage_daily (day);`,
];

/**
 * The usage ledger in PostgreSQL, shared by every consumer. A record (or a batch) is one
 * statement, hence one transaction: the inbox insert, `ON CONFLICT (event_id) DO NOTHING
 * RETURNING`, feeds the aggregate upsert, so only ids that were inserted add to the totals.
 * Of N consumers recording one id at once, the primary key lets exactly one insert it; the
 * others wait for its commit, then find the conflict.
 */
export class PostgresUsageLedger implements UsageLedger {
  readonly #pool: pg.Pool;
  readonly #now: () => number;
  readonly #inbox: string;
  readonly #daily: string;
  #closing: Promise<void> | undefined;

  private constructor(pool: pg.Pool, schema: string, now: () => number) {
    this.#pool = pool;
    this.#now = now;
    this.#inbox = `${quotePostgresIdentifier(schema)}.usage_inbox`;
    this.#daily = `${quotePostgresIdentifier(schema)}.usage_daily`;
  }

  /** Connects and brings the schema up to date; every consumer runs this at start. */
  static async open(options: PostgresUsageLedgerOptions): Promise<PostgresUsageLedger> {
    const { connectionString, schema = 'public', statementTimeoutMs = DEFAULT_STATEMENT_TIMEOUT_MS, now = Date.now } = options;
    const config = postgresPoolConfig({ connectionString, schema, statementTimeoutMs, max: options.pool?.max ?? DEFAULT_POOL_MAX, applicationName: 'usage-ledger' });
    const pool = await openMigratedPool(new pg.Pool(config), {
      connectionString,
      plan: { schema, versionTable: 'usage_schema_migrations', lockId: MIGRATION_LOCK_ID, migrations: MIGRATIONS, tooNew: (found, supported) => new UnsupportedUsageSchema(found, supported) },
      unreachable: (reason, cause) => new UsageDatabaseUnreachable(`Cannot connect to the usage database at ${reason}`, { cause }),
    });
    return new PostgresUsageLedger(pool, schema, now);
  }

  async record(event: UsageEvent): Promise<RecordOutcome> {
    return (await this.recordBatch([event]))[0]!;
  }

  async recordBatch(events: readonly UsageEvent[]): Promise<RecordOutcome[]> {
    this.#assertOpen();
    const batch = prepareBatch(events);
    if (batch.entries.length === 0) return [];
    const { entries } = batch;
    // Rows are inserted, and their locks taken, in sorted order (ids, then totals), so two
    // batches sharing ids or totals wait for each other instead of deadlocking. Data-modifying
    // CTEs always run to completion, read or not (https://www.postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING).
    const sql = `
      WITH batch AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::bigint[]) AS b (event_id, client_id, day, rows)
      ), inserted AS (
        INSERT INTO ${this.#inbox} (event_id, client_id, day, rows, recorded_at)
        SELECT event_id, client_id, day, rows, $5 FROM batch ORDER BY event_id
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id, client_id, day, rows
      ), totals AS (
        INSERT INTO ${this.#daily} AS d (client_id, day, predictions, rows)
        SELECT client_id, day, count(*), sum(rows) FROM inserted GROUP BY client_id, day ORDER BY client_id, day
        ON CONFLICT (client_id, day) DO UPDATE SET predictions = d.predictions + EXCLUDED.predictions, rows = d.rows + EXCLUDED.rows
      )
      SELECT event_id FROM inserted`;
    try {
      const { rows } = await this.#pool.query<{ event_id: string }>(sql, [
        entries.map((entry) => entry.eventId),
        entries.map((entry) => entry.clientId),
        entries.map((entry) => entry.day),
        entries.map((entry) => entry.rows),
        this.#now(),
      ]);
      return batch.outcomes(new Set(rows.map((row) => row.event_id)));
    } catch (error) {
      const { code, constraint } = error as { code?: string; constraint?: string };
      if ((code === CHECK_VIOLATION && constraint === TOTALS_CONSTRAINT) || code === NUMERIC_VALUE_OUT_OF_RANGE) {
        throw new UsageTotalOverflow(`a daily total would exceed ${MAX_TOTAL}; nothing of this batch was recorded`, { cause: error });
      }
      throw error;
    }
  }

  async report(filter?: UsageFilter): Promise<UsageTotal[]> {
    this.#assertOpen();
    const { clientId, day } = checkUsageFilter(filter);
    // COLLATE "C": the same binary order as SQLite, whatever the database's locale.
    const { rows } = await this.#pool.query<{ client_id: string; day: string; predictions: string; rows: string }>(
      `SELECT d.client_id, to_char(d.day, 'YYYY-MM-DD') AS day, d.predictions, d.rows FROM ${this.#daily} AS d
       WHERE ($1::text IS NULL OR d.client_id = $1) AND ($2::date IS NULL OR d.day = $2::date)
       ORDER BY d.day, d.client_id COLLATE "C"`,
      [clientId ?? null, day ?? null],
    );
    // bigint arrives as a string; the CHECK constraint keeps it below 2^53.
    return rows.map((row) => ({ clientId: row.client_id, day: row.day, predictions: Number(row.predictions), rows: Number(row.rows) }));
  }

  async eventCount(clientId?: string): Promise<number> {
    this.#assertOpen();
    const { rows } = await this.#pool.query<{ events: string }>(
      `SELECT count(*) AS events FROM ${this.#inbox} WHERE $1::text IS NULL OR client_id = $1`,
      [clientId ?? null],
    );
    return Number(rows[0]?.events ?? 0);
  }

  async healthy(): Promise<boolean> {
    if (this.#closing) return false;
    try {
      // Reads the tables, not just the connection: a dropped schema or a revoked grant shows here.
      await this.#pool.query(`SELECT (SELECT 1 FROM ${this.#inbox} LIMIT 1), (SELECT 1 FROM ${this.#daily} LIMIT 1)`);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    // pool.end() throws if called twice; every caller waits for the one shutdown.
    this.#closing ??= this.#pool.end();
    await this.#closing;
  }

  #assertOpen(): void {
    if (this.#closing) throw new UsageLedgerClosed();
  }
}

