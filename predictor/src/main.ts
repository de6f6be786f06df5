import { join } from 'node:path';
import { ConfigError, createLogger } from '@m2m/common';
import { buildApp } from './app.js';
import { SqliteApiKeyStore } from './auth/api-key-store-sqlite.js';
import { createApiKeyVerifier } from './auth/api-keys.js';
import { KeySet } from './auth/key-set.js';
import { createTokenVerifier } from './auth/token-verifier.js';
import { loadPredictorConfig } from './config.js';
import { createMetrics } from './http/metrics.js';
import { MemoryIdempotencyStore } from './idempotency/memory.js';
import { SqliteIdempotencyStore } from './idempotency/sqlite.js';
import type { IdempotencyStore } from './idempotency/store.js';
import { MemoryRateLimiter } from './limits/memory.js';
import { loadPlansFile, PlansError } from './limits/plans.js';
import { loadIrisModel } from './model/index.js';
import { close, listen } from './server.js';

let config;
let plans;
try {
  config = loadPredictorConfig(process.env);
  plans = await loadPlansFile(config.plansFile);
} catch (error) {
  if (error instanceof ConfigError || error instanceof PlansError) {
    process.stderr.write(`predictor: ${error instanceof PlansError ? 'PLANS_FILE: ' : ''}${error.message}\n`);
    process.exit(2);
  }
  throw error;
}

const logger = createLogger('predictor', config.logLevel);
const metrics = createMetrics();
const keys = new KeySet({
  issuer: config.issuer,
  jwksUri: config.jwksUri,
  cooldownMs: config.jwksCooldownMs,
  maxAgeMs: config.jwksMaxAgeMs,
  staleIfErrorMs: config.jwksStaleIfErrorMs,
  logger,
  onFetch: (outcome) => metrics.jwksFetches.inc({ outcome }),
});
const storeOptions = { retentionMs: config.idempotencyRetentionMs, lockTimeoutMs: config.idempotencyLockTimeoutMs };
const idempotencyStore: IdempotencyStore =
  config.idempotencyStore === 'sqlite' ? SqliteIdempotencyStore.open(join(config.dataDir, 'idempotency.db'), storeOptions) : new MemoryIdempotencyStore(storeOptions);
const apiKeyStore = config.apiKeys ? SqliteApiKeyStore.open(join(config.dataDir, 'api-keys.db')) : undefined;
const limiter = new MemoryRateLimiter();

const app = buildApp({
  model: loadIrisModel(),
  verifyToken: createTokenVerifier({
    issuer: config.issuer,
    audience: config.audience,
    algorithms: config.algorithms,
    clockToleranceSeconds: config.clockToleranceSeconds,
    getKey: keys.getKey,
    isKeyPublished: (kid) => keys.has(kid),
  }),
  verifyApiKey: apiKeyStore && createApiKeyVerifier(apiKeyStore),
  notReadyReason: async () => {
    if (!keys.ready) return 'signing keys not loaded';
    if (!(await idempotencyStore.healthy())) return 'idempotency store unavailable';
    return undefined;
  },
  plans,
  limiter,
  idempotencyStore,
  requireIdempotencyKey: config.requireIdempotencyKey,
  logger,
  metrics,
  bodyLimitBytes: config.bodyLimitBytes,
});

const shutdown = new AbortController();
const { server, port } = await listen(app, config.port, config.host);
logger.info({ port, issuer: config.issuer, audience: config.audience, idempotencyStore: config.idempotencyStore, plans: [...plans.plans.keys()] }, 'listening');
keys.load(shutdown.signal).catch(() => {});

const purge = setInterval(() => {
  idempotencyStore.purgeExpired().then(
    (purged) => purged > 0 && logger.info({ event: 'idempotency.purged', purged }, 'expired idempotency records purged'),
    (error: unknown) => logger.warn({ event: 'idempotency.purge_failed', reason: (error as Error).message }, 'purge failed'),
  );
}, 60_000);
purge.unref();

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, async () => {
    logger.info({ signal }, 'shutting down: finishing in-flight requests');
    shutdown.abort();
    clearInterval(purge);
    try {
      await close(server);
      await Promise.all([idempotencyStore.close(), apiKeyStore?.close(), limiter.close()]);
      logger.info('stopped');
      process.exit(0);
    } catch (error) {
      logger.error({ err: error }, 'shutdown failed');
      process.exit(1);
    }
  });
}
