import { join } from 'node:path';
import { ConfigError, createLogger, shutdownOnSignals } from '@m2m/common';
import { buildUsageAdminApp, UsageDatabaseUnreachable } from '@m2m/usage';
import { buildApp } from './app.js';
import { SqliteApiKeyStore } from './auth/api-key-store-sqlite.js';
import { createApiKeyVerifier } from './auth/api-keys.js';
import { DpopNonces } from './auth/dpop/nonces.js';
import { createDpopProofVerifier } from './auth/dpop/proof.js';
import { ROUTE_SCOPES } from './auth/scopes.js';
import { KeySet } from './auth/key-set.js';
import { createTokenVerifier } from './auth/token-verifier.js';
import { loadPredictorConfig } from './config.js';
import { createMetrics } from './http/metrics.js';
import { buildMetricsApp } from './http/metrics-app.js';
import { loadPlansFile, PlansError } from './limits/plans.js';
import { IdempotencyPurger } from './idempotency/purger.js';
import { openUsagePipeline } from './usage/open.js';
import { UsageRelayThreadFailed } from './usage/relay-thread.js';
import { loadIrisModel } from './model/index.js';
import { listen } from './server.js';
import { openStores, StoreStartupError } from './stores/open.js';

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
let stores;
let usage;
try {
  stores = await openStores(config, { logger, metrics });
  // The relay thread's module: beside this one under tsx; its own bundle beside dist/predictor.js (scripts/build-entries.mjs).
  const relayWorker = import.meta.url.endsWith('.ts') ? new URL('./usage/relay-worker.ts', import.meta.url) : new URL('./predictor-usage-relay.js', import.meta.url);
  usage = await openUsagePipeline(config, stores.idempotencyStore, { logger, metrics, relayWorker });
} catch (error) {
  if (error instanceof StoreStartupError || error instanceof UsageDatabaseUnreachable || error instanceof UsageRelayThreadFailed) {
    process.stderr.write(`predictor: ${error.message}\n`);
    process.exit(1);
  }
  throw error;
}
const { limiter, idempotencyStore, proofReplayCache } = stores;
const apiKeyStore = config.apiKeys ? SqliteApiKeyStore.open(join(config.dataDir, 'api-keys.db')) : undefined;

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
  dpop: {
    verifyProof: createDpopProofVerifier({
      algorithms: config.dpopAlgorithms,
      publicUrl: config.publicUrl,
      maxAgeSeconds: config.dpopProofMaxAgeSeconds,
      clockToleranceSeconds: config.clockToleranceSeconds,
      replayCache: proofReplayCache,
      nonces: config.dpopNonceSecret === undefined ? undefined : new DpopNonces({ secret: config.dpopNonceSecret }),
    }),
    algorithms: config.dpopAlgorithms,
  },
  protectedResource: {
    resource: config.audience,
    publicUrl: config.publicUrl,
    authorizationServers: [config.issuer],
    scopes: Object.values(ROUTE_SCOPES),
    documentationUrl: config.resourceDocumentationUrl,
  },
  apiDocs: { issuer: config.issuer },
  readiness: async () => {
    const [{ stores: storeStates, unavailable, degraded }, usageStatus] = await Promise.all([stores.status(), usage.relay.status()]);
    return { notReadyReason: keys.ready ? unavailable : 'signing keys not loaded', stores: storeStates, degraded, usage: usageStatus };
  },
  plans,
  limiter,
  idempotencyStore,
  requireIdempotencyKey: config.requireIdempotencyKey,
  logger,
  metrics,
  bodyLimitBytes: config.bodyLimitBytes,
  simulatedInferenceMs: config.simulatedInferenceMs,
});

const shutdown = new AbortController();
const { server, port } = await listenOrExit('PREDICTOR_PORT', app, config.port, config.host);
// Prometheus scrapes this listener, not the API port (loopback unless METRICS_HOST says otherwise).
const metricsListener = await listenOrExit('METRICS_PORT', buildMetricsApp({ metrics, logger }), config.metricsPort, config.metricsHost);
// The usage report, when the ledger is in this process and an ADMIN_TOKEN is set (loopback by default).
const usageAdmin =
  usage.ledger && config.adminToken
    ? await listenOrExit('USAGE_ADMIN_PORT', buildUsageAdminApp({ ledger: usage.ledger, adminToken: config.adminToken, logger }), config.usageAdminPort, config.usageAdminHost)
    : undefined;
keys.load(shutdown.signal).catch(() => {});

const purger = new IdempotencyPurger({ store: idempotencyStore, logger, metrics, intervalMs: config.idempotencyPurgeIntervalMs });
purger.start();
usage.relay.start();

// SIGTERM/SIGINT: requests in flight get SHUTDOWN_GRACE_MS, the stores a bounded close; exit 0, or 1 if forced.
shutdownOnSignals({
  listeners: { http: server, metrics: metricsListener.server, ...(usageAdmin && { 'usage-admin': usageAdmin.server }) },
  onStart: () => {
    shutdown.abort();
    void purger.stop();
  },
  // A purge run under way ends (after its current batch) before the stores close under it.
  closeSteps: {
    stores: async () => {
      await purger.stop();
      await usage.close();
      await stores.close();
    },
    ...(apiKeyStore && { 'api-keys': () => apiKeyStore.close() }),
  },
  logger,
  graceMs: config.shutdownGraceMs,
});
// Announced last: whoever waits for this line (a supervisor, a test) may signal at once.
logger.info({ port, issuer: config.issuer, audience: config.audience, publicUrl: config.publicUrl, dpopNonces: config.dpopNonceSecret !== undefined, idempotencyStore: config.idempotencyStore, rateLimitStore: config.rateLimitStore, plans: [...plans.plans.keys()], usage: usage.relay.sink, usageAdminPort: usageAdmin?.port, metricsPort: metricsListener.port }, 'listening');

/** A port that cannot be bound (taken, not allowed) is a one-line error naming its variable, exit 1: not a stack trace. */
async function listenOrExit(variable: string, ...args: Parameters<typeof listen>): ReturnType<typeof listen> {
  try {
    return await listen(...args);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EADDRINUSE' && code !== 'EACCES' && code !== 'EADDRNOTAVAIL') throw error;
    process.stderr.write(`predictor: ${variable}: cannot listen on ${args[2] ?? '0.0.0.0'}:${args[1]} (${code})\n`);
    process.exit(1);
  }
}
