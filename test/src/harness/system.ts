import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseEnv } from 'node:util';
import { rememberSecret, REPOSITORY_ROOT, startTypeScript, type ManagedProcess } from './processes.js';

const DEV_ENV_FILE = join(REPOSITORY_ROOT, 'dev.env');
const DEV_ENV_KEYS = ['DEMO_CALLER_SECRET', 'DEMO_READONLY_SECRET', 'DEMO_FREE_SECRET', 'ADMIN_TOKEN'];

/**
 * dev.env's credentials, as `npm start` and the demo use them; where the file is not
 * around (the demo inside its container) they come from the environment (env_file).
 */
export const DEV_ENV: Record<string, string> = existsSync(DEV_ENV_FILE)
  ? (parseEnv(readFileSync(DEV_ENV_FILE, 'utf8')) as Record<string, string>)
  : Object.fromEntries(DEV_ENV_KEYS.flatMap((key) => (process.env[key] ? [[key, process.env[key]]] : [])));
for (const secret of Object.values(DEV_ENV)) rememberSecret(secret);

export interface RunningAuthServer {
  process: ManagedProcess;
  issuer: string;
  port: number;
  /** The admin API (loopback, ADMIN_TOKEN from dev.env). */
  adminUrl: string;
}

export interface RunningPredictor {
  process: ManagedProcess;
  url: string;
  port: number;
  /** Its metrics listener (GET /metrics), on loopback and a free port: the API port does not serve them. */
  metricsUrl: string;
}

/** The audience tests use: an identifier, deliberately not the predictor's (ephemeral) URL. */
export const TEST_AUDIENCE = 'http://predictor.test';

/** Starts the auth-server on a free port with dev.env's demo clients and waits until it listens. */
export async function startAuthServer(options: { dataDir: string; audience?: string; env?: Record<string, string> }): Promise<RunningAuthServer> {
  const process = startTypeScript('auth-server', 'auth-server/src/main.ts', {
    ...DEV_ENV,
    AUTH_PORT: '0',
    ADMIN_PORT: '0',
    DATA_DIR: options.dataDir,
    PREDICTOR_AUDIENCE: options.audience ?? TEST_AUDIENCE,
    ...options.env,
  });
  const listening = await process.waitForLog((record) => record.msg === 'listening', 'listening');
  return { process, issuer: listening['issuer'] as string, port: listening['port'] as number, adminUrl: `http://127.0.0.1:${listening['adminPort'] as number}` };
}

/** Starts the predictor on a free port and waits until it has loaded the issuer's keys. */
export async function startPredictor(options: { issuer: string; dataDir: string; audience?: string; env?: Record<string, string>; waitForKeys?: boolean }): Promise<RunningPredictor> {
  const process = startTypeScript('predictor', 'predictor/src/main.ts', {
    PREDICTOR_PORT: '0',
    METRICS_PORT: '0',
    PREDICTOR_DATA_DIR: options.dataDir,
    ISSUER: options.issuer,
    PREDICTOR_AUDIENCE: options.audience ?? TEST_AUDIENCE,
    ...options.env,
  });
  const listening = await process.waitForLog((record) => record.msg === 'listening', 'listening');
  if (options.waitForKeys ?? true) await process.waitForLog((record) => record['event'] === 'jwks.loaded', 'jwks.loaded');
  const port = listening['port'] as number;
  return { process, url: `http://localhost:${port}`, port, metricsUrl: `http://127.0.0.1:${listening['metricsPort'] as number}` };
}

export interface RunningUsageLedger {
  process: ManagedProcess;
  /** Its admin API: GET /v1/usage (ADMIN_TOKEN from dev.env) and /healthz. */
  adminUrl: string;
}

/**
 * Starts the usage-ledger process (JetStream in, the ledger out) with its admin API on a free
 * loopback port and dev.env's ADMIN_TOKEN, and waits until it listens; `env` names the broker,
 * the database and the stream (NATS_URL, DATABASE_URL, DATABASE_SCHEMA, USAGE_STREAM…).
 */
export async function startUsageLedger(options: { dataDir: string; env: Record<string, string> }): Promise<RunningUsageLedger> {
  const process = startTypeScript('usage-ledger', 'usage/src/main.ts', {
    ADMIN_TOKEN: DEV_ENV['ADMIN_TOKEN']!,
    USAGE_ADMIN_PORT: '0',
    USAGE_DATA_DIR: options.dataDir,
    ...options.env,
  });
  const listening = await process.waitForLog((record) => record.msg === 'listening', 'listening');
  return { process, adminUrl: `http://127.0.0.1:${listening['port'] as number}` };
}

/** A client-credentials token straight from the token endpoint (the raw protocol, no caller library). */
export async function requestToken(
  issuer: string,
  clientId: string,
  secret: string,
  parameters: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', ...parameters }),
  });
  const body = (await response.json()) as Record<string, unknown>;
  if (typeof body['access_token'] === 'string') rememberSecret(body['access_token']);
  return { status: response.status, body };
}
