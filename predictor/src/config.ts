import { ConfigError, DEFAULT_SHUTDOWN_GRACE_MS, EnvReader, LOG_LEVELS, SHUTDOWN_GRACE_RANGE, type Env, type LogLevel } from '@m2m/common';
import { DEFAULT_PLANS_PATH } from './limits/plans.js';
import type { FailurePolicy } from './stores/failure-policy.js';

const FAILURE_POLICIES = ['fail-closed', 'degrade'] as const;

export interface PredictorConfig {
  /** Listening port; 0 picks a free one. */
  port: number;
  host: string | undefined;
  issuer: string;
  audience: string;
  /**
   * The URL clients reach the predictor at (behind a proxy: the proxy's): DPoP proofs' `htu`
   * is checked against it, and the protected-resource metadata URL is built from it. Default: the audience.
   */
  publicUrl: string;
  /** Asymmetric `alg`s a DPoP proof may be signed with. */
  dpopAlgorithms: string[];
  /** How old (seconds) a DPoP proof's `iat` may be; its `jti` is remembered that long. */
  dpopProofMaxAgeSeconds: number;
  /** Set: DPoP proofs must carry a nonce this predictor (or a replica with the same secret) handed out. */
  dpopNonceSecret: string | undefined;
  /** What a request with a DPoP proof meets when Redis (the replay cache) fails. */
  dpopReplayOnStoreFailure: FailurePolicy;
  /** RFC 9728 `resource_documentation`; undefined: not advertised. */
  resourceDocumentationUrl: string | undefined;
  /** Overrides discovery of the issuer's `jwks_uri`. */
  jwksUri: string | undefined;
  algorithms: string[];
  clockToleranceSeconds: number;
  /** Minimum time between JWKS refetches caused by an unknown `kid` (ms). */
  jwksCooldownMs: number;
  /** Age after which cached keys are refreshed in the background (ms). */
  jwksMaxAgeMs: number;
  /** How long past that age the last known keys keep verifying while refreshes fail (ms). */
  jwksStaleIfErrorMs: number;
  bodyLimitBytes: number;
  /** The plans file (limits per plan): the single source of truth. */
  plansFile: string;
  /** Where the durable stores live (idempotency records, API keys). */
  dataDir: string;
  /**
   * `postgres` (shared by replicas; the default when DATABASE_URL is set), `sqlite` (durable,
   * one host; the default otherwise) or `memory` (lost on restart; tests and the bench).
   */
  idempotencyStore: 'postgres' | 'sqlite' | 'memory';
  /** `redis` (shared by replicas; the default when REDIS_URL is set) or `memory`. */
  rateLimitStore: 'redis' | 'memory';
  redisUrl: string | undefined;
  /** Prefix of the limiter's Redis keys (deployments sharing one Redis keep apart). */
  redisKeyPrefix: string;
  databaseUrl: string | undefined;
  databaseSchema: string;
  /** What a request meets when Redis fails: 503 (fail-closed) or this replica's memory (degrade). */
  rateLimitOnStoreFailure: FailurePolicy;
  /** What a request meets when PostgreSQL fails. */
  idempotencyOnStoreFailure: FailurePolicy;
  /** Share of each plan one replica grants on its own while the shared limiter is down (degrade). */
  degradedLimitFraction: number;
  /** Extra time per model execution (ms): rehearsals of a crash mid-request. 0 normally. */
  simulatedInferenceMs: number;
  idempotencyRetentionMs: number;
  /** The admin token of the usage endpoint (GET /v1/usage) when the ledger is in this process; undefined: off. */
  adminToken: string | undefined;
  /** Where that endpoint listens: loopback by default. */
  usageAdminPort: number;
  usageAdminHost: string;
  /** Where `GET /metrics` listens, apart from the API: loopback by default (0 picks a free port). */
  metricsPort: number;
  metricsHost: string;
  /** NATS with JetStream for usage events; without it they go to the ledger in this process. */
  natsUrl: string | undefined;
  /** JetStream stream and subject prefix of usage events (deployments sharing a broker keep apart). */
  usageStream: string;
  usageSubjectPrefix: string;
  /** Rehearsals only: the relay waits this long after JetStream acknowledged a round and before marking it sent (a crash there re-publishes). 0 normally. */
  usageRelayPauseAfterPublishMs: number;
  /** How long a sent usage event stays in the outbox (ms). */
  usageOutboxRetentionMs: number;
  /** How often expired idempotency records are purged (each run deletes all of them, in batches). */
  idempotencyPurgeIntervalMs: number;
  /** A claim's lease: renewed every third of it while the model runs; a crashed holder's key is free after it. */
  idempotencyLeaseMs: number;
  requireIdempotencyKey: boolean;
  /** Accept X-API-Key (keys made with `npm run apikey`). */
  apiKeys: boolean;
  /** How long requests in flight may finish after SIGTERM before their connections are closed (ms). */
  shutdownGraceMs: number;
  logLevel: LogLevel;
}

