import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import { ClientAssertionReplayed } from '../client-auth/errors.js';
import { REPLAY_DETECTION_MODEL } from './oidc-adapter.js';

export interface SqliteProviderRecordsOptions {
  /** Current time in ms since the epoch (injected for tests). Default Date.now. */
  now?: () => number;
  /** How long a statement waits for another connection's write lock (ms). Default 5 000. */
  busyTimeoutMs?: number;
}

/** Applied in order on open; `user_version` counts how many ran. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS oidc_models (
     model      TEXT    NOT NULL,
     id         TEXT    NOT NULL,
     payload    TEXT    NOT NULL, -- JSON
     grant_id   TEXT,
     user_code  TEXT,
     uid        TEXT,
     expires_at INTEGER,          -- ms since epoch; NULL: never
     PRIMARY KEY (model, id)
   );
   CREATE INDEX IF NOT EXISTS oidc_models_expires_at ON oidc_models (expires_at) WHERE expires_at IS NOT NULL;
   CREATE INDEX IF NOT EXISTS oidc_models_grant_id ON oidc_models (grant_id) WHERE grant_id IS NOT NULL;`,
];

/**
 * oidc-provider's storage for a single auth-server (no DATABASE_URL): a SQLite file in the
 * data directory. Its one job that matters is ReplayDetection: a private_key_jwt
 * assertion's `jti`, kept until the assertion expires, must survive what oidc-provider's
 * in-memory adapter does not: a provider rebuild (every admin change), a restart, and a
 * flood of other clients' assertions (the in-memory store is a bounded LRU). A table with a
 * primary key gives that plus an atomic insert-if-absent, which a JSON file would need a
 * lock and a rewrite for; better-sqlite3 is already what the predictor and usage ledger
 * use. A record costs one small synchronous write (WAL) per assertion.
 */
export class SqliteProviderRecords {
  readonly #now: () => number;

  private constructor(
    private readonly db: Database.Database,
    now: () => number,
  ) {
    this.#now = now;
  }

  static open(path: string, options: SqliteProviderRecordsOptions = {}): SqliteProviderRecords {
    if (path !== ':memory:' && path !== '') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const db = new Database(path, { timeout: options.busyTimeoutMs ?? 5_000 });
    try {
      db.pragma('journal_mode = WAL');
      // A commit is in the OS before run() returns: it survives a crash of the process, which is the requirement here.
      db.pragma('synchronous = NORMAL');
      db.transaction(() => {
        const version = db.pragma('user_version', { simple: true }) as number;
        if (version > MIGRATIONS.length) throw new Error(`${path} has provider records of version ${version}; this auth-server knows up to ${MIGRATIONS.length}`);
        for (const migration of MIGRATIONS.slice(version)) db.exec(migration);
        if (version < MIGRATIONS.length) db.pragma(`user_version = ${MIGRATIONS.length}`);
      }).immediate();
      return new SqliteProviderRecords(db, options.now ?? Date.now);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /** The adapter class to give oidc-provider (`configuration.adapter`); every instance shares this file. */
  adapter(): new (model: string) => Adapter {
    const { db } = this;
    const now = this.#now;
    const statements = {
      recordOnce: db.prepare<[string, string, string, number, number]>(
        `INSERT INTO oidc_models (model, id, payload, expires_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, expires_at = excluded.expires_at
         WHERE oidc_models.expires_at <= ?`,
      ),
      upsert: db.prepare<[string, string, string, string | null, string | null, string | null, number | null]>(
        `INSERT INTO oidc_models (model, id, payload, grant_id, user_code, uid, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
           user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`,
      ),
      consume: db.prepare<[number, string, string]>(`UPDATE oidc_models SET payload = json_set(payload, '$.consumed', ?) WHERE model = ? AND id = ?`),
      destroy: db.prepare<[string, string]>('DELETE FROM oidc_models WHERE model = ? AND id = ?'),
      revokeByGrantId: db.prepare<[string]>('DELETE FROM oidc_models WHERE grant_id = ?'),
      byId: db.prepare<[string, string, number], { payload: string }>('SELECT payload FROM oidc_models WHERE model = ? AND id = ? AND (expires_at IS NULL OR expires_at > ?)'),
      byUserCode: db.prepare<[string, string, number], { payload: string }>('SELECT payload FROM oidc_models WHERE model = ? AND user_code = ? AND (expires_at IS NULL OR expires_at > ?) LIMIT 1'),
      byUid: db.prepare<[string, string, number], { payload: string }>('SELECT payload FROM oidc_models WHERE model = ? AND uid = ? AND (expires_at IS NULL OR expires_at > ?) LIMIT 1'),
    };
    const parse = (row: { payload: string } | undefined) => (row ? (JSON.parse(row.payload) as AdapterPayload) : undefined);

    return class SqliteAdapter implements Adapter {
      constructor(private readonly model: string) {}

      async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
        const at = now();
        if (this.model === REPLAY_DETECTION_MODEL) {
          // Atomic check-and-record (see REPLAY_DETECTION_MODEL in oidc-adapter.ts): nothing written means a live record holds this jti.
          const { changes } = statements.recordOnce.run(this.model, id, JSON.stringify(payload), at + Math.max(expiresIn, 1) * 1000, at);
          if (changes === 0) throw new ClientAssertionReplayed();
          return;
        }
        const expiresAt = expiresIn > 0 ? at + expiresIn * 1000 : null;
        statements.upsert.run(this.model, id, JSON.stringify(payload), payload.grantId ?? null, payload.userCode ?? null, payload.uid ?? null, expiresAt);
      }

      async find(id: string): Promise<AdapterPayload | undefined> {
        return parse(statements.byId.get(this.model, id, now()));
      }

      async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
        return parse(statements.byUserCode.get(this.model, userCode, now()));
      }

      async findByUid(uid: string): Promise<AdapterPayload | undefined> {
        return parse(statements.byUid.get(this.model, uid, now()));
      }

      async consume(id: string): Promise<void> {
        statements.consume.run(Math.floor(now() / 1000), this.model, id);
      }

      async destroy(id: string): Promise<void> {
        statements.destroy.run(this.model, id);
      }

      async revokeByGrantId(grantId: string): Promise<void> {
        statements.revokeByGrantId.run(grantId);
      }
    };
  }

  /** Deletes expired records, at most `batchSize`; returns how many. Run periodically. */
  purgeExpired(batchSize = 1_000): number {
    // A purge run may still be scheduled when the shutdown has closed the file.
    if (!this.db.open) return 0;
    return this.db
      .prepare<[number, number]>('DELETE FROM oidc_models WHERE rowid IN (SELECT rowid FROM oidc_models WHERE expires_at <= ? LIMIT ?)')
      .run(this.#now(), batchSize).changes;
  }

  /** Records still stored (expired or not), per model: for tests and diagnostics. */
  count(model?: string): number {
    const row = model === undefined
      ? this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM oidc_models').get()
      : this.db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM oidc_models WHERE model = ?').get(model);
    return row?.n ?? 0;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
