import { encodeUsageEvent, openMigratedPool, postgresPoolConfig, quotePostgresIdentifier, type UsageEvent } from '@m2m/common';
import pg from 'pg';
import { StoreRequestError } from '../stores/outage.js';
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

export interface PostgresIdempotencyStoreOptions extends IdempotencyStoreOptions {
  /** e.g. postgres://user:password@host:5432/database */
  connectionString: string;
  /** Schema holding the tables, created if missing. Default `public`. */
  schema?: string;
  pool?: {
    /** Connections kept by this process. Default 10. */
    max?: number;
  };
  /**
   * Longest wait for a connection or a statement (ms). Default 2 000: a lost or stuck
   * database then fails requests quickly instead of holding them open.
   */
  statementTimeoutMs?: number;
  /**
   * `database` (what replicas should use): every lock and expiry time comes from the
   * database's clock, so replicas with skewed clocks cannot take a live claim from each
   * other, at one more round trip per claim and completion. `local` (the default): `now`.
   */
  clock?: 'local' | 'database';
}

/** A claim lost the race for its row to other requests several times in a row: a 503 for it, the database is fine. */
export class IdempotencyClaimContended extends StoreRequestError {
  override name = 'IdempotencyClaimContended';
}

/** The database could not be reached when the store was opened. */
export class IdempotencyDatabaseUnreachable extends Error {
  override name = 'IdempotencyDatabaseUnreachable';
}

const DEFAULT_POOL_MAX = 10;
const DEFAULT_STATEMENT_TIMEOUT_MS = 2_000;
/** Any constant will do, as long as nothing else in the database uses it as an advisory lock. */
const MIGRATION_LOCK_ID = 7_318_450_261;
/** Each round of a claim that fails does so because another request changed the record; a handful is plenty. */
const MAX_CLAIM_ATTEMPTS = 5;

/**
 * Applied in order on open; each one's number is recorded in idempotency_schema_migrations.
 * `s` is the quoted schema name.
 */
const MIGRATIONS: readonly ((s: string) => string)[] = [
  (s) => `
    CREATE TABLE IF NOT EXISTS ${s}.idempotency_keys (
      client_id    text    NOT NULL,
      key          text    NOT NULL,
      fingerprint  text    NOT NULL,
      locked_until bigint  NOT NULL, -- ms since epoch; meaningful while status IS NULL (in flight)
      expires_at   bigint  NOT NULL, -- ms since epoch; the record is ignored from then on, and purged
      status       integer,          -- NULL while in flight
      headers      jsonb,
      body         bytea,            -- bytea, not text: a body may contain NUL, which text cannot hold
      PRIMARY KEY (client_id, key)
    );
    -- The primary key serves every claim, completion and release. This index serves only
    -- purgeExpired(): without it each batch scans the whole table, every few seconds on every
    -- replica. It costs one more b-tree write per claim and completion.
    CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at ON ${s}.idempotency_keys (expires_at);`,
  // Fenced leases: every claim and take-over draws its token from one sequence, so a token is
  // never reissued, even for a key released and claimed again, whichever replica claims it.
  (s) => `
    ALTER TABLE ${s}.idempotency_keys ADD COLUMN IF NOT EXISTS fence bigint NOT NULL DEFAULT 0;
    CREATE SEQUENCE IF NOT EXISTS ${s}.idempotency_fence;`,
  // The usage outbox: an event commits in the statement that completes the record it meters.
  (s) => `
    CREATE TABLE IF NOT EXISTS ${s}.usage_outbox (
      seq        bigserial PRIMARY KEY,
      event      text      NOT NULL, -- the encoded UsageEvent
      created_at bigint    NOT NULL, -- ms since epoch
      sent_at    bigint              -- NULL until its delivery was acknowledged
    );
    CREATE INDEX IF NOT EXISTS usage_outbox_unsent ON ${s}.usage_outbox (seq) WHERE sent_at IS NULL;
    CREATE INDEX IF NOT EXISTS usage_outbox_sent ON ${s}.usage_outbox (sent_at) WHERE sent_at IS NOT NULL;`,
];

interface RecordRow {
  fingerprint: string;
  locked_until: string;
  expires_at: string;
  status: number | null;
  headers: unknown;
  body: Buffer | null;
}

