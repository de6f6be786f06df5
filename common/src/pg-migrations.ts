/**
 * Versioned PostgreSQL migrations, shared by every store that keeps tables in PostgreSQL. Only
 * a client's `query` is needed, so common stays free of the driver.
 */
import { SQL_IDENTIFIER } from './env.js';
import { redactUrl } from './logger.js';

/** The part of a `pg` client the runner uses. */
export interface MigrationClient {
  query<R extends Record<string, unknown> = Record<string, unknown>>(text: string, values?: unknown[]): Promise<{ rows: R[] }>;
}

export interface MigrationPlan {
  /** A plain identifier (checked by the caller): created if missing. */
  schema: string;
  /** The table recording applied versions, e.g. `idempotency_schema_migrations`. */
  versionTable: string;
  /** An advisory lock id no other code in the database uses. */
  lockId: number;
  /** Applied in order; each receives the quoted schema name. */
  migrations: readonly ((quotedSchema: string) => string)[];
  /** The error for a database a newer version migrated. */
  tooNew: (found: number, supported: number) => Error;
}

/**
 * Brings the schema to the latest version in one transaction. The advisory lock makes processes
 * starting at once migrate one after the other; the second then finds nothing left to do.
 */
export async function migratePostgres(client: MigrationClient, plan: MigrationPlan): Promise<void> {
  const s = quotePostgresIdentifier(plan.schema);
  const versions = `${s}.${plan.versionTable}`;
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [plan.lockId]);
    // Under the lock: two concurrent CREATE SCHEMA IF NOT EXISTS can still collide on a unique index.
    if (plan.schema !== 'public') await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${versions} (
         version    integer     PRIMARY KEY,
         applied_at timestamptz NOT NULL DEFAULT now()
       )`,
    );
    const { rows } = await client.query<{ version: number | null }>(`SELECT max(version) AS version FROM ${versions}`);
    const version = rows[0]?.version ?? 0;
    if (version > plan.migrations.length) throw plan.tooNew(version, plan.migrations.length);
    for (const [index, migration] of plan.migrations.entries()) {
      if (index < version) continue;
      await client.query(migration(s));
      await client.query(`INSERT INTO ${versions} (version) VALUES ($1)`, [index + 1]);
    }
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
}

/** What a store's pool is opened with; checked by `postgresPoolConfig`. */
export interface PostgresPoolOptions {
  connectionString: string;
  /** A plain identifier (SQL_IDENTIFIER). */
  schema: string;
  /** Server-side statement_timeout and the connect timeout (ms). */
  statementTimeoutMs: number;
  max: number;
  /** Shown in pg_stat_activity. */
  applicationName: string;
}

/**
 * The client-side timer must outlast the server's statement_timeout, so a slow statement is
 * cancelled by the server (the connection survives) and the timer only catches a dead network.
 */
const QUERY_TIMEOUT_MARGIN_MS = 500;

/** The `pg.Pool` configuration of a store, after checking what is spliced into SQL or sized. */
export function postgresPoolConfig(options: PostgresPoolOptions) {
  const { connectionString, schema, statementTimeoutMs, max, applicationName } = options;
  // The name is spliced into SQL (identifiers cannot be bound), so only plain names pass.
  if (!SQL_IDENTIFIER.test(schema)) throw new RangeError(`schema must match ${SQL_IDENTIFIER.source}, got ${JSON.stringify(schema)}`);
  if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`pool.max must be a positive integer, got ${max}`);
  if (!Number.isSafeInteger(statementTimeoutMs) || statementTimeoutMs < 1) {
    throw new RangeError(`statementTimeoutMs must be a positive integer, got ${statementTimeoutMs}`);
  }
  return {
    connectionString,
    max,
    connectionTimeoutMillis: statementTimeoutMs,
    statement_timeout: statementTimeoutMs,
    query_timeout: statementTimeoutMs + QUERY_TIMEOUT_MARGIN_MS,
    application_name: applicationName,
  };
}

/** The part of a `pg` pool `openMigratedPool` uses. */
export interface MigratablePool {
  on(event: 'error', listener: () => void): unknown;
  connect(): Promise<MigrationClient & { on(event: 'error', listener: () => void): unknown; release(destroy?: boolean): void }>;
  end(): Promise<void>;
}

/**
 * Opens a store's pool: one connection first (a database that cannot be reached is
 * `unreachable(reason)`, with the URL's password hidden), the migrations on it, then the pool.
 * A failure ends the pool.
 */
export async function openMigratedPool<P extends MigratablePool>(
  pool: P,
  options: { connectionString: string; plan: MigrationPlan; unreachable: (message: string, cause: unknown) => Error },
): Promise<P> {
  // An idle connection that breaks (database restart, network) is dropped by the pool and the
  // next query opens another; without a listener the 'error' event would crash the process.
  pool.on('error', () => {});
  try {
    let client: Awaited<ReturnType<P['connect']>>;
    try {
      client = (await pool.connect()) as Awaited<ReturnType<P['connect']>>;
      // The migration's query in flight rejects if the connection drops; without a listener the client's 'error' event would end the process.
      client.on('error', () => {});
    } catch (error) {
      throw options.unreachable(`${redactUrl(options.connectionString)}: ${describeConnectError(error)}`, error);
    }
    try {
      await migratePostgres(client, options.plan);
      client.release();
    } catch (error) {
      // A failed migration leaves the connection in an unknown state: the pool discards it.
      client.release(true);
      throw error;
    }
    return pool;
  } catch (error) {
    await pool.end().catch(() => {});
    throw error;
  }
}

/** For names already checked against SQL_IDENTIFIER: they hold no quote to escape. */
export function quotePostgresIdentifier(name: string): string {
  return `"${name}"`;
}

/** Node reports a refused connection to a name with several addresses as an AggregateError with an empty message. */
export function describeConnectError(error: unknown): string {
  if (error instanceof AggregateError && error.message === '') return error.errors.map(describeConnectError).join('; ');
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
