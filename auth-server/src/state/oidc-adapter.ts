import type pg from 'pg';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import { ClientAssertionReplayed } from '../client-auth/errors.js';

/**
 * oidc-provider's `ReplayDetection.unique(iss, jti, exp)` is `find(id)`, then, if nothing
 * was found, `upsert(id, …, exp - now)`: two requests carrying the same assertion can both
 * find nothing (two replicas, or two requests in one process awaiting the database) and
 * both be accepted. Its answer cannot be made atomic from outside, but the upsert can: for
 * this model an adapter inserts only when no live record exists (an expired one, not yet
 * purged, is replaced) and the insert that loses throws ClientAssertionReplayed, an
 * `invalid_client` that oidc-provider renders like its own "used once" refusal. The unique
 * key of the table (or PostgreSQL's, across replicas) decides: exactly one wins.
 * Overriding `unique` itself would mean patching the library's model classes.
 */
export const REPLAY_DETECTION_MODEL = 'ReplayDetection';

/**
 * oidc-provider's storage on the PostgreSQL the replicas share. With client credentials
 * and JWT access tokens the provider stores little, but what it stores must be seen by
 * every replica: the ReplayDetection records that stop a private_key_jwt assertion from
 * being accepted once per replica, inserted atomically (REPLAY_DETECTION_MODEL above).
 */
export function postgresAdapter(pool: pg.Pool, schema: string): new (model: string) => Adapter {
  const table = `${schema}.oidc_models`;
  const live = 'AND (expires_at IS NULL OR expires_at > now())';

  return class PostgresAdapter implements Adapter {
    constructor(private readonly model: string) {}

    async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
      if (this.model === REPLAY_DETECTION_MODEL) {
        // Atomic check-and-record (see REPLAY_DETECTION_MODEL): no row back means a live record holds this jti.
        const { rowCount } = await pool.query(
          `INSERT INTO ${table} AS existing (model, id, payload, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => greatest($4::int, 1)))
           ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, expires_at = excluded.expires_at
           WHERE existing.expires_at <= now()`,
          [this.model, id, JSON.stringify(payload), Math.ceil(expiresIn)],
        );
        if (rowCount === 0) throw new ClientAssertionReplayed();
        return;
      }
      await pool.query(
        `INSERT INTO ${table} (model, id, payload, grant_id, user_code, uid, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7::int > 0 THEN now() + make_interval(secs => $7::int) END)
         ON CONFLICT (model, id) DO UPDATE
         SET payload = excluded.payload, grant_id = excluded.grant_id, user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`,
        [this.model, id, JSON.stringify(payload), payload.grantId ?? null, payload.userCode ?? null, payload.uid ?? null, expiresIn || 0],
      );
    }

    find(id: string): Promise<AdapterPayload | undefined> {
      return this.#findBy('id', id);
    }

    findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      return this.#findBy('user_code', userCode);
    }

    findByUid(uid: string): Promise<AdapterPayload | undefined> {
      return this.#findBy('uid', uid);
    }

    async consume(id: string): Promise<void> {
      await pool.query(`UPDATE ${table} SET payload = payload || jsonb_build_object('consumed', extract(epoch FROM now())::bigint) WHERE model = $1 AND id = $2`, [this.model, id]);
    }

    async destroy(id: string): Promise<void> {
      await pool.query(`DELETE FROM ${table} WHERE model = $1 AND id = $2`, [this.model, id]);
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      await pool.query(`DELETE FROM ${table} WHERE grant_id = $1`, [grantId]);
    }

    async #findBy(column: 'id' | 'user_code' | 'uid', value: string): Promise<AdapterPayload | undefined> {
      const { rows } = await pool.query<{ payload: AdapterPayload }>(`SELECT payload FROM ${table} WHERE model = $1 AND ${column} = $2 ${live} LIMIT 1`, [this.model, value]);
      return rows[0]?.payload;
    }
  };
}

/** Deletes expired provider records, at most `batchSize`; run periodically by one or all replicas. */
export async function purgeExpiredModels(pool: pg.Pool, schema: string, batchSize = 1_000): Promise<number> {
  const { rowCount } = await pool.query(
    `DELETE FROM ${schema}.oidc_models WHERE ctid IN (SELECT ctid FROM ${schema}.oidc_models WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)`,
    [batchSize],
  );
  return rowCount ?? 0;
}
