import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { ApiKeyRecord, ApiKeyStore } from './api-keys.js';

interface Row {
  id: string;
  client_id: string;
  secret_sha256: Buffer;
  scopes: string;
  plan: string;
  created_at: string;
  revoked_at: string | null;
}

const toRecord = (row: Row): ApiKeyRecord => ({
  id: row.id,
  clientId: row.client_id,
  secretSha256: row.secret_sha256,
  scopes: row.scopes.split(' ').filter(Boolean),
  plan: row.plan,
  createdAt: row.created_at,
  revokedAt: row.revoked_at ?? undefined,
});

/** API keys in an SQLite file shared by the predictor and the `apikey` command (WAL: readers never block). */
export class SqliteApiKeyStore implements ApiKeyStore {
  readonly #db: Database.Database;
  readonly #find: Database.Statement<[string], Row>;

  private constructor(db: Database.Database) {
    this.#db = db;
    this.#find = db.prepare('SELECT * FROM api_keys WHERE id = ?');
  }

  static open(path: string): SqliteApiKeyStore {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('busy_timeout = 5000');
    db.exec(`CREATE TABLE IF NOT EXISTS api_keys (
      id TEXT PRIMARY KEY,
      client_id TEXT NOT NULL,
      secret_sha256 BLOB NOT NULL,
      scopes TEXT NOT NULL,
      plan TEXT NOT NULL,
      created_at TEXT NOT NULL,
      revoked_at TEXT
    )`);
    return new SqliteApiKeyStore(db);
  }

  async find(id: string): Promise<ApiKeyRecord | undefined> {
    const row = this.#find.get(id);
    return row && toRecord(row);
  }

  async insert(record: ApiKeyRecord): Promise<void> {
    this.#db
      .prepare('INSERT INTO api_keys (id, client_id, secret_sha256, scopes, plan, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(record.id, record.clientId, record.secretSha256, record.scopes.join(' '), record.plan, record.createdAt);
  }

  async revoke(id: string, at: string): Promise<boolean> {
    return this.#db.prepare('UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?').run(at, id).changes === 1;
  }

  async list(): Promise<ApiKeyRecord[]> {
    return (this.#db.prepare('SELECT * FROM api_keys ORDER BY created_at').all() as Row[]).map(toRecord);
  }

  async close(): Promise<void> {
    this.#db.close();
  }
}

/** In-memory API keys, for tests and the bench. */
export class MemoryApiKeyStore implements ApiKeyStore {
  readonly #records = new Map<string, ApiKeyRecord>();

  async find(id: string) {
    return this.#records.get(id);
  }

  async insert(record: ApiKeyRecord) {
    this.#records.set(record.id, record);
  }

  async revoke(id: string, at: string) {
    const record = this.#records.get(id);
    if (!record) return false;
    record.revokedAt ??= at;
    return true;
  }

  async list() {
    return [...this.#records.values()];
  }

  async close() {}
}
