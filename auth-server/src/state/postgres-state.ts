import { SQL_IDENTIFIER } from '@m2m/common';
import pg from 'pg';
import type { StoredClient } from '../clients/registry.js';
import type { SigningKeyFile } from '../keys/signing-key-file.js';
import { StateConflict, type AuthStateStorage } from './storage.js';

type DocumentName = 'signing-keys' | 'clients';

export interface PostgresStateOptions {
  connectionString: string;
  /** Default `public`; tests give each server a schema of its own. */
  schema?: string;
  /** Fails a statement (and a connection attempt) that takes longer: a lost database must not hang a token request. Default 5 000. */
  statementTimeoutMs?: number;
}

/** The state on first start of the first replica; later replicas read what it stored. */
export interface InitialState {
  keys: () => Promise<SigningKeyFile>;
  clients: () => StoredClient[];
}

// Bumped when the tables change; each entry runs once, in order, under an advisory lock.
const MIGRATIONS: readonly ((schema: string) => string)[] = [
  (schema) => `
    CREATE TABLE IF NOT EXISTS ${schema}.auth_state (
      name       text        PRIMARY KEY,  -- 'signing-keys' | 'clients'
      version    bigint      NOT NULL,     -- +1 on every write: replicas poll it, writers compare-and-set it
      body       jsonb       NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    -- oidc-provider's own records (ReplayDetection of client assertions; opaque tokens, if ever enabled).
    CREATE TABLE IF NOT EXISTS ${schema}.oidc_models (
      model      text        NOT NULL,
      id         text        NOT NULL,
      payload    jsonb       NOT NULL,
      grant_id   text,
      user_code  text,
      uid        text,
      expires_at timestamptz,
      PRIMARY KEY (model, id)
    );
    -- revokeByGrantId and the expiry purge would scan the table without these.
    CREATE INDEX IF NOT EXISTS oidc_models_grant_id ON ${schema}.oidc_models (grant_id) WHERE grant_id IS NOT NULL;
    CREATE INDEX IF NOT EXISTS oidc_models_expires_at ON ${schema}.oidc_models (expires_at) WHERE expires_at IS NOT NULL;`,
];

// Any constant shared by every replica: serialises migrations of concurrent starts.
const MIGRATION_LOCK = 7_211_001;

/**
 * Signing keys and client registrations in PostgreSQL, shared by auth-server replicas:
 * every replica signs with the same current key and publishes the same JWKS. Writes are
 * compare-and-set on a version, so two replicas changing the state at once cannot lose
 * an update; replicas poll the versions (`pullChanges`) to see each other's changes.
 *
 * The private keys are in the database: access to it must be as restricted as to the
 * key files of a single server.
 */
export class PostgresStateStorage implements AuthStateStorage {
  readonly kind = 'postgres';
  readonly #versions = new Map<DocumentName, number>();

  private constructor(
    readonly pool: pg.Pool,
    readonly schema: string,
  ) {}

  static async open(options: PostgresStateOptions): Promise<PostgresStateStorage> {
    const schemaName = options.schema ?? 'public';
    if (!SQL_IDENTIFIER.test(schemaName)) throw new Error(`schema must be a plain identifier, got "${schemaName}"`);
    const timeout = options.statementTimeoutMs ?? 5_000;
    const pool = new pg.Pool({ connectionString: options.connectionString, max: 4, connectionTimeoutMillis: timeout, query_timeout: timeout, statement_timeout: timeout });
    // An idle connection dropped by the server must not crash the process; the next query reconnects.
    pool.on('error', () => {});
    const storage = new PostgresStateStorage(pool, `"${schemaName}"`);
    try {
      await storage.#migrate(schemaName);
      return storage;
    } catch (error) {
      await pool.end();
      throw error;
    }
  }

  /** Reads the state, storing `initial` first if no replica has yet (the first writer wins). */
  async load(initial: InitialState): Promise<{ keys: SigningKeyFile; clients: StoredClient[]; seeded: boolean }> {
    const storedKeys = await this.#read('signing-keys');
    const storedClients = await this.#read('clients');
    const keys = storedKeys ?? (await this.#insertOrRead('signing-keys', await initial.keys()));
    const clients = storedClients ?? (await this.#insertOrRead('clients', initial.clients()));
    return { keys: keys as SigningKeyFile, clients: clients as StoredClient[], seeded: !storedClients };
  }

  saveKeys(file: SigningKeyFile): Promise<void> {
    return this.#write('signing-keys', file);
  }

  saveClients(clients: StoredClient[]): Promise<void> {
    return this.#write('clients', clients);
  }

  async pullChanges(): Promise<{ keys?: SigningKeyFile; clients?: StoredClient[] }> {
    const { rows } = await this.pool.query<{ name: DocumentName; version: string }>(`SELECT name, version FROM ${this.schema}.auth_state`);
    const changed: { keys?: SigningKeyFile; clients?: StoredClient[] } = {};
    for (const row of rows) {
      if (Number(row.version) === this.#versions.get(row.name)) continue;
      const body = await this.#read(row.name);
      if (body === undefined) continue;
      if (row.name === 'signing-keys') changed.keys = body as SigningKeyFile;
      else changed.clients = body as StoredClient[];
    }
    return changed;
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => {});
  }

  async #read(name: DocumentName): Promise<unknown> {
    const { rows } = await this.pool.query<{ version: string; body: unknown }>(`SELECT version, body FROM ${this.schema}.auth_state WHERE name = $1`, [name]);
    const row = rows[0];
    if (!row) return undefined;
    this.#versions.set(name, Number(row.version));
    return row.body;
  }

  async #insertOrRead(name: DocumentName, body: unknown): Promise<unknown> {
    await this.pool.query(`INSERT INTO ${this.schema}.auth_state (name, version, body) VALUES ($1, 1, $2) ON CONFLICT (name) DO NOTHING`, [name, JSON.stringify(body)]);
    return this.#read(name);
  }

  async #write(name: DocumentName, body: unknown): Promise<void> {
    const expected = this.#versions.get(name);
    if (expected === undefined) throw new StateConflict(`${name} was never read by this replica`);
    const { rows } = await this.pool.query<{ version: string }>(
      `UPDATE ${this.schema}.auth_state SET body = $2, version = version + 1, updated_at = now() WHERE name = $1 AND version = $3 RETURNING version`,
      [name, JSON.stringify(body), expected],
    );
    const row = rows[0];
    if (!row) throw new StateConflict(`${name} was changed by another replica; retry`);
    this.#versions.set(name, Number(row.version));
  }

  async #migrate(schemaName: string): Promise<void> {
    const client = await this.pool.connect();
    // The migration's query in flight rejects if the connection drops; without a listener the client's 'error' event would end the process.
    client.on('error', () => {});
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${this.schema}`);
      await client.query(`CREATE TABLE IF NOT EXISTS ${this.schema}.auth_schema_version (version integer NOT NULL)`);
      const { rows } = await client.query<{ version: number }>(`SELECT version FROM ${this.schema}.auth_schema_version`);
      const version = rows[0]?.version ?? 0;
      if (version > MIGRATIONS.length) throw new Error(`schema ${schemaName} has auth-server tables of version ${version}; this auth-server knows up to ${MIGRATIONS.length}`);
      for (const migration of MIGRATIONS.slice(version)) await client.query(migration(this.schema));
      if (rows.length === 0) await client.query(`INSERT INTO ${this.schema}.auth_schema_version (version) VALUES ($1)`, [MIGRATIONS.length]);
      else await client.query(`UPDATE ${this.schema}.auth_schema_version SET version = $1`, [MIGRATIONS.length]);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }
}
