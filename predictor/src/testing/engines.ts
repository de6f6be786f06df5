import { redactUrl } from '@m2m/common';
import { Redis } from 'ioredis';
import { after, before } from 'node:test';
import pg from 'pg';
import { enginesRequired, missingEngines, TEST_DATABASE_URL, TEST_REDIS_URL } from '../../../common/src/testing/engines.js';

/**
 * The real engines the scale-out tests use. Each test asks for its engine first; when the
 * engine cannot be reached the test fails at once with what is missing and how to start it,
 * instead of hanging on a connection that never comes. Where the engines are missing on a
 * developer's machine the test files skip these suites instead (`skipUnlessEngines`), except
 * under CI=true; the scenarios and the bench, run by hand, still fail here.
 */
export { TEST_DATABASE_URL, TEST_REDIS_URL };

const CONNECT_TIMEOUT_MS = 2_000;

export class EngineUnavailable extends Error {
  override name = 'EngineUnavailable';
}

/** Resolves when Redis answers PING; otherwise rejects with EngineUnavailable naming the fix. */
export async function requireRedis(url = TEST_REDIS_URL): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, connectTimeout: CONNECT_TIMEOUT_MS, maxRetriesPerRequest: 0, retryStrategy: () => null });
  let cause: Error | undefined;
  redis.on('error', (error: Error) => (cause ??= error));
  try {
    await redis.connect();
    await redis.ping();
  } catch (error) {
    throw new EngineUnavailable(
      `Redis is not reachable at ${redactUrl(url)} (${(cause ?? (error as Error)).message}); these tests need a real Redis: ` +
        'start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no` (.ci/run does), or set TEST_REDIS_URL',
    );
  } finally {
    redis.disconnect();
  }
}

/** Resolves when PostgreSQL answers a query; otherwise rejects with EngineUnavailable naming the fix. */
export async function requirePostgres(url = TEST_DATABASE_URL): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (error) {
    throw new EngineUnavailable(
      `PostgreSQL is not reachable at ${redactUrl(url)} (${(error as Error).message}); these tests need a real PostgreSQL: ` +
        'start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (.ci/run does), or set TEST_DATABASE_URL',
    );
  } finally {
    await client.end().catch(() => {});
  }
}

/** A schema name no other test uses, so tests running at once never see each other's tables. */
export function uniqueSchemaName(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * For a `describe` on PostgreSQL: requires the engine before its tests, opens a connection of
 * the test's own (to look at and tamper with what the stores wrote), and drops every schema
 * named by `schema()` after them. Where PostgreSQL is missing (and the suites are skipped) it
 * does nothing (a file that calls it at top level passes `{ skip: skipUnlessEngines(['postgres']) }` to its suites).
 */
export function withTestDatabase(): { admin: () => pg.Client; schema: (prefix: string) => string } {
  let client: pg.Client | undefined;
  const schemas: string[] = [];
  before(async () => {
    if (!enginesRequired() && (await missingEngines(['postgres'])).length > 0) return; // its suites are skipped
    await requirePostgres();
    client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
  });
  after(async () => {
    if (!client) return;
    for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.end();
  });
  return {
    admin: () => client!,
    schema: (prefix) => {
      const name = uniqueSchemaName(prefix);
      schemas.push(name);
      return name;
    },
  };
}
