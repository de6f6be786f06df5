import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ConfigError, DEFAULT_SHUTDOWN_GRACE_MS, EnvReader, LOG_LEVELS, SHUTDOWN_GRACE_RANGE, type Env, type LogLevel } from '@m2m/common';
import { DEMO_CLIENTS, readClientsFile, ClientsFileError, type ClientRegistration } from './clients/seeds.js';
import { DEFAULT_CLIENT_AUTH_LIMITS, type ClientAuthLimits } from './client-auth/failure-throttle.js';

/** Default bound on a client assertion's lifetime (s): openid-client signs for 60 s; 5 min leaves room for slow clocks. */
const DEFAULT_CLIENT_ASSERTION_MAX_LIFETIME = 300;

export interface AuthServerConfig {
  /** Listening port; 0 picks a free one (the issuer then follows the bound port). */
  port: number;
  /** Listening address; undefined means every interface. */
  host: string | undefined;
  /** Issuer URL; undefined means http://localhost:<bound port>. */
  issuer: string | undefined;
  /** The predictor's resource indicator, the `aud` of every token. */
  audience: string;
  accessTokenTtlSeconds: number;
  dataDir: string;
  signingKeysFile: string;
  production: boolean;
  /** Registrations that seed `DATA_DIR/client-registrations.json` on first start. */
  clients: ClientRegistration[];
  /** How long a new key is published before it may sign: the verifiers' JWKS cache age (seconds). */
  keyPropagationSeconds: number;
  /** Admin API port; undefined when no ADMIN_TOKEN is set (admin disabled). */
  adminPort: number | undefined;
  /** Admin API address: loopback unless set. */
  adminHost: string;
  adminToken: string | undefined;
  /** PostgreSQL shared by replicas for keys, clients and provider records; undefined: files in dataDir. */
  databaseUrl: string | undefined;
  /** The schema of its tables (one database can host several deployments). */
  databaseSchema: string;
  /** How often a replica looks for changes another replica made (ms): the bound on seeing a rotation. */
  stateSyncMs: number;
  /** How long requests in flight may finish after SIGTERM before their connections are closed (ms). */
  shutdownGraceMs: number;
  /** The longest lifetime (seconds) of a private_key_jwt client assertion that is accepted (exp - iat, or exp - now). */
  clientAssertionMaxLifetimeSeconds: number;
  /** Brute-force protection of client authentication (client-auth/failure-throttle.ts). */
  clientAuthLimits: Pick<ClientAuthLimits, 'clientFreeFailures' | 'clientMaxDelayMs' | 'addressBurst' | 'addressRefillMs'>;
  /** Server-provided DPoP nonces (RFC 9449 section 8); undefined: none. */
  dpopNonces: { secret: Buffer; required: boolean } | undefined;
  logLevel: LogLevel;
}

/** Reads and validates the auth-server's configuration; throws ConfigError naming the variable. */
export function loadAuthServerConfig(env: Env): AuthServerConfig {
  const read = new EnvReader(env);
  const production = read.production;
  const port = read.port('AUTH_PORT', 9000);
  const dataDir = read.string('DATA_DIR', '.data/auth-server');
  return {
    port,
    host: read.string('AUTH_HOST'),
    issuer: env['ISSUER'] ? read.url('ISSUER', '') : port === 0 ? undefined : `http://localhost:${port}`,
    audience: read.url('PREDICTOR_AUDIENCE', 'http://localhost:8080'),
    accessTokenTtlSeconds: read.integer('ACCESS_TOKEN_TTL', 300, { min: 1, max: 86_400 }),
    dataDir,
    signingKeysFile: read.string('SIGNING_KEYS_FILE', join(dataDir, 'signing-keys.json')),
    production,
    clients: readClients(read, production),
    keyPropagationSeconds: read.integer('KEY_PROPAGATION_SECONDS', 600, { min: 0, max: 86_400 }),
    ...readAdmin(read),
    databaseUrl: read.serviceUrl('DATABASE_URL', ['postgres:', 'postgresql:']),
    databaseSchema: read.identifier('DATABASE_SCHEMA', 'public'),
    stateSyncMs: read.integer('STATE_SYNC_MS', 2_000, { min: 100, max: 60_000 }),
    shutdownGraceMs: read.integer('SHUTDOWN_GRACE_MS', DEFAULT_SHUTDOWN_GRACE_MS, SHUTDOWN_GRACE_RANGE),
    clientAssertionMaxLifetimeSeconds: read.integer('CLIENT_ASSERTION_MAX_LIFETIME', DEFAULT_CLIENT_ASSERTION_MAX_LIFETIME, { min: 10, max: 3_600 }),
    clientAuthLimits: readClientAuthLimits(read),
    dpopNonces: readDpopNonces(read),
    logLevel: read.oneOf('LOG_LEVEL', 'info', LOG_LEVELS),
  };
}

