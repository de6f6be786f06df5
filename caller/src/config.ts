import { readFileSync, statSync } from 'node:fs';
import { importJWK, type JWK } from 'jose';
import { ConfigError, EnvReader, type Env } from '@m2m/common';
import type { ClientAssertionKey } from './tokens/token-source.js';

export interface CallerConfig {
  issuer: string;
  predictorUrl: string;
  clientId: string;
  /** The current client secret (re-read from CLIENT_SECRET_FILE when the file changes); undefined with a private key. */
  clientSecret: (() => string) | undefined;
  /** The current private_key_jwt key (re-read from CLIENT_PRIVATE_KEY_FILE when it changes). */
  clientKey: (() => Promise<ClientAssertionKey>) | undefined;
  /** Scopes to ask for; undefined lets the auth-server grant the client's registered scopes. */
  scope: string | undefined;
  /** RFC 8707 resource indicator; undefined lets the auth-server use its default (the predictor). */
  resource: string | undefined;
  allowInsecureHttp: boolean;
}

/** Reads the caller's configuration (contract, section 2); throws ConfigError naming the variable. */
export function loadCallerConfig(env: Env): CallerConfig {
  const read = new EnvReader(env);
  const clientId = read.string('CLIENT_ID');
  if (!clientId) throw new ConfigError('CLIENT_ID is required');
  const secret = read.string('CLIENT_SECRET');
  const secretFile = read.string('CLIENT_SECRET_FILE');
  const keyFile = read.string('CLIENT_PRIVATE_KEY_FILE');
  if ([secret, secretFile, keyFile].filter(Boolean).length > 1) throw new ConfigError('CLIENT_SECRET, CLIENT_SECRET_FILE and CLIENT_PRIVATE_KEY_FILE: set only one');
  if (!secret && !secretFile && !keyFile) throw new ConfigError('CLIENT_SECRET, CLIENT_SECRET_FILE or CLIENT_PRIVATE_KEY_FILE is required');
  const resource = read.string('PREDICTOR_AUDIENCE');
  return {
    issuer: read.url('ISSUER', 'http://localhost:9000'),
    predictorUrl: read.url('PREDICTOR_URL', 'http://localhost:8080'),
    clientId,
    clientSecret: secretFile ? fileReader('CLIENT_SECRET_FILE', secretFile, (text) => text.trim()) : secret ? () => secret : undefined,
    clientKey: keyFile ? privateKeyReader(keyFile) : undefined,
    scope: read.string('SCOPE'),
    resource: resource === undefined ? undefined : read.url('PREDICTOR_AUDIENCE', resource),
    allowInsecureHttp: read.oneOf('ALLOW_INSECURE_HTTP', 'false', ['true', 'false']) === 'true',
  };
}

/**
 * Returns a reader that re-reads the file when its modification time or size changes,
 * so a rotated secret or key is used without a restart. Checked once at start-up.
 */
function fileReader<T>(variable: string, path: string, parse: (text: string) => T): () => T {
  let cached: { version: string; value: T } | undefined;
  const read = (): T => {
    let stat;
    try {
      stat = statSync(path);
    } catch (error) {
      throw new ConfigError(`${variable}: cannot read ${path} (${(error as NodeJS.ErrnoException).code})`);
    }
    const version = `${stat.mtimeMs}:${stat.size}`;
    if (cached?.version !== version) {
      const text = readFileSync(path, 'utf8');
      if (text.trim() === '') throw new ConfigError(`${variable}: ${path} is empty`);
      cached = { version, value: parse(text) };
    }
    return cached.value;
  };
  read();
  return read;
}

/** A private JWK (with `kid` and `alg`) for private_key_jwt, imported once per file version. */
function privateKeyReader(path: string): () => Promise<ClientAssertionKey> {
  const readJwk = fileReader('CLIENT_PRIVATE_KEY_FILE', path, (text) => {
    let jwk: JWK;
    try {
      jwk = JSON.parse(text) as JWK;
    } catch {
      throw new ConfigError(`CLIENT_PRIVATE_KEY_FILE: ${path} is not a JSON Web Key`);
    }
    if (!jwk.kid || !jwk.alg || !jwk.d) throw new ConfigError(`CLIENT_PRIVATE_KEY_FILE: ${path} must be a private JWK with "kid" and "alg"`);
    return { jwk, imported: importJWK(jwk, jwk.alg).then((key) => ({ key: key as ClientAssertionKey['key'], kid: jwk.kid! })) };
  });
  return () => readJwk().imported;
}