/**
 * Idempotency records in PostgreSQL: durable (a commit survives a crash of the predictor or
 * of the database) and shared by every replica, so a retry landing on another replica still
 * finds its key. A claim is one `INSERT … ON CONFLICT DO NOTHING`: the row lock on the primary
 * key decides which of N concurrent requests executes.
 *
 * Why not Redis alone: it does not guarantee durability by default. Writes are acknowledged
 * before they are on disk or on a replica, so a failover, a restart or an eviction can lose a
 * claim or a completed record, and a lost claim means a retry executes the request twice:
 * the one thing an idempotency key must prevent.
 */
export class PostgresIdempotencyStore implements IdempotencyStore {
  readonly #pool: pg.Pool;
  readonly #options: ResolvedStoreOptions;
  readonly #table: string;
  readonly #fence: string;
  readonly #outbox: string;
  /** Events appended since the last group commit, each with its caller's promise. */
  #appending: { event: string; resolve: () => void; reject: (error: unknown) => void }[] = [];
  readonly #now: () => Promise<number>;
  #closing: Promise<void> | undefined;

  private constructor(pool: pg.Pool, schema: string, options: ResolvedStoreOptions, clock: 'local' | 'database') {
    this.#pool = pool;
    this.#table = `${quotePostgresIdentifier(schema)}.idempotency_keys`;
    this.#fence = `${quotePostgresIdentifier(schema)}.idempotency_fence`;
    this.#outbox = `${quotePostgresIdentifier(schema)}.usage_outbox`;
    this.#options = options;
    this.#now =
      clock === 'database'
        ? async () => Number((await pool.query<{ now: string }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now')).rows[0]!.now)
        : async () => options.now();
  }

  /** Connects and brings the schema up to date; every replica runs this at start. */
  static async open(options: PostgresIdempotencyStoreOptions): Promise<PostgresIdempotencyStore> {
    const resolved = resolveStoreOptions(options);
    const { connectionString, schema = 'public', statementTimeoutMs = DEFAULT_STATEMENT_TIMEOUT_MS } = options;
    const config = postgresPoolConfig({ connectionString, schema, statementTimeoutMs, max: options.pool?.max ?? DEFAULT_POOL_MAX, applicationName: 'predictor-idempotency' });
    const pool = await openMigratedPool(new pg.Pool(config), {
      connectionString,
      plan: { schema, versionTable: 'idempotency_schema_migrations', lockId: MIGRATION_LOCK_ID, migrations: MIGRATIONS, tooNew: (found, supported) => new UnsupportedIdempotencySchema(found, supported) },
      unreachable: (reason, cause) => new IdempotencyDatabaseUnreachable(`Cannot connect to the idempotency database at ${reason}`, { cause }),
    });
    return new PostgresIdempotencyStore(pool, schema, resolved, options.clock ?? 'local');
  }

  get leaseMs(): number {
    return this.#options.leaseMs;
  }

  async claim(clientId: string, key: string, fingerprint: string): Promise<ClaimResult> {
    this.#assertOpen();
    const { leaseMs } = this.#options;
    const now = await this.#now();
    const lockedUntil = now + leaseMs;
    const expiresAt = claimExpiresAt(now, this.#options);

    for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt += 1) {
      const inserted = await this.#pool.query<{ fence: string }>(
        `INSERT INTO ${this.#table} (client_id, key, fingerprint, locked_until, expires_at, fence)
         VALUES ($1, $2, $3, $4, $5, nextval('${this.#fence}'))
         ON CONFLICT (client_id, key) DO NOTHING
         RETURNING fence`,
        [clientId, key, fingerprint, lockedUntil, expiresAt],
      );
      if (inserted.rows[0]) return { outcome: 'claimed', token: Number(inserted.rows[0].fence) };

      const { rows } = await this.#pool.query<RecordRow>(
        `SELECT fingerprint, locked_until, expires_at, status, headers, body FROM ${this.#table} WHERE client_id = $1 AND key = $2`,
        [clientId, key],
      );
      const row = rows[0];
      if (!row) continue; // released (or purged) since the INSERT: try again
      if (Number(row.expires_at) > now) {
        const verdict = judgeExistingRecord(toRecordState(row), fingerprint, now, leaseMs);
        if (verdict.outcome !== 'abandoned') return verdict;
      }
      // Takes over an expired record, or an abandoned claim of the same request, with a new
      // token. The WHERE restates that condition and is re-checked on the latest row version
      // after waiting for a concurrent writer, so this never takes a live lease from its holder.
      const takenOver = await this.#pool.query<{ fence: string }>(
        `UPDATE ${this.#table}
         SET fingerprint = $3, locked_until = $4, expires_at = $5, fence = nextval('${this.#fence}'), status = NULL, headers = NULL, body = NULL
         WHERE client_id = $1 AND key = $2
           AND (expires_at <= $6 OR (status IS NULL AND fingerprint = $3 AND locked_until <= $6))
         RETURNING fence`,
        [clientId, key, fingerprint, lockedUntil, expiresAt, now],
      );
      if (takenOver.rows[0]) return { outcome: 'claimed', token: Number(takenOver.rows[0].fence) };
      // Another request changed the record first (took it over, completed or released it): look again.
    }
    throw new IdempotencyClaimContended(`The claim of idempotency key ${clientId}/${key} lost ${MAX_CLAIM_ATTEMPTS} races in a row.`);
  }

  // Each lease operation is one compare-and-set on the token: a holder whose claim was taken
  // over (or released, or purged) changes nothing and learns it from the row count.

  async renew(clientId: string, key: string, token: number): Promise<LeaseOutcome> {
    this.#assertOpen();
    const now = await this.#now();
    const result = await this.#pool.query(
      `UPDATE ${this.#table} SET locked_until = $4, expires_at = GREATEST(expires_at, $5)
       WHERE client_id = $1 AND key = $2 AND fence = $3 AND status IS NULL`,
      [clientId, key, token, now + this.#options.leaseMs, claimExpiresAt(now, this.#options)],
    );
    return leaseOutcome(result.rowCount);
  }

  async complete(clientId: string, key: string, token: number, response: StoredResponse, usage?: UsageEvent): Promise<LeaseOutcome> {
    this.#assertOpen();
    const now = await this.#now();
    const complete = `UPDATE ${this.#table} SET locked_until = $4, expires_at = $5, status = $6, headers = $7, body = $8
       WHERE client_id = $1 AND key = $2 AND fence = $3 AND status IS NULL`;
    const params: unknown[] = [clientId, key, token, now, now + this.#options.retentionMs, response.status, JSON.stringify(response.headers), Buffer.from(response.body, 'utf8')];
    if (!usage) return leaseOutcome((await this.#pool.query(complete, params)).rowCount);
    // One statement is one transaction: the event is written exactly when the completion is.
    const result = await this.#pool.query(
      `WITH completed AS (${complete} RETURNING 1)
       INSERT INTO ${this.#outbox} (event, created_at) SELECT $9, $4 FROM completed`,
      [...params, encodeUsageEvent(usage)],
    );
    return leaseOutcome(result.rowCount);
  }

  /**
   * Resolves once the event is committed. The events appended in one turn of the event loop
   * commit together in one INSERT (a group commit): one commit per request would make every
   * request without a key wait for its own WAL flush. If that statement fails, every append in
   * it rejects.
   */
  append(event: UsageEvent): Promise<void> {
    this.#assertOpen();
    return new Promise((resolve, reject) => {
      if (this.#appending.push({ event: encodeUsageEvent(event), resolve, reject }) === 1) setImmediate(() => void this.#commitAppends());
    });
  }

  async #commitAppends(): Promise<void> {
    const appending = this.#appending;
    this.#appending = [];
    try {
      await this.#pool.query(`INSERT INTO ${this.#outbox} (event, created_at) SELECT event, $2 FROM unnest($1::text[]) AS event`, [
        appending.map((each) => each.event),
        await this.#now(),
      ]);
    } catch (error) {
      for (const { reject } of appending) reject(error);
      return;
    }
    for (const { resolve } of appending) resolve();
  }

  async relay(limit: number, deliver: (events: UsageEvent[]) => Promise<ReadonlySet<string>>): Promise<RelayRound> {
    this.#assertOpen();
    const client = await this.#pool.connect();
    let failure: Error | undefined;
    // A checked-out client has no pool listener: a connection lost while the broker answers
    // would be an unhandled 'error' event, and end the process.
    const onError = (error: Error) => (failure ??= error);
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      // The rows stay locked until COMMIT: another replica's relay skips them, and a relay
      // that dies before marking them (its connection drops) leaves them unsent.
      const { rows } = await client.query<{ seq: string; event: string }>(
        `SELECT seq, event FROM ${this.#outbox} WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`,
        [limit],
      );
      const events = rows.map((row) => JSON.parse(row.event) as UsageEvent);
      const delivered = events.length === 0 ? new Set<string>() : await deliver(events);
      const sent = rows.filter((_, index) => delivered.has(events[index]!.id)).map((row) => row.seq);
      if (sent.length > 0) await client.query(`UPDATE ${this.#outbox} SET sent_at = $2 WHERE seq = ANY($1::bigint[])`, [sent, await this.#now()]);
      await client.query('COMMIT');
      return { claimed: rows.length, delivered: sent.length };
    } catch (error) {
      failure = error as Error;
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      client.off('error', onError);
      // A connection whose transaction failed is not handed out again.
      client.release(failure);
    }
  }

  async backlog(): Promise<OutboxBacklog> {
    this.#assertOpen();
    const [{ rows }, now] = await Promise.all([
      this.#pool.query<{ count: string; oldest: string | null }>(`SELECT count(*) AS count, min(created_at) AS oldest FROM ${this.#outbox} WHERE sent_at IS NULL`),
      this.#now(),
    ]);
    const oldest = rows[0]?.oldest;
    return { count: Number(rows[0]?.count ?? 0), oldestAgeMs: oldest == null ? undefined : Math.max(0, now - Number(oldest)) };
  }

  async purgeSent(batchSize?: number): Promise<number> {
    this.#assertOpen();
    const limit = resolveBatchSize(batchSize);
    const result = await this.#pool.query(
      `DELETE FROM ${this.#outbox}
       WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${this.#outbox} WHERE sent_at IS NOT NULL AND sent_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`,
      [(await this.#now()) - this.#options.outboxRetentionMs, limit],
    );
    return result.rowCount ?? 0;
  }

  async release(clientId: string, key: string, token: number): Promise<LeaseOutcome> {
    this.#assertOpen();
    const result = await this.#pool.query(`DELETE FROM ${this.#table} WHERE client_id = $1 AND key = $2 AND fence = $3 AND status IS NULL`, [
      clientId,
      key,
      token,
    ]);
    return leaseOutcome(result.rowCount);
  }

  async purgeExpired(batchSize?: number): Promise<number> {
    this.#assertOpen();
    const limit = resolveBatchSize(batchSize);
    // SKIP LOCKED: replicas purging at once take different rows, and a row a claim is taking
    // over right now is left alone; the rows stay locked, so each ctid is still theirs when
    // deleted. ctid = ANY(ARRAY(…)) is a TID scan; a join on the key would scan the whole table.
    const result = await this.#pool.query(
      `DELETE FROM ${this.#table}
       WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${this.#table} WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`,
      [await this.#now(), limit],
    );
    return result.rowCount ?? 0;
  }

  async countExpired(): Promise<number> {
    this.#assertOpen();
    const { rows } = await this.#pool.query<{ expired: string }>(`SELECT count(*) AS expired FROM ${this.#table} WHERE expires_at <= $1`, [await this.#now()]);
    return Number(rows[0]?.expired ?? 0);
  }

  async healthy(): Promise<boolean> {
    if (this.#closing) return false;
    try {
      // Reads the table, not just the connection: a dropped schema or a revoked grant shows here.
      await this.#pool.query(`SELECT 1 FROM ${this.#table} LIMIT 1`);
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
    if (this.#closing) throw new IdempotencyStoreClosed();
  }
}


const leaseOutcome = (rowCount: number | null): LeaseOutcome => (rowCount === 1 ? 'ok' : 'lost');

function toRecordState(row: RecordRow): RecordState {
  return {
    fingerprint: row.fingerprint,
    // bigint arrives as a string; ms since epoch are far below 2^53.
    lockedUntil: Number(row.locked_until),
    response:
      row.status === null ? undefined : { status: row.status, headers: toHeaders(row.headers), body: row.body?.toString('utf8') ?? '' },
  };
}

function toHeaders(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return {};
  return Object.fromEntries(Object.entries(value).filter((entry): entry is [string, string] => typeof entry[1] === 'string'));
}