function readClients(read: EnvReader, production: boolean): ClientRegistration[] {
  const clients: ClientRegistration[] = [];
  const clientsFile = read.string('CLIENTS_FILE');
  if (clientsFile) {
    try {
      clients.push(...readClientsFile(clientsFile));
    } catch (error) {
      if (error instanceof ClientsFileError) throw new ConfigError(`CLIENTS_FILE: ${error.message}`);
      throw error;
    }
  }
  for (const demo of DEMO_CLIENTS) {
    const secret = read.string(demo.secretVariable);
    if (secret === undefined) continue;
    if (production) {
      throw new ConfigError(`${demo.secretVariable} is a dev credential (dev.env); refusing to start with NODE_ENV=production`);
    }
    clients.push({ clientId: demo.clientId, clientSecret: secret, scopes: [...demo.scopes], plan: demo.plan });
  }
  if (production) {
    const weak = clients.find((client) => client.clientSecret.length < 32 || client.clientSecret.startsWith('dev-'));
    if (weak) throw new ConfigError(`CLIENTS_FILE: client ${weak.clientId} has a dev or short secret (< 32 characters); refusing to start with NODE_ENV=production`);
  }
  if (clients.length === 0) {
    throw new ConfigError('CLIENTS_FILE: no clients configured (set CLIENTS_FILE, or the DEMO_*_SECRET variables of dev.env in development)');
  }
  return clients;
}

function readClientAuthLimits(read: EnvReader): AuthServerConfig['clientAuthLimits'] {
  const perAddressPerMinute = read.integer('CLIENT_AUTH_FAILURES_PER_ADDRESS', DEFAULT_CLIENT_AUTH_LIMITS.addressBurst, { min: 0, max: 10_000 });
  return {
    clientFreeFailures: read.integer('CLIENT_AUTH_FAILURES_PER_CLIENT', DEFAULT_CLIENT_AUTH_LIMITS.clientFreeFailures, { min: 1, max: 1_000 }),
    clientMaxDelayMs: read.integer('CLIENT_AUTH_MAX_DELAY_SECONDS', DEFAULT_CLIENT_AUTH_LIMITS.clientMaxDelayMs / 1000, { min: 1, max: 3_600 }) * 1000,
    // A burst of N failures, earned back at N a minute; 0: no per-address limit.
    addressBurst: perAddressPerMinute,
    addressRefillMs: perAddressPerMinute === 0 ? DEFAULT_CLIENT_AUTH_LIMITS.addressRefillMs : Math.ceil(60_000 / perAddressPerMinute),
  };
}

/**
 * DPOP_NONCE_SECRET (at least 32 characters, the same on every replica) turns server-provided
 * nonces on; oidc-provider derives them from 32 bytes (its SHA-256), every minute, valid for
 * about five. DPOP_NONCE_REQUIRED (default true with a secret): every proof must carry one.
 */
function readDpopNonces(read: EnvReader): AuthServerConfig['dpopNonces'] {
  const secret = read.string('DPOP_NONCE_SECRET');
  const required = read.oneOf('DPOP_NONCE_REQUIRED', secret === undefined ? 'false' : 'true', ['true', 'false']) === 'true';
  if (secret === undefined) {
    if (required) throw new ConfigError('DPOP_NONCE_REQUIRED=true needs DPOP_NONCE_SECRET (at least 32 characters, the same on every replica)');
    return undefined;
  }
  if (secret.length < 32) throw new ConfigError('DPOP_NONCE_SECRET must be at least 32 characters');
  return { secret: createHash('sha256').update(secret).digest(), required };
}

function readAdmin(read: EnvReader): Pick<AuthServerConfig, 'adminPort' | 'adminHost' | 'adminToken'> {
  const adminToken = read.adminToken();
  return {
    adminToken,
    adminPort: adminToken === undefined ? undefined : read.port('ADMIN_PORT', 9001),
    adminHost: read.string('ADMIN_HOST', '127.0.0.1'),
  };
}