/** Asymmetric JWS algorithms only: RFC 9068 section 4 forbids `none`, and HS* would need a shared secret. */
const ASYMMETRIC_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512'];

/** The DPoP proof `alg`s accepted by default: the auth-server's (its DPOP_SIGNING_ALGS). */
const DEFAULT_DPOP_ALGORITHMS = 'ES256,EdDSA,Ed25519,PS256';

function asymmetricAlgorithms(read: EnvReader, name: string, fallback: string): string[] {
  const algorithms = read.string(name, fallback).split(',').map((alg) => alg.trim());
  const refused = algorithms.find((alg) => !ASYMMETRIC_ALGORITHMS.includes(alg));
  if (refused !== undefined) {
    throw new ConfigError(`${name} may list only asymmetric algorithms (${ASYMMETRIC_ALGORITHMS.join(', ')}), got "${refused}"`);
  }
  return algorithms;
}

export function loadPredictorConfig(env: Env): PredictorConfig {
  const read = new EnvReader(env);
  const algorithms = asymmetricAlgorithms(read, 'ACCEPTED_ALGORITHMS', 'ES256,EdDSA');
  const audience = read.url('PREDICTOR_AUDIENCE', 'http://localhost:8080');
  const dpopNonceSecret = read.string('DPOP_NONCE_SECRET');
  if (dpopNonceSecret !== undefined && dpopNonceSecret.length < 32) throw new ConfigError('DPOP_NONCE_SECRET must be at least 32 characters (the same on every replica)');
  const resourceDocumentation = read.string('RESOURCE_DOCUMENTATION_URL');
  const jwksUri = read.string('JWKS_URI');
  const redisUrl = read.serviceUrl('REDIS_URL', ['redis:', 'rediss:']);
  const databaseUrl = read.serviceUrl('DATABASE_URL', ['postgres:', 'postgresql:']);
  const idempotencyStore = read.oneOf('IDEMPOTENCY_STORE', databaseUrl ? 'postgres' : 'sqlite', ['postgres', 'sqlite', 'memory']);
  const rateLimitStore = read.oneOf('RATE_LIMIT_STORE', redisUrl ? 'redis' : 'memory', ['redis', 'memory']);
  if (idempotencyStore === 'postgres' && !databaseUrl) throw new ConfigError('IDEMPOTENCY_STORE=postgres needs DATABASE_URL');
  if (rateLimitStore === 'redis' && !redisUrl) throw new ConfigError('RATE_LIMIT_STORE=redis needs REDIS_URL');
  // A lease that is renewed replaced a fixed lock; a setting that no longer does anything must not pass silently.
  if (env['IDEMPOTENCY_LOCK_TIMEOUT_MS'] !== undefined) throw new ConfigError('IDEMPOTENCY_LOCK_TIMEOUT_MS was replaced by IDEMPOTENCY_LEASE_MS (default 5000): a renewed lease instead of a fixed lock');
  return {
    port: read.port('PREDICTOR_PORT', 8080),
    host: read.string('PREDICTOR_HOST'),
    issuer: read.url('ISSUER', 'http://localhost:9000'),
    audience,
    publicUrl: read.url('PREDICTOR_PUBLIC_URL', audience),
    dpopAlgorithms: asymmetricAlgorithms(read, 'DPOP_ALGORITHMS', DEFAULT_DPOP_ALGORITHMS),
    dpopProofMaxAgeSeconds: read.integer('DPOP_PROOF_MAX_AGE', 60, { min: 1, max: 600 }),
    dpopNonceSecret,
    dpopReplayOnStoreFailure: read.oneOf('DPOP_REPLAY_ON_STORE_FAILURE', 'fail-closed', FAILURE_POLICIES),
    resourceDocumentationUrl: resourceDocumentation === undefined ? undefined : read.url('RESOURCE_DOCUMENTATION_URL', resourceDocumentation),
    jwksUri: jwksUri === undefined ? undefined : read.url('JWKS_URI', jwksUri),
    algorithms,
    clockToleranceSeconds: read.integer('CLOCK_TOLERANCE', 5, { min: 0, max: 300 }),
    jwksCooldownMs: read.integer('JWKS_COOLDOWN_MS', 30_000, { min: 0, max: 3_600_000 }),
    jwksMaxAgeMs: read.integer('JWKS_MAX_AGE_MS', 600_000, { min: 1_000, max: 86_400_000 }),
    jwksStaleIfErrorMs: read.integer('JWKS_STALE_IF_ERROR_MS', 3_600_000, { min: 0, max: 86_400_000 }),
    bodyLimitBytes: read.integer('BODY_LIMIT_BYTES', 65_536, { min: 1_024, max: 16_777_216 }),
    plansFile: read.string('PLANS_FILE', DEFAULT_PLANS_PATH),
    dataDir: read.string('PREDICTOR_DATA_DIR', '.data/predictor'),
    idempotencyStore,
    rateLimitStore,
    redisUrl,
    redisKeyPrefix: read.string('REDIS_KEY_PREFIX', 'm2m:rl:'),
    databaseUrl,
    databaseSchema: read.identifier('DATABASE_SCHEMA', 'public'),
    rateLimitOnStoreFailure: read.oneOf('RATE_LIMIT_ON_STORE_FAILURE', 'fail-closed', FAILURE_POLICIES),
    idempotencyOnStoreFailure: read.oneOf('IDEMPOTENCY_ON_STORE_FAILURE', 'fail-closed', FAILURE_POLICIES),
    degradedLimitFraction: read.integer('DEGRADED_LIMIT_PERCENT', 50, { min: 1, max: 100 }) / 100,
    simulatedInferenceMs: read.integer('SIMULATED_INFERENCE_MS', 0, { min: 0, max: 600_000 }),
    idempotencyRetentionMs: read.integer('IDEMPOTENCY_RETENTION_SECONDS', 86_400, { min: 60, max: 30 * 86_400 }) * 1000,
    adminToken: read.adminToken(),
    usageAdminPort: read.port('USAGE_ADMIN_PORT', 9002),
    usageAdminHost: read.string('USAGE_ADMIN_HOST', '127.0.0.1'),
    // 9464: the port Prometheus exporters conventionally use (OpenTelemetry's among them).
    metricsPort: read.port('METRICS_PORT', 9464),
    metricsHost: read.string('METRICS_HOST', '127.0.0.1'),
    natsUrl: read.serviceUrl('NATS_URL', ['nats:', 'tls:']),
    usageStream: read.string('USAGE_STREAM', 'USAGE'),
    usageSubjectPrefix: read.string('USAGE_SUBJECT_PREFIX', 'usage.predictions'),
    usageRelayPauseAfterPublishMs: read.integer('USAGE_RELAY_PAUSE_AFTER_PUBLISH_MS', 0, { min: 0, max: 600_000 }),
    usageOutboxRetentionMs: read.integer('USAGE_OUTBOX_RETENTION_SECONDS', 3_600, { min: 60, max: 30 * 86_400 }) * 1000,
    idempotencyPurgeIntervalMs: read.integer('IDEMPOTENCY_PURGE_INTERVAL_MS', 10_000, { min: 100, max: 3_600_000 }),
    idempotencyLeaseMs: read.integer('IDEMPOTENCY_LEASE_MS', 5_000, { min: 1_000, max: 600_000 }),
    requireIdempotencyKey: read.oneOf('IDEMPOTENCY_KEY_REQUIRED', 'false', ['true', 'false']) === 'true',
    apiKeys: read.oneOf('API_KEYS', 'true', ['true', 'false']) === 'true',
    shutdownGraceMs: read.integer('SHUTDOWN_GRACE_MS', DEFAULT_SHUTDOWN_GRACE_MS, SHUTDOWN_GRACE_RANGE),
    logLevel: read.oneOf('LOG_LEVEL', 'info', LOG_LEVELS),
  };
}
