import { join } from 'node:path';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '@m2m/common';
import { Redis, type RedisOptions } from 'ioredis';
import type { PredictorConfig } from '../config.js';
import type { Metrics } from '../http/metrics.js';
import { MemoryIdempotencyStore } from '../idempotency/memory.js';
import { PostgresIdempotencyStore } from '../idempotency/postgres.js';
import { SqliteIdempotencyStore } from '../idempotency/sqlite.js';
import type { IdempotencyStore, IdempotencyStoreOptions } from '../idempotency/store.js';
import { MemoryRateLimiter } from '../limits/memory.js';
import type { RateLimiter } from '../limits/rate-limiter.js';
import { RedisRateLimiter } from '../limits/redis.js';
import { MemoryProofReplayCache, type ProofReplayCache } from '../auth/dpop/replay-cache.js';
import { RedisProofReplayCache } from '../auth/dpop/replay-cache-redis.js';
import { GuardedIdempotencyStore, GuardedProofReplayCache, GuardedRateLimiter, StoreGuard, type StoreName } from './failure-policy.js';
import { isPostgresOutage, isRedisOutage } from './outage.js';

export interface PredictorStores {
  limiter: RateLimiter;
  idempotencyStore: IdempotencyStore;
  /** The `jti`s of accepted DPoP proofs: Redis (shared by replicas) when REDIS_URL is set, else memory. */
  proofReplayCache: ProofReplayCache;
  /** Each store's engine and state, for /readyz; `degraded` when a fallback serves. */
  status(): Promise<{ stores: Record<string, string>; unavailable: string | undefined; degraded: boolean }>;
  close(): Promise<void>;
}

/** The shared engine could not be prepared at start (unreachable, or a schema it cannot use). */
export class StoreStartupError extends Error {
  override name = 'StoreStartupError';
}

/** How long start-up waits for Redis before serving under the failure policy. */
const REDIS_STARTUP_WAIT_MS = 3_000;

/** The options of the rate limiter's Redis client; the fault tests build theirs with these too. */
export function redisClientOptions(): RedisOptions {
  return {
    // Fail a command at once while disconnected instead of queueing it: the failure policy answers.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 500,
    // A connection that stops answering is dropped and reopened. Without this, commands lost on
    // it (a black hole, a half-open socket) stay queued, every later reply is matched to one of
    // them, and every new command times out for good, even once the network is back.
    socketTimeout: 1_000,
    connectTimeout: 2_000,
    // Reconnect forever, at most every 2 s, so the limiter recovers by itself.
    retryStrategy: (attempt) => Math.min(attempt * 100, 2_000),
  };
}

/**
 * The stores the configuration selects: embedded (memory, SQLite) by default; Redis and
 * PostgreSQL, shared by replicas, when REDIS_URL / DATABASE_URL are set, each behind its
 * failure policy.
 */
export async function openStores(config: PredictorConfig, deps: { logger: Logger; metrics: Metrics }): Promise<PredictorStores> {
  const storeOptions: IdempotencyStoreOptions = { retentionMs: config.idempotencyRetentionMs, outboxRetentionMs: config.usageOutboxRetentionMs, leaseMs: config.idempotencyLeaseMs };
  const guards: StoreGuard[] = [];
  const guard = (store: StoreName, engine: 'redis' | 'postgres', policy: PredictorConfig['rateLimitOnStoreFailure']) => {
    const isOutage = engine === 'redis' ? isRedisOutage : isPostgresOutage;
    const created = new StoreGuard({ store, engine, policy, isOutage, logger: deps.logger, metrics: deps.metrics });
    guards.push(created);
    return created;
  };

  let idempotencyStore: IdempotencyStore;
  if (config.idempotencyStore === 'postgres') {
    let shared: PostgresIdempotencyStore;
    try {
      shared = await PostgresIdempotencyStore.open({ ...storeOptions, connectionString: config.databaseUrl!, schema: config.databaseSchema, clock: 'database' });
    } catch (error) {
      throw new StoreStartupError(`DATABASE_URL: cannot prepare the idempotency store: ${(error as Error).message}`);
    }
    idempotencyStore = new GuardedIdempotencyStore(shared, guard('idempotency', 'postgres', config.idempotencyOnStoreFailure), storeOptions);
  } else if (config.idempotencyStore === 'sqlite') {
    idempotencyStore = SqliteIdempotencyStore.open(join(config.dataDir, 'idempotency.db'), storeOptions);
  } else {
    idempotencyStore = new MemoryIdempotencyStore(storeOptions);
  }

  let limiter: RateLimiter;
  let redis: Redis | undefined;
  // The rate limiter (unless RATE_LIMIT_STORE=memory) and the DPoP replay cache share one connection.
  if (config.redisUrl !== undefined) {
    redis = new Redis(config.redisUrl, redisClientOptions());
    redis.on('error', (error: Error) => deps.logger.debug({ event: 'redis.error', reason: error.message }, 'redis connection error'));
    // `once` rejects on the first 'error' (Redis down): that is not a reason to stop, only to wait no longer.
    await Promise.race([once(redis, 'ready').catch(() => {}), sleep(REDIS_STARTUP_WAIT_MS)]);
    if (redis.status !== 'ready') deps.logger.warn({ event: 'redis.not_ready', status: redis.status }, 'Redis is not reachable yet; serving under the failure policy until it is');
  }
  if (config.rateLimitStore === 'redis') {
    limiter = new GuardedRateLimiter(new RedisRateLimiter({ redis: redis!, keyPrefix: config.redisKeyPrefix }), guard('rate_limiter', 'redis', config.rateLimitOnStoreFailure), config.degradedLimitFraction);
  } else {
    limiter = new MemoryRateLimiter();
  }
  // A proof accepted by one replica must be refused by every other: with replicas, Redis.
  const proofReplayCache: ProofReplayCache = redis
    ? new GuardedProofReplayCache(new RedisProofReplayCache({ redis, keyPrefix: `${config.redisKeyPrefix}dpop-jti:` }), guard('dpop_replay', 'redis', config.dpopReplayOnStoreFailure))
    : new MemoryProofReplayCache();

  return {
    limiter,
    idempotencyStore,
    proofReplayCache,
    async status() {
      const stores: Record<string, string> = {
        rate_limiter: config.rateLimitStore,
        idempotency: config.idempotencyStore,
        dpop_replay: redis ? 'redis' : 'memory',
      };
      let unavailable: string | undefined;
      let degraded = false;
      if (limiter instanceof GuardedRateLimiter) await limiter.healthy();
      if (proofReplayCache instanceof GuardedProofReplayCache) await proofReplayCache.healthy();
      const idempotencyHealthy = await idempotencyStore.healthy();
      if (!(idempotencyStore instanceof GuardedIdempotencyStore) && !idempotencyHealthy) unavailable = 'idempotency store unavailable';
      for (const g of guards) {
        if (g.status === 'up') continue;
        stores[g.store] = `${g.engine}: down (${g.policy === 'degrade' ? 'fallback: this replica\'s memory' : 'refusing with 503'})`;
        if (g.policy === 'degrade') degraded = true;
        else unavailable ??= `${g.store} store (${g.engine}) unavailable`;
      }
      return { stores, unavailable, degraded };
    },
    async close() {
      await Promise.all([idempotencyStore.close(), limiter.close?.()]);
      redis?.disconnect();
    },
  };
}
