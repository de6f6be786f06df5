/**
 * Versioned PostgreSQL migrations, shared by every store that keeps tables in PostgreSQL. Only
 * a client's `query` is needed, so common stays free of the driver.
 */

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
